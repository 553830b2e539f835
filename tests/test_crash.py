"""Crash safety (issue 7): SIGKILL the real daemon at random moments while a loopback
server keeps adding items, restart it every time, and then prove that nothing was lost and
nothing duplicated — database intact, every item the server ever served stored exactly once,
post files and feeds exactly what the database renders.

    AGGREGATOR_CRASH_KILLS=100 AGGREGATOR_CRASH_SEED=7 pytest tests/test_crash.py -s

How the kills are placed. Waiting a random time alone mostly lands while the daemon sleeps
between polls, so a third of the kills wait instead for the server to answer a poll with
a body (a 200: the daemon's stored ETag no longer matches, so it will parse, store, write
post files, record the poll and publish) and strike a few milliseconds later, and some
strike right after a poll's completion line appears in the log (the publish of another
source may be running). Which window a kill hit is measured from outside, not guessed:
before each restart the database (read-only) is compared with the folder — articles whose
post file is missing, feeds listing fewer items than the database holds — and the server's
answers are compared with the polls the log says completed.

What "served" means: every (source, guid) in any 200 response body, recorded *before* the
body is written, so an item counts even when the daemon died while reading it. Feeds only
grow, so such an item is in every later response, and the final run (no more items added,
every source polled again) must store it.

Not used here: ``near_duplicates`` (off, so counts are exact: every item is distinct by guid,
link, title and text anyway) and retention (forever).
"""

from __future__ import annotations

import collections
import email.utils
import hashlib
import io
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

import feedparser
import frontmatter

from tests.conftest import write_config
from tests.helpers import feed_files

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://feeds.example.org/"
KILLS = int(os.environ.get("AGGREGATOR_CRASH_KILLS", "25"))
SEED = int(os.environ.get("AGGREGATOR_CRASH_SEED", "20261124"))
SOURCES = 30
CATEGORIES = 3
ADD_EVERY = (0.1, 0.3)  # seconds between two new items (one random source each)
TIMED_KILL = (0.3, 3.5)  # seconds after start, for the kills that do not wait for an event
AFTER_ANSWER = (0.0, 0.12)  # seconds after a 200 answer: inside the parse/store/publish window
EVENT_WAIT = 12.0  # a source is due at least every interval + 10 % jitter (10 s)
FINAL_WAIT = 90.0  # the last run: every source polled once more (first polls within ~11 s)

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


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the response was decided
    source: str
    status: int


class GrowingFeeds:
    """``SOURCES`` RSS feeds at ``/feed/<k>.xml`` on a ``FeedServer``; their item lists only
    grow (``add_one``). Each response carries an ETag of its body and honours If-None-Match,
    so the daemon's 304 path is exercised too. ``served`` holds every (source, guid) that a
    200 response carried; ``answers`` every response, for counting polls in flight."""

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

    def add_one(self) -> Item:
        with self.lock:
            n = self.count
            self.count += 1
            source = _sname(self.rng.randrange(SOURCES))
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

    def _answer(self, source: str, handler) -> None:
        with self.lock:
            items = list(self.items[source])
            body = _rss(source, items)
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            status = 304 if handler.headers.get("If-None-Match") == etag else 200
            if status == 200:
                self.served.update((source, i.guid) for i in items)  # before the bytes leave
            self.answers.append(Answer(time.monotonic(), source, status))
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
    # PYTHONFAULTHANDLER: a daemon that hangs is sent SIGABRT, which then dumps every
    # thread's stack into its log (see ``_dump_and_kill``).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"}
    for key in ("AGGREGATOR_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "AGGREGATOR_LOG_FORMAT"):
        env.pop(key, None)
    return env


@dataclass
class Run:
    """One life of the daemon: its process (leader of its own group), its log, when it started."""

    proc: subprocess.Popen
    log: Path
    started: float  # time.monotonic()
    started_wall: float  # time.time()
    mode: str = ""
    polls: int = 0  # poll completion lines in the log
    failed: int = 0
    published: int = 0
    answers: int = 0  # responses the server gave this run

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start(config: Path, folder: Path, number: int) -> Run:
    log = folder / f"daemon-{number:03d}.log"
    started, started_wall = time.monotonic(), time.time()
    with log.open("w") as err, (folder / f"daemon-{number:03d}.out").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(config), "run"],
                                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=_env(),
                                start_new_session=True)  # its own group: the forkserver and workers die with it
    return Run(proc, log, started, started_wall)


def live_members(pgid: int) -> list[str]:
    """Processes of group ``pgid`` that are still alive (zombies waiting for a reaper do not
    count: they hold no file, lock or socket)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, _, rest = text.rpartition(")")
        fields = rest.split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(f"{head.split(' (', 1)[0]} ({head.split(' (', 1)[-1]}) state {fields[0]}")
    return found


def kill_group(run: Run) -> None:
    """SIGKILL to the whole group: the daemon, its forkserver and its parse workers."""
    try:
        os.killpg(run.proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group is gone already
        pass
    run.proc.wait(timeout=30)
    _no_survivors(run)


def _dump_and_kill(run: Run) -> None:
    """A hung daemon: SIGABRT makes the fault handler write every thread's stack to the
    log (the tail then shows where it hangs); then the group is killed."""
    try:
        os.kill(run.proc.pid, signal.SIGABRT)
        run.proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_group(run)


def _no_survivors(run: Run) -> None:
    if not Path("/proc/self/stat").exists():
        return
    deadline = time.monotonic() + 10
    while (left := live_members(run.proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes of the daemon's group outlived it: {left}"


def tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


# --- what the folder says about the database, between two lives ----------------------------


def open_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def feed_item_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"<item>")
    except FileNotFoundError:
        return -1


@dataclass
class Tally:
    kills: int = 0
    modes: collections.Counter = field(default_factory=collections.Counter)
    polls: int = 0  # completed (log lines), all runs
    failed_polls: int = 0
    published: int = 0
    answered_200: int = 0
    in_flight: int = 0  # kills with a poll answered by the server and not completed
    posts_behind: int = 0  # kills after which the database had articles without their post file
    feeds_behind: int = 0  # kills after which all.rss.xml listed fewer items than the database held
    temp_left: int = 0  # kills that left a temporary file behind
    catch_up_files: int = 0  # files the next start wrote from the database
    errors: list[str] = field(default_factory=list)  # ERROR lines of any run

    def line(self) -> str:
        modes = ", ".join(f"{n} {m}" for m, n in sorted(self.modes.items()))
        return (f"{self.kills} kills survived ({modes}); {self.in_flight} with a poll in flight, "
                f"{self.posts_behind} with post files behind the database, {self.feeds_behind} with feeds behind it, "
                f"{self.temp_left} leaving temp files; {self.polls} polls completed ({self.failed_polls} failed), "
                f"{self.published} publishes, {self.answered_200} bodies served; "
                f"catch-up wrote {self.catch_up_files} files at restarts")


def account(run: Run, tally: Tally, feeds: GrowingFeeds) -> None:
    """Count what this life did from its log and the server's answers."""
    text = run.text()
    completions = POLL_LINE.findall(text)
    run.polls = len(completions)
    run.failed = sum(1 for line in text.splitlines() if re.search(r"poll \S+: failed", line))
    run.published = len(re.findall(r"published: \d+ pages rendered", text))
    answers = feeds.answers_since(run.started)
    run.answers = len(answers)
    tally.polls += run.polls
    tally.failed_polls += run.failed
    tally.published += run.published
    tally.answered_200 += sum(1 for a in answers if a.status == 200)
    tally.catch_up_files += sum(int(n) for n in re.findall(r"catch-up: (\d+) files written", text))
    tally.errors += [line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL")) or "Traceback" in line]


def inspect_after_kill(run: Run, tally: Tally, data: Path, out: Path, temps_before: set[Path]) -> set[Path]:
    """Which crash window the kill hit, read from the database (read-only) and the folder."""
    if run.answers > run.polls:
        tally.in_flight += 1
    db = data / "aggregator.db"
    if db.exists():
        with open_ro(db) as conn:
            try:
                names = [r[0] for r in conn.execute("SELECT post_name FROM articles")]
            except sqlite3.OperationalError:  # killed before the schema was committed
                names = []
        posts = out / "posts"
        if any(not (posts / n).exists() for n in names):
            tally.posts_behind += 1
        if names and feed_item_count(out / "all.rss.xml") < len(names):
            tally.feeds_behind += 1
    temps = set(out.rglob(".*.tmp")) if out.is_dir() else set()
    if temps - temps_before:
        tally.temp_left += 1
    return temps


# --- the test ------------------------------------------------------------------------------


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, server):
    rng = random.Random(SEED)
    feeds = GrowingFeeds(server, random.Random(rng.getrandbits(64)))
    sources = [{"name": _sname(k), "url": server.url(f"/feed/{k}.xml"), "category": f"topic{k % CATEGORIES}",
                "interval": "10s"} for k in range(SOURCES)]
    config = write_config(tmp_path / "config.toml", sources, base_url=BASE, items_per_feed=1000,
                          near_duplicates=False)
    data, out = tmp_path / "data", tmp_path / "out"
    logs = tmp_path / "logs"
    logs.mkdir()
    for _ in range(SOURCES):  # every feed starts with an item or so
        feeds.add_one()

    stop_adding = threading.Event()
    adder_rng = random.Random(rng.getrandbits(64))

    def keep_adding() -> None:
        while not stop_adding.wait(adder_rng.uniform(*ADD_EVERY)):
            feeds.add_one()

    adder = threading.Thread(target=keep_adding, name="crash-adder", daemon=True)
    tally = Tally()
    began = time.monotonic()
    run: Run | None = None

    def context() -> str:
        last = f"\n--- tail of {run.log.name} ---\n{tail(run.log)}" if run is not None else ""
        return f"seed {SEED}: {tally.line()}; {len(feeds.served)} items served{last}"

    adder.start()
    temps: set[Path] = set()
    try:
        for number in range(KILLS):
            run = start(config, logs, number)
            mode = rng.choices(["timed", "after-answer", "after-poll"], weights=[4, 4, 2])[0]
            if mode == "timed":
                _sleep_alive(run, rng.uniform(*TIMED_KILL), context)
            elif mode == "after-answer":
                if feeds.wait_answer(run.started, 200, EVENT_WAIT):
                    time.sleep(rng.uniform(*AFTER_ANSWER))
                else:
                    mode = "after-answer (none came)"
            else:
                if not _wait_log(run, POLL_LINE, EVENT_WAIT, context):
                    mode = "after-poll (none came)"
            assert run.proc.poll() is None, f"the daemon exited by itself (code {run.proc.returncode}): {context()}"
            kill_group(run)
            run.mode = mode
            tally.kills += 1
            tally.modes[mode.split(" ")[0]] += 1
            account(run, tally, feeds)
            temps = inspect_after_kill(run, tally, data, out, temps)
    finally:
        stop_adding.set()
        adder.join(timeout=10)
        if run is not None and run.proc.poll() is None:
            kill_group(run)
    loop_seconds = time.monotonic() - began

    # The last life: no more items; every source is polled once more, then a clean stop.
    final_start = time.time()
    run = start(config, logs, KILLS)
    final_run = run
    due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(final_start)))
    deadline = time.monotonic() + FINAL_WAIT
    while True:
        assert run.proc.poll() is None, f"the final daemon exited by itself (code {run.proc.returncode}): {context()}"
        lagging = _not_polled_since(data / "aggregator.db", due)
        if not lagging:
            break
        assert time.monotonic() < deadline, f"sources not polled within {FINAL_WAIT} s of the last start: {lagging}; {context()}"
        time.sleep(0.2)
    run.proc.send_signal(signal.SIGTERM)
    try:
        code = run.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        _dump_and_kill(run)
        raise AssertionError(f"SIGTERM did not stop the daemon within 60 s: {context()}") from None
    _no_survivors(run)
    account(run, tally, feeds)
    assert code == 0, f"exit code {code} after SIGTERM: {context()}"

    summary = f"{context()}"
    stored = _check_database(data / "aggregator.db", feeds, summary)
    _check_posts(out, stored, feeds, summary)
    _check_feeds(out, stored, feeds, summary)

    leftovers = [str(p.relative_to(out)) for p in out.rglob(".*.tmp") if p.stat().st_mtime >= final_start]
    assert not leftovers, f"temporary files written by the last (cleanly stopped) life remain: {leftovers}; {summary}"

    rebuilt = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "publish", "--rebuild"],
                             capture_output=True, text=True, env=_env(), timeout=300, stdin=subprocess.DEVNULL,
                             check=False)
    assert rebuilt.returncode == 0 and rebuilt.stdout.startswith("0 files written"), (
        f"publish --rebuild changed files: the folder was not what the database renders: "
        f"{rebuilt.returncode} {rebuilt.stdout!r} {rebuilt.stderr[-2000:]!r}; {summary}")
    assert not tally.errors, f"errors logged: {tally.errors[:10]}; {summary}"
    assert tally.kills < 5 or tally.in_flight or tally.posts_behind or tally.feeds_behind, (
        f"no kill hit a poll or a publish: the test did not test crash safety; {summary}")

    print(f"\ncrash test: {tally.line()}; {len(feeds.served)} items served, {len(stored)} stored; "
          f"kill loop {loop_seconds:.1f} s, last life {time.time() - final_start:.1f} s; "
          f"final log {final_run.log.name}")


def _sleep_alive(run: Run, seconds: float, context) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        assert run.proc.poll() is None, f"the daemon exited by itself (code {run.proc.returncode}): {context()}"
        time.sleep(min(left, 0.02))


def _wait_log(run: Run, pattern: re.Pattern, timeout: float, context) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.proc.poll() is None, f"the daemon exited by itself (code {run.proc.returncode}): {context()}"
        if pattern.search(run.text()):
            return True
        time.sleep(0.01)
    return False


def _not_polled_since(db: Path, due: str) -> list[str]:
    """Sources whose last successful poll is older than ``due`` (ISO, the database's form)."""
    if not db.exists():
        return ["(no database yet)"]
    try:
        with open_ro(db) as conn:
            done = {r[0] for r in conn.execute("SELECT name FROM sources WHERE last_success >= ?", [due])}
    except sqlite3.OperationalError as e:
        return [f"(database not readable yet: {e})"]
    return [_sname(k) for k in range(SOURCES) if _sname(k) not in done]


@dataclass(frozen=True)
class Stored:
    id: int
    uid: str
    source: str
    guid: str
    link: str
    title: str
    post_name: str

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
            "SELECT id, uid, source, guid, link, title, post_name FROM articles ORDER BY id")]
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
    assert len(feeds.by_key) >= len(served)  # served items are items the server made

    by_id = {a.id: a for a in stored}
    assert collections.Counter(article_id for article_id, _, _ in links) == {i: 1 for i in by_id}, (
        f"article_sources is not one row per article; {summary}")
    assert {(by_id[i].source, by_id[i].guid) for i, _, _ in links} == served, summary
    assert {(s, g) for _, s, g in links} == served, summary

    wrong = [a for a in stored if (a.title, a.link) != (feeds.by_key[(a.source, a.guid)].title,
                                                        feeds.by_key[(a.source, a.guid)].link)]
    assert not wrong, f"articles stored with another title or link than served: {wrong[:3]}; {summary}"
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
        parsed = feedparser.parse(io.BytesIO(path.read_bytes()), sanitize_html=False, resolve_relative_uris=False)
        rel = path.relative_to(out).as_posix()
        assert not parsed.bozo, f"{rel}: {parsed.get('bozo_exception')}; {summary}"
        ids = [e.id for e in parsed.entries]
        assert len(ids) == len(set(ids)), f"{rel}: an entry listed twice; {summary}"
        unknown = [i for i in ids if i not in by_feed_id]
        assert not unknown, f"{rel}: entries that are not articles: {unknown[:3]}; {summary}"
        for e in parsed.entries:
            assert e.title == by_feed_id[e.id].title, f"{rel}: {e.id} titled {e.title!r}; {summary}"
        if rel in ("all.rss.xml", "all.atom.xml"):
            assert set(ids) == set(by_feed_id), (
                f"{rel}: {len(set(by_feed_id) - set(ids))} articles missing, {len(ids)} listed; {summary}")
        elif rel.startswith("source/"):
            owners = {by_feed_id[i].source for i in ids}
            assert len(owners) == 1, f"{rel}: articles of {sorted(owners)}; {summary}"
            (owner,) = owners
            assert set(ids) == expected[owner], (
                f"{rel}: {len(expected[owner] - set(ids))} of {owner}'s articles missing; {summary}")
            seen_sources[owner] += 1
    # one RSS and one Atom document per source, each source with at least one served item
    assert seen_sources == {s: 2 for s in expected}, f"source feeds found: {dict(seen_sources)}; {summary}"
    assert set(expected) == {s for s, _ in feeds.served}, summary
