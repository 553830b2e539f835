"""Crash safety (issue 7): SIGKILL the real daemon at random moments while a loopback
server keeps adding and editing items, restart it every time, and then prove that nothing
was lost and nothing duplicated: the database intact, every item the server ever served
stored exactly once (with its latest text), and post files and feeds exactly what the
database renders.

    AGGREGATOR_CRASH_KILLS=100 AGGREGATOR_CRASH_SEED=7 pytest tests/test_crash.py -s

How the kills are placed. A random wait alone mostly lands while the daemon sleeps
between polls, so 40 % of the kills wait for the server to answer a poll with a body (a
200: the daemon's stored ETag no longer matches, so it will parse, store, write post
files, record the poll and publish) and strike 0-120 ms later; 20 % strike as soon as a
poll's completion line is in the log (other polls and publishes may be running); 40 % at a
random 0.3-3.5 s after start (start-up and its catch-up included). The whole process group
is killed (the forkserver and parse workers too) and no process of it may survive. Which
window a kill hit is measured from outside, not guessed: after each kill the database
(read-only) is compared with the folder (articles without their post file, ``all`` listing
fewer items than the database holds, temporary files left), and the server's answers with
the polls the log says completed.

What "served" means: every (source, guid) in any 200 response body, recorded *before* the
body is written, so an item counts even when the daemon died while reading it. Feeds only
grow and an item keeps its guid when edited, so such an item is in every later response,
and the last life must have stored it, in its last version. That life runs without
background changes until every source was polled again; then one more item appears and
SIGTERM arrives the moment the server has answered its poll: the poll in flight must
finish (store, post file, publish) and the daemon exit 0.

Edits exercise the update path: the article is changed in the database first, its post
file after, so a kill in between must not leave the old text on disk for good. ``publish
--rebuild`` (every feed page) and ``rebuild`` (every post too) at the end must find nothing
to write. A daemon that does not stop on SIGTERM is sent SIGABRT first: with
``PYTHONFAULTHANDLER`` set it writes every thread's stack to its log, whose tail is in the
failure message.

Not used here: ``near_duplicates`` (off, so counts are exact: every item is distinct by
guid, link, title and text anyway) and retention (forever).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import email.utils
import hashlib
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from xml.sax.saxutils import escape

import frontmatter

from tests.conftest import write_config
from tests.helpers import feed_files, mtimes, parse_output_feed

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://feeds.example.org/"
KILLS = int(os.environ.get("AGGREGATOR_CRASH_KILLS", "25"))
SEED = int(os.environ.get("AGGREGATOR_CRASH_SEED", "20261124"))
SOURCES = 30
CATEGORIES = 3
ADD_EVERY = (0.1, 0.3)  # seconds between two changes: a new item (one random source each) or an edit
EDIT_SHARE = 0.15  # of the changes, edits of an existing item's text
MAX_EDITS = 3  # per item (max_edits_per_day is 5: every edit must be applied)
TIMED_KILL = (0.3, 3.5)  # seconds after start, for the kills that do not wait for an event
AFTER_ANSWER = (0.0, 0.12)  # seconds after a 200 answer: inside the parse/store/publish window
EVENT_WAIT = 12.0  # a source is due at least every interval + 10 % jitter (10 s)
FINAL_WAIT = 90.0  # the last life: every source polled once more (first polls within ~11 s)
STOP_WAIT = 60.0  # SIGTERM to exit: polls in flight finish (each well under a second here)

WORDS = (
    "harbour", "lantern", "meadow", "quarry", "saffron", "tundra", "velvet", "walnut", "zephyr", "amber", "basalt",
    "cobalt", "delta", "ember", "fjord", "glacier", "heron", "indigo", "juniper", "kestrel", "lagoon", "mosaic",
    "nectar", "orchid", "pewter", "quartz", "raven", "sequoia", "tamarind", "umber", "vortex", "willow", "yarrow",
    "zenith", "acorn", "bramble", "cinder", "drizzle", "estuary", "falcon", "garnet", "hollow", "isthmus",
)

POLL_LINE = re.compile(r"poll (\S+): (?:(\d+) new|not modified|failed)")


def _sname(k: int) -> str:
    return f"s{k:02d}"


@dataclass(frozen=True)
class Item:
    source: str
    guid: str
    link: str
    title: str
    text: str
    date: str  # RFC 822
    revision: int = 0  # how often upstream edited the text (the guid, link and title stay)


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the response was decided
    status: int


class GrowingFeeds:
    """``SOURCES`` RSS feeds at ``/feed/<k>.xml`` on a ``FeedServer``; their item lists only
    grow (``add_one``), and an item's text may be edited in place (``edit_one``). Each
    response carries an ETag of its body and honours If-None-Match, so the daemon's 304 path
    is exercised too. ``by_key`` holds the latest version of every item, ``served`` every
    (source, guid) a 200 response carried, ``answers`` every response (polls in flight)."""

    def __init__(self, server, rng: random.Random):
        self.rng = rng
        self.items: dict[str, list[Item]] = {_sname(k): [] for k in range(SOURCES)}
        self.by_key: dict[tuple[str, str], Item] = {}
        self.served: set[tuple[str, str]] = set()
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.answered = threading.Condition(self.lock)
        self.count = 0
        for k in range(SOURCES):
            server.add_handler(f"/feed/{k}.xml", partial(self._answer, _sname(k)))

    def add_one(self, source: str | None = None) -> Item:
        """A new item at the top of ``source`` (a random one when None)."""
        with self.lock:
            n = self.count
            self.count += 1
            source = source or _sname(self.rng.randrange(SOURCES))
            words = self.rng.sample(WORDS, 10)
            item = Item(
                source=source,
                guid=f"urn:uuid:{uuid.UUID(int=self.rng.getrandbits(128), version=4)}",
                link=f"https://news.example.net/{source}/story-{n}",
                title=f"{source} dispatch {n}: {' '.join(words[:3])}",
                text=f"Report number {n} filed by {source}. {' '.join(words[3:])}.",
                date=email.utils.formatdate(time.time(), usegmt=True),
            )
            self.items[source].append(item)
            self.by_key[(source, item.guid)] = item
            return item

    def edit_one(self) -> Item | None:
        """Upstream edits an item's text (same guid): the daemon must update the article and
        its post file. At most ``MAX_EDITS`` per item, below the daemon's per-day edit cap."""
        with self.lock:
            editable = sorted(k for k, i in self.by_key.items() if i.revision < MAX_EDITS)
            if not editable:
                return None
            old = self.by_key[self.rng.choice(editable)]
            words = self.rng.sample(WORDS, 6)
            item = dataclasses.replace(
                old, revision=old.revision + 1,
                text=f"{old.text.split(' Revised', 1)[0]} Revised {old.revision + 1}: {' '.join(words)}.")
            listed = self.items[old.source]
            listed[listed.index(old)] = item
            self.by_key[(old.source, old.guid)] = item
            return item

    def edits(self) -> int:
        with self.lock:
            return sum(i.revision for i in self.by_key.values())

    def _answer(self, source: str, handler) -> None:
        with self.lock:
            items = list(self.items[source])
            body = _rss(source, items)
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            status = 304 if handler.headers.get("If-None-Match") == etag else 200
            if status == 200:
                self.served.update((source, i.guid) for i in items)  # before the bytes leave
            self.answers.append(Answer(time.monotonic(), status))
            self.answered.notify_all()
        if status == 304:
            handler.send_body(b"", status=304, content_type=None, headers={"ETag": etag})
        else:
            handler.send_body(body, headers={"ETag": etag})

    def answers_since(self, start: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.at >= start]

    def wait_answer(self, start: float, status: int, timeout: float) -> bool:
        """Until a response of ``status`` was given at or after ``start``."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while not any(a.at >= start and a.status == status for a in self.answers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.answered.wait(min(left, 0.05))
        return True


def _rss(source: str, items: list[Item]) -> bytes:
    entries = "".join(
        f"<item><title>{escape(i.title)}</title><link>{escape(i.link)}</link>"
        f'<guid isPermaLink="false">{escape(i.guid)}</guid><pubDate>{i.date}</pubDate>'
        f"<description>{escape(f'<p>{i.text}</p>')}</description></item>\n"
        for i in reversed(items)  # newest first, as feeds are
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0"><channel>'
        f"<title>{source}</title><link>https://news.example.net/{source}/</link>"
        f"<description>Growing feed {source}</description>\n{entries}</channel></rss>\n"
    ).encode()


# --- the daemon as a process group ------------------------------------------------------


def _env() -> dict[str, str]:
    # PYTHONFAULTHANDLER: a daemon that hangs is sent SIGABRT, which then writes every
    # thread's stack into its log (see ``dump_and_kill``).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    for key in ("AGGREGATOR_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "AGGREGATOR_LOG_FORMAT"):
        env.pop(key, None)
    return env


@dataclass
class Life:
    """One life of the daemon: its process (leader of its own group), its log, its start."""

    proc: subprocess.Popen
    log: Path
    started: float  # time.monotonic()
    polls: int = 0  # poll completion lines in its log
    answers: int = 0  # responses the server gave during it

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_life(config: Path, folder: Path, number: int) -> Life:
    log = folder / f"daemon-{number:03d}.log"
    started = time.monotonic()
    with log.open("w") as err, (folder / f"daemon-{number:03d}.out").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(config), "run"],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_env(),
                                start_new_session=True)  # its own group: the forkserver and workers die with it
    return Life(proc, log, started)


def live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` still alive (zombies waiting for a reaper do not count:
    they hold no file, lock or socket)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")  # "pid (comm" — comm may hold spaces and parentheses
        fields = rest.split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(f"{head}) state {fields[0]}")
    return found


def kill_group(life: Life) -> None:
    """SIGKILL to the whole group: the daemon, its forkserver and its parse workers."""
    try:
        os.killpg(life.proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group is gone already
        pass
    life.proc.wait(timeout=30)
    no_survivors(life)


def dump_and_kill(life: Life) -> None:
    """A hung daemon: SIGABRT makes the fault handler write every thread's stack to the log
    (its tail then shows where it hangs); then the group is killed."""
    try:
        os.kill(life.proc.pid, signal.SIGABRT)
        life.proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_group(life)


def no_survivors(life: Life) -> None:
    if not Path("/proc/self/stat").exists():  # no procfs: the group cannot be listed
        return
    deadline = time.monotonic() + 10
    while (left := live_members(life.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of the daemon's group outlived it: {left}"


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


def open_ro(db: Path) -> contextlib.closing[sqlite3.Connection]:
    """Read-only, so that looking never repairs anything the next start must repair."""
    return contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30))


# --- the scenario --------------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    modes: collections.Counter = field(default_factory=collections.Counter)
    polls: int = 0  # completed (log lines), all lives
    failed_polls: int = 0
    publishes: int = 0
    bodies: int = 0  # 200 answers
    in_flight: int = 0  # kills with a poll answered by the server and not completed
    posts_behind: int = 0  # kills after which the database had articles without their post file
    feeds_behind: int = 0  # kills after which all.rss.xml listed fewer items than the database held
    temp_left: int = 0  # kills that left a new temporary file behind
    catch_up_files: int = 0  # files the starts wrote from the database
    errors: list[str] = field(default_factory=list)  # ERROR lines and tracebacks of any life

    def line(self) -> str:
        modes = ", ".join(f"{n} {m}" for m, n in sorted(self.modes.items()))
        return (f"{self.kills} kills survived ({modes}); {self.in_flight} with a poll in flight, "
                f"{self.posts_behind} with post files behind the database, {self.feeds_behind} with feeds behind it, "
                f"{self.temp_left} leaving temp files; {self.polls} polls completed ({self.failed_polls} failed), "
                f"{self.publishes} publishes, {self.bodies} bodies served; "
                f"catch-up wrote {self.catch_up_files} files at starts; {len(self.errors)} errors logged")


class Scenario:
    """The daemon's lives against ``GrowingFeeds``: ``kill_loop`` (changes keep coming, every
    life ends with SIGKILL), then ``last_life`` (no more changes, a clean stop)."""

    def __init__(self, tmp_path: Path, server, rng: random.Random):
        self.rng = rng
        self.feeds = GrowingFeeds(server, random.Random(rng.getrandbits(64)))
        sources = [{"name": _sname(k), "url": server.url(f"/feed/{k}.xml"), "category": f"topic{k % CATEGORIES}",
                    "interval": "10s"} for k in range(SOURCES)]
        self.config = write_config(tmp_path / "config.toml", sources, base_url=BASE, items_per_feed=1000,
                                   near_duplicates=False)
        self.db, self.out = tmp_path / "data" / "aggregator.db", tmp_path / "out"
        self.logs = tmp_path / "logs"
        self.logs.mkdir()
        self.tally = Tally()
        self.life: Life | None = None
        self._temps: set[Path] = set()
        self._stop_changes = threading.Event()
        self._changer = threading.Thread(target=self._keep_changing, args=(random.Random(rng.getrandbits(64)),),
                                         name="crash-changes", daemon=True)
        for _ in range(SOURCES):  # most feeds start with an item
            self.feeds.add_one()

    def context(self) -> str:
        """For failure messages: the figures so far and the tail of the last life's log."""
        errors = f"\nerrors: {self.tally.errors[:5]}" if self.tally.errors else ""
        last = f"\n--- tail of {self.life.log.name} ---\n{tail(self.life.log)}" if self.life is not None else ""
        return (f"seed {SEED}: {self.tally.line()}; {len(self.feeds.served)} items served, "
                f"{self.feeds.edits()} edits{errors}{last}")

    def _keep_changing(self, rng: random.Random) -> None:
        while not self._stop_changes.wait(rng.uniform(*ADD_EVERY)):
            if rng.random() >= EDIT_SHARE or self.feeds.edit_one() is None:
                self.feeds.add_one()

    # -- lives ----------------------------------------------------------------------------

    def kill_loop(self, kills: int) -> None:
        self._changer.start()
        try:
            for number in range(kills):
                self.life = life = start_life(self.config, self.logs, number)
                mode = self.rng.choices(["timed", "after-answer", "after-poll"], weights=[4, 4, 2])[0]
                if mode == "timed":
                    self._sleep_alive(self.rng.uniform(*TIMED_KILL))
                elif mode == "after-answer":
                    if self.feeds.wait_answer(life.started, 200, EVENT_WAIT):
                        time.sleep(self.rng.uniform(*AFTER_ANSWER))
                    else:
                        mode = "timed"  # no body was served within the wait
                elif not self._wait_log(POLL_LINE, EVENT_WAIT):
                    mode = "timed"
                self._assert_alive()
                kill_group(life)
                self.tally.kills += 1
                self.tally.modes[mode] += 1
                self._account(life)
                self._inspect_after_kill(life)
        finally:
            self._stop_changes.set()
            self._changer.join(timeout=10)
            if self.life is not None and self.life.alive():
                kill_group(self.life)

    def last_life(self) -> float:
        """No more background changes: start once more and wait until every source was
        polled after the start (so after the last change). Then one last item for the
        source due soonest, and SIGTERM the moment the server has answered that poll: the
        poll in flight must finish (store, post file, publish) and the daemon exit 0.
        Returns the start time."""
        started = time.time()
        self.life = life = start_life(self.config, self.logs, self.tally.kills)
        due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(started)))  # seconds, as stored
        deadline = time.monotonic() + FINAL_WAIT
        while lagging := self._not_polled_since(due):
            self._assert_alive()
            assert time.monotonic() < deadline, (
                f"sources not polled within {FINAL_WAIT} s of the last start: {lagging}; {self.context()}")
            time.sleep(0.2)
        with open_ro(self.db) as conn:
            (soonest,) = conn.execute("SELECT name FROM sources ORDER BY next_poll, name LIMIT 1").fetchone()
        mark = time.monotonic()
        self.feeds.add_one(soonest)
        assert self.feeds.wait_answer(mark, 200, EVENT_WAIT), f"{soonest} not polled again; {self.context()}"
        life.proc.send_signal(signal.SIGTERM)
        try:
            code = life.proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            dump_and_kill(life)
            raise AssertionError(f"SIGTERM did not stop the daemon within {STOP_WAIT} s: {self.context()}") from None
        no_survivors(life)
        self._account(life)
        assert code == 0, f"exit code {code} after SIGTERM: {self.context()}"
        return started

    # -- watching -------------------------------------------------------------------------

    def _assert_alive(self) -> None:
        assert self.life is not None
        assert self.life.alive(), f"the daemon exited by itself (code {self.life.proc.returncode}): {self.context()}"

    def _sleep_alive(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._assert_alive()
            time.sleep(min(left, 0.02))

    def _wait_log(self, pattern: re.Pattern, timeout: float) -> bool:
        assert self.life is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._assert_alive()
            if pattern.search(self.life.text()):
                return True
            time.sleep(0.01)
        return False

    def _not_polled_since(self, due: str) -> list[str]:
        """Sources whose last successful poll is older than ``due`` (ISO, the database's form)."""
        if not self.db.exists():
            return ["(no database yet)"]
        try:
            with open_ro(self.db) as conn:
                done = {r[0] for r in conn.execute("SELECT name FROM sources WHERE last_success >= ?", [due])}
        except sqlite3.OperationalError as e:
            return [f"(database not readable yet: {e})"]
        return [_sname(k) for k in range(SOURCES) if _sname(k) not in done]

    def _account(self, life: Life) -> None:
        """Count what a life did, from its log and the server's answers."""
        text = life.text()
        answers = self.feeds.answers_since(life.started)
        life.polls = len(POLL_LINE.findall(text))
        life.answers = len(answers)
        t = self.tally
        t.polls += life.polls
        t.failed_polls += len(re.findall(r"poll \S+: failed", text))
        t.publishes += len(re.findall(r"published: \d+ pages rendered", text))
        t.bodies += sum(1 for a in answers if a.status == 200)
        t.catch_up_files += sum(int(n) for n in re.findall(r"catch-up: (\d+) files written", text))
        t.errors += [line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line]

    def _inspect_after_kill(self, life: Life) -> None:
        """Which crash window the kill hit, read from the database (read-only) and the folder."""
        if life.answers > life.polls:
            self.tally.in_flight += 1
        names: list[str] = []
        if self.db.exists():
            with open_ro(self.db) as conn:
                try:
                    names = [r[0] for r in conn.execute("SELECT post_name FROM articles")]
                except sqlite3.OperationalError:  # killed before the schema was committed
                    pass
        if any(not (self.out / "posts" / n).exists() for n in names):
            self.tally.posts_behind += 1
        try:
            listed = (self.out / "all.rss.xml").read_bytes().count(b"<item>")
        except FileNotFoundError:
            listed = 0
        if listed < len(names):
            self.tally.feeds_behind += 1
        temps = set(self.out.rglob(".*.tmp")) if self.out.is_dir() else set()
        if temps - self._temps:
            self.tally.temp_left += 1
        self._temps = temps


# --- the test ------------------------------------------------------------------------------


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, server):
    began = time.monotonic()
    scenario = Scenario(tmp_path, server, random.Random(SEED))
    scenario.kill_loop(KILLS)
    loop_seconds = time.monotonic() - began
    last_start = scenario.last_life()
    feeds, out, tally = scenario.feeds, scenario.out, scenario.tally

    summary = scenario.context()
    stored = _check_database(scenario.db, feeds, summary)
    _check_posts(out, stored, feeds, summary)
    _check_feeds(out, stored, feeds, summary)
    leftovers = [str(p.relative_to(out)) for p in out.rglob(".*.tmp") if p.stat().st_mtime >= last_start]
    assert not leftovers, f"temporary files written by the last (cleanly stopped) life remain: {leftovers}; {summary}"

    # The folder is exactly what the database renders: every feed page (publish --rebuild),
    # then every post too (rebuild) — a post left behind by an edit shows only there.
    for command in (["publish", "--rebuild"], ["rebuild"]):
        before = mtimes(out)
        done = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(scenario.config), *command],
                              capture_output=True, text=True, env=_env(), timeout=300, stdin=subprocess.DEVNULL,
                              check=False)
        changed = sorted(k for k, v in mtimes(out).items() if before.get(k) != v)
        assert done.returncode == 0 and done.stdout.startswith("0 files written"), (
            f"'{' '.join(command)}' changed files, so the folder was not what the database renders: {changed[:10]}; "
            f"{done.returncode} {done.stdout!r} {done.stderr[-2000:]!r}; {summary}")

    assert not tally.errors, f"errors logged: {tally.errors[:10]}; {summary}"
    assert tally.kills < 5 or tally.in_flight or tally.posts_behind or tally.feeds_behind, (
        f"no kill hit a poll or a publish: the test did not test crash safety; {summary}")
    print(f"\ncrash test, seed {SEED}: {tally.line()}; {len(feeds.served)} items served ({feeds.edits()} edits), "
          f"{len(stored)} stored; kill loop {loop_seconds:.1f} s, last life {time.time() - last_start:.1f} s")


@dataclass(frozen=True)
class Stored:
    id: int
    uid: str
    source: str
    guid: str
    link: str
    title: str
    post_name: str
    body_html: str

    @property
    def feed_id(self) -> str:
        """The id our feeds publish for an article: RFC 4122 name-based UUID of its uid
        (``StoredArticle.feed_id``; restated here so the test does not lean on it)."""
        return uuid.uuid5(uuid.NAMESPACE_URL, "aggregator:article:" + self.uid).urn


def _check_database(db: Path, feeds: GrowingFeeds, summary: str) -> list[Stored]:
    with open_ro(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], summary
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == [], summary
        stored = [Stored(*r) for r in conn.execute(
            "SELECT id, uid, source, guid, link, title, post_name, body_html FROM articles ORDER BY id")]
        links = conn.execute("SELECT article_id, source, guid FROM article_sources ORDER BY article_id").fetchall()
    served = feeds.served
    counted = collections.Counter((a.source, a.guid) for a in stored)
    duplicated = sorted(k for k, n in counted.items() if n > 1)
    missing = sorted(served - counted.keys())
    extra = sorted(counted.keys() - served)
    assert not duplicated and not missing and not extra, (
        f"articles vs served items: {len(duplicated)} duplicated {duplicated[:5]}, {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} never served {extra[:5]}; {summary}")
    assert len(stored) == len(served), summary

    by_id = {a.id: a for a in stored}
    assert collections.Counter(article_id for article_id, _, _ in links) == {i: 1 for i in by_id}, (
        f"article_sources is not one row per article; {summary}")
    assert {(by_id[i].source, by_id[i].guid) for i, _, _ in links} == served, summary
    assert {(s, g) for _, s, g in links} == served, summary

    wrong = [a for a in stored if (a.title, a.link) != (feeds.by_key[(a.source, a.guid)].title,
                                                        feeds.by_key[(a.source, a.guid)].link)]
    assert not wrong, f"articles stored with another title or link than served: {wrong[:3]}; {summary}"
    # the last version served (the final life fetched every feed after the last edit)
    stale = [(a.source, a.guid, feeds.by_key[(a.source, a.guid)].revision) for a in stored
             if feeds.by_key[(a.source, a.guid)].text not in a.body_html]
    assert not stale, f"articles without their latest upstream edit (source, guid, revision): {stale[:5]}; {summary}"
    return stored


def _check_posts(out: Path, stored: list[Stored], feeds: GrowingFeeds, summary: str) -> None:
    posts = out / "posts"
    on_disk = {p.name for p in posts.iterdir() if not p.name.startswith(".")}
    expected = {a.post_name for a in stored}
    assert len(expected) == len(stored), f"two articles share a post file name; {summary}"
    assert on_disk == expected, (
        f"post files vs database: missing {sorted(expected - on_disk)[:5]}, extra {sorted(on_disk - expected)[:5]}; "
        f"{summary}")
    for a in stored:
        post = frontmatter.loads((posts / a.post_name).read_text(encoding="utf-8"))
        assert (post["title"], post.get("link")) == (a.title, a.link), f"{a.post_name}: {post.metadata}; {summary}"
        assert feeds.by_key[(a.source, a.guid)].text in post.content, f"{a.post_name}: body; {summary}"


def _check_feeds(out: Path, stored: list[Stored], feeds: GrowingFeeds, summary: str) -> None:
    """Every feed in index.opml parses cleanly; each source's feed (RSS and Atom) lists
    exactly that source's articles; ``all`` lists every article."""
    by_feed_id = {a.feed_id: a for a in stored}
    expected: dict[str, set[str]] = collections.defaultdict(set)
    for a in stored:
        expected[a.source].add(a.feed_id)
    seen_sources: collections.Counter = collections.Counter()
    files = feed_files(out, BASE)
    assert any(p.relative_to(out).as_posix() == "all.rss.xml" for p in files), f"no all feed in index.opml; {summary}"
    for path in files:
        parsed = parse_output_feed(path)
        rel = path.relative_to(out).as_posix()
        assert not parsed.bozo, f"{rel}: {parsed.get('bozo_exception')}; {summary}"
        ids = [e.id for e in parsed.entries]
        assert len(ids) == len(set(ids)), f"{rel}: an entry listed twice; {summary}"
        unknown = [i for i in ids if i not in by_feed_id]
        assert not unknown, f"{rel}: entries that are not articles: {unknown[:3]}; {summary}"
        for e in parsed.entries:
            article = by_feed_id[e.id]
            assert e.title == article.title, f"{rel}: {e.id} titled {e.title!r}; {summary}"
            latest = feeds.by_key[(article.source, article.guid)].text
            assert any(latest in c.value for c in e.get("content", ())), (
                f"{rel}: {e.title!r} lacks its latest text {latest!r}; {summary}")
        if rel in ("all.rss.xml", "all.atom.xml"):
            assert set(ids) == set(by_feed_id), (
                f"{rel}: {len(set(by_feed_id) - set(ids))} articles missing, {len(ids)} listed; {summary}")
        elif rel.startswith("source/"):
            owner = path.name.split(".", 1)[0]  # our source names ("s07") are their own slugs
            assert set(ids) == expected[owner], (
                f"{rel}: {len(expected[owner] - set(ids))} of {owner}'s articles missing, "
                f"{len(set(ids) - expected[owner])} of other sources; {summary}")
            seen_sources[owner] += 1
    # one RSS and one Atom document per source (an empty one for a source without items)
    assert seen_sources == {_sname(k): 2 for k in range(SOURCES)}, f"source feeds found: {dict(seen_sources)}; {summary}"
