"""Benchmark one poll cycle of aggregator and of the `reader` library, as whole processes.

    /tmp/venv/bin/python benchmarks/cycle.py                  # 250 sources, ours + reader
    /tmp/venv/bin/python benchmarks/cycle.py --sources 250 1000 --repeat 3
    /tmp/venv/bin/python benchmarks/cycle.py --peer none      # ours only (quicker)

For each N: serve the corpus from a loopback HTTP server in this process (file i % len at
/feed/<i>, ETag + Last-Modified + 304), write a config with N sources over 10 categories,
then time, as separate processes, against that one server:
  floor         feedparser.parse(io.BytesIO(body)) of the N bodies, one process, no network/storage
  cold          `python -m aggregator --config X poll` on an empty data dir (fetch..publish)
  publish       `python -m aggregator --config X publish` right after (nothing changed)
  warm          `poll` again: every source answers 304
  reader cold   `python -m reader --db DB update --no-scheduled --workers 8` on a fresh
                database whose N feeds were added (untimed) by make_reader(DB).add_feed(url)
  reader warm   the same command again: every source answers 304
Prints a Markdown table with the ratios ours/floor and ours/reader, and the issue's
targets met or not, and writes benchmarks/results/latest.{json,md}.

Owns: the server, the process accounting and the report. Must not: import aggregator or
reader (both are measured from the outside, like a user runs them) or reach anything but
127.0.0.1.

Accounting (Linux): this process makes itself a child subreaper, so the parse-worker
forkserver, which outlives `poll` by a moment, is reparented to us and reaped here; CPU is
the sum of user+sys over every process of the phase (os.wait4), "peak RSS" the largest
ru_maxrss of any one of them, and "tree RSS" the largest sum of RSS over all of them,
sampled from /proc every 50 ms (it can miss short spikes).
"""

from __future__ import annotations

import argparse
import ctypes
import email.utils
import gzip
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CATEGORIES = 10
READER_WORKERS = 8  # the command: `python -m reader update --no-scheduled --workers 8`
PAGE = os.sysconf("SC_PAGE_SIZE")
_TYPES = {".json": "application/feed+json", ".atom": "application/atom+xml", ".rdf": "application/rdf+xml"}

# The floor, run as its own process so it pays the same interpreter start-up as `poll`.
# JSON Feed bodies give feedparser 0 entries (it does not read JSON Feed), so for those the
# items are counted with json.loads, inside the timed loop; that is the least any reader does.
FLOOR = r"""
import io, json, sys, time
t0 = time.perf_counter()
import feedparser
paths, n = json.load(open(sys.argv[1]))
bodies = [open(p, "rb").read() for p in paths]
t1 = time.perf_counter()
entries = 0
for i in range(n):
    body = bodies[i % len(bodies)]
    k = len(feedparser.parse(io.BytesIO(body)).entries)
    if k == 0 and body.lstrip()[:1] == b"{":
        try:
            k = len(json.loads(body).get("items") or [])
        except ValueError:
            pass
    entries += k
t2 = time.perf_counter()
print(json.dumps({"entries": entries, "setup_s": t1 - t0, "parse_s": t2 - t1}))
"""

# The peer's set-up and read-back, each its own process (reader is never imported here).
# Adding the feeds is not timed: it is the user's one-off `reader add`, not a cycle.
READER_SETUP = r"""
import json, sys
from reader import make_reader
reader = make_reader(sys.argv[1])
for url in json.load(open(sys.argv[2])):
    reader.add_feed(url)
reader.close()
"""

READER_STATE = r"""
import json, sys
from reader import make_reader
reader = make_reader(sys.argv[1])
feeds = reader.get_feed_counts()
errors = {}
for feed in reader.get_feeds(broken=True):
    e = feed.last_exception
    # the message without the feed's URL, so one kind of error is one key
    key = f"{e.type_name}: {e.value_str.replace(repr(feed.url), '<url>')[:200]}" if e else "?"
    errors[key] = errors.get(key, 0) + 1
print(json.dumps({"entries": reader.get_entry_counts().total, "feeds": feeds.total, "broken": feeds.broken,
                  "never_updated": reader.get_feed_counts(new=True).total, "errors": errors}))
reader.close()
"""

# The last line `reader update` prints (click strips the colours when stdout is a file).
READER_STATUS = re.compile(r"(\d+) ok, (\d+) error, (\d+) not modified; entries: (\d+) new, (\d+) modified")


# -- the loopback server ---------------------------------------------------------------


class CorpusServer:
    """N feeds at /feed/<i> (body of file i % len), answering conditional GETs with 304."""

    def __init__(self, files: list[Path], n: int, *, gzip_bodies: bool = False):
        self.n = n
        self.bodies = [f.read_bytes() for f in files]
        self.gz = [gzip.compress(b, 6) for b in self.bodies] if gzip_bodies else None
        self.types = [_TYPES.get(f.suffix.lower(), "application/xml") for f in files]
        self.etags = ['"' + hashlib.sha256(b).hexdigest()[:16] + '"' for b in self.bodies]
        self.last_modified = email.utils.formatdate(time.time() - 86400, usegmt=True)
        self.status: dict[int, int] = {}
        self.conditional = 0  # requests carrying If-None-Match or If-Modified-Since
        self.connections = 0  # TCP connections accepted (fewer than requests: keep-alive reuse)
        self.bytes_sent = 0
        self.lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.corpus = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/feed/{i}"

    def take_counts(self) -> dict:
        with self.lock:
            out = {"status": {str(k): v for k, v in sorted(self.status.items())}, "conditional": self.conditional,
                   "connections": self.connections, "bytes": self.bytes_sent}
            self.status, self.conditional, self.connections, self.bytes_sent = {}, 0, 0, 0
        return out

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: eight clients opening a connection per 304 at once
    # overflow it, the kernel drops the SYN, and the client retries it a whole second later
    # (seen: a 0.5 s warm cycle taking 1.5 s). The kernel caps this at net.core.somaxconn.
    request_queue_size = 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real feed servers do
    timeout = 30
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

    def setup(self) -> None:  # once per connection; do_GET runs once per request on it
        super().setup()
        srv: CorpusServer = self.server.corpus  # type: ignore[attr-defined]
        with srv.lock:
            srv.connections += 1

    def do_GET(self) -> None:
        srv: CorpusServer = self.server.corpus  # type: ignore[attr-defined]
        head, _, tail = self.path.partition("/feed/")
        i = int(tail) if head == "" and tail.isdigit() else -1
        if not 0 <= i < srv.n:
            return self._send(srv, 404, b"not found\n", {"Content-Type": "text/plain"})
        f = i % len(srv.bodies)
        validators = {"ETag": srv.etags[f], "Last-Modified": srv.last_modified}
        if self._not_modified(srv.etags[f], srv.last_modified):
            return self._send(srv, 304, b"", validators)
        headers = {"Content-Type": srv.types[f], **validators}
        body = srv.bodies[f]
        if srv.gz is not None and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            body, headers["Content-Encoding"] = srv.gz[f], "gzip"
        self._send(srv, 200, body, headers)

    def _not_modified(self, etag: str, last_modified: str) -> bool:
        # RFC 9110 §13.2.2: If-None-Match decides when present, else If-Modified-Since.
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            return "*" in tags or etag in tags
        ims = self.headers.get("If-Modified-Since")
        try:
            since = email.utils.parsedate_to_datetime(ims) if ims else None
            return since is not None and email.utils.parsedate_to_datetime(last_modified) <= since
        except (TypeError, ValueError):
            return False

    def _send(self, srv: CorpusServer, status: int, body: bytes, headers: dict[str, str]) -> None:
        # Counted before the first byte goes out: once a client has its answer, the count is
        # there (take_counts right after the client's process ends never misses a request).
        conditional = "If-None-Match" in self.headers or "If-Modified-Since" in self.headers
        with srv.lock:
            srv.status[status] = srv.status.get(status, 0) + 1
            srv.conditional += conditional
            srv.bytes_sent += len(body)
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


# -- process accounting -----------------------------------------------------------------


@dataclass
class Phase:
    wall_s: float
    cpu_s: float  # user + sys of every process of the phase
    main_cpu_s: float  # the command's own process (with any children it reaped itself)
    sys_s: float  # the system-time part of cpu_s (file writes, fsync, page faults)
    peak_rss_mib: float  # largest ru_maxrss of any one process
    tree_rss_mib: float  # largest sampled sum of RSS over the whole process tree
    tree_pss_mib: float  # largest sampled sum of PSS over it (sampled near the RSS peaks)
    processes: int
    harness_cpu_s: float  # this process (HTTP server + sampler) during the phase
    returncode: int


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants (the forkserver) are reparented to us."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _tree_rss(root: int) -> tuple[int, list[int]]:
    """The summed RSS of ``root``'s descendants, and their pids."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is ppid
        rss[pid] = int(fields[21]) * PAGE
    total, todo, pids = 0, list(children.get(root, ())), []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        total += rss.get(pid, 0)
        todo += children.get(pid, ())
    return total, pids


def _tree_pss(pids: list[int]) -> int:
    """The summed PSS (proportional set size: a page shared by k processes counts 1/k in
    each) of ``pids``: the physical memory the tree takes, where summed RSS counts the
    pages the workers share with the forkserver (libraries, preloaded modules) in each."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
                for line in fh:
                    if line.startswith(b"Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            continue
    return total


def run_phase(cmd: list[str], *, timeout: float, stdout=subprocess.DEVNULL, env=None, cwd: Path = REPO) -> Phase:
    """Run ``cmd`` to the end (killed after ``timeout``), reap every descendant, account."""
    peak_tree = peak_pss = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree, peak_pss
        me, read_at = os.getpid(), 0
        while not stop.wait(0.05):
            rss, pids = _tree_rss(me)
            peak_tree = max(peak_tree, rss)
            # PSS walks every page table of the tree (and takes their locks): read only when
            # the summed RSS has grown 2% past the last reading, a few dozen times a phase;
            # read every 50 ms it cost the measured cycle ~7% of both cores
            if rss > read_at * 1.02:
                peak_pss, read_at = max(peak_pss, _tree_pss(pids)), rss

    self0 = resource.getrusage(resource.RUSAGE_SELF)
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True, cwd=cwd, env=env)
    sampler.start()
    def kill() -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    killer = threading.Timer(timeout, kill)
    killer.start()
    # stderr is drained in a thread so a chatty process never blocks on a full pipe
    err: list[bytes] = []
    drain = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    drain.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    usages = [ru]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:  # orphans (the forkserver) exit once poll is gone
        try:
            pid, _, ru = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            usages.append(ru)
        else:
            time.sleep(0.005)
    killer.cancel()
    stop.set()
    sampler.join()
    drain.join(timeout=5)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    if proc.returncode != 0:
        tail = b"".join(err).decode(errors="replace")[-3000:]
        sys.stderr.write(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}\n")
    return Phase(
        wall_s=wall,
        cpu_s=sum(u.ru_utime + u.ru_stime for u in usages),
        main_cpu_s=usages[0].ru_utime + usages[0].ru_stime,
        sys_s=sum(u.ru_stime for u in usages),
        peak_rss_mib=max(u.ru_maxrss for u in usages) / 1024,  # KiB on Linux
        tree_rss_mib=peak_tree / 2**20,
        tree_pss_mib=peak_pss / 2**20,
        processes=len(usages),
        harness_cpu_s=(self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime),
        returncode=proc.returncode,
    )


# -- one size ---------------------------------------------------------------------------


def write_config(path: Path, server: CorpusServer, n: int, concurrency: int | None, host_concurrency: int) -> Path:
    def q(s: str) -> str:
        return json.dumps(s)  # a JSON string of ASCII is a valid TOML basic string

    lines = ['data_dir = "data"', 'output_dir = "out"', 'base_url = "https://feeds.example.org/"',
             "allow_private_networks = true", "timeout = 120", f"host_concurrency = {host_concurrency}"]
    if concurrency:
        lines.append(f"concurrency = {concurrency}")
    for i in range(n):
        lines += ["", "[[sources]]", f"name = {q(f'src-{i:05d}')}", f"url = {q(server.url(i))}",
                  f"category = {q(f'cat-{i % CATEGORIES}')}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def db_counts(db: Path) -> dict:
    """Articles and source states after a cycle, and the cycle's own timers (the `meta` rows
    `poll` writes: the fetch-to-stored loop, then the publish that followed it)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            states = dict(conn.execute("SELECT state, count(*) FROM sources GROUP BY state").fetchall())
            articles = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
            meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN"
                                     " ('last_cycle_seconds', 'last_publish_seconds')").fetchall())
    except sqlite3.Error as e:
        return {"articles": 0, "source_states": {"unreadable": str(e)}, "loop_s": math.nan, "publish_s": math.nan}
    return {"articles": articles, "source_states": states, "loop_s": float(meta.get("last_cycle_seconds", math.nan)),
            "publish_s": float(meta.get("last_publish_seconds", math.nan))}


def feed_documents(output_dir: Path) -> dict:
    """The feed documents a cycle left in the output folder (post files not counted)."""
    files = [p for p in output_dir.rglob("*") if p.suffix in (".xml", ".json") and p.is_file()
             and p.name != "index.opml" and "posts" not in p.relative_to(output_dir).parts]
    return {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 10**6}


def run_ours(run_dir: Path, server: CorpusServer, n: int, args, py: str) -> dict:
    """Cold `poll` on an empty data folder, `publish` with nothing changed, warm `poll`."""
    config = write_config(run_dir / "config.toml", server, n, args.concurrency, args.host_concurrency)
    cmd = [py, "-m", "aggregator", "--config", str(config)]
    # `python -m` puts the working folder first on sys.path, ahead of an (editable) install
    where = {"timeout": args.timeout, "env": args.env, "cwd": args.aggregator_dir}
    server.take_counts()
    cold = run_phase([*cmd, "poll"], **where)
    cold_http = server.take_counts()
    counts = db_counts(run_dir / "data" / "aggregator.db")
    counts.update(feed_documents(run_dir / "out"))
    publish = run_phase([*cmd, "publish"], **where)
    server.take_counts()  # publish fetches nothing; a request here would show in neither cycle
    warm = run_phase([*cmd, "poll"], **where)
    return {"cold": asdict(cold), "cold_http": cold_http, "db": counts, "publish": asdict(publish),
            "warm": asdict(warm), "warm_http": server.take_counts()}


def reader_state(db: Path, args, py: str) -> dict:
    """Entries stored and broken feeds, read back through reader's own API in a process."""
    done = subprocess.run([py, "-c", READER_STATE, str(db)], check=False, capture_output=True, text=True,
                          cwd=REPO, env=args.env, timeout=args.timeout)
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"entries": 0, "feeds": 0, "broken": 0, "never_updated": 0, "errors": {done.stderr[-300:]: 1}}


def reader_status(text: str) -> dict:
    """The counts from the status line `reader update` prints last (it exits 0 even when feeds fail)."""
    m = READER_STATUS.search(text)
    if not m:
        return {"unparsed": text.strip()[-300:]}
    return dict(zip(("ok", "error", "not_modified", "new", "modified"), map(int, m.groups()), strict=True))


def run_reader(run_dir: Path, server: CorpusServer, n: int, args, py: str) -> dict:
    """A fresh reader database with the N feeds added (untimed), then its update command twice."""
    db, urls, config = run_dir / "reader.sqlite", run_dir / "reader-urls.json", run_dir / "reader.toml"
    urls.write_text(json.dumps([server.url(i) for i in range(n)]))
    # An empty config of reader's own so a ~/.config/reader/config.toml (plug-ins) cannot change what is measured.
    config.write_text("[reader]\n")
    setup = run_phase([py, "-c", READER_SETUP, str(db), str(urls)], timeout=args.timeout, env=args.env)
    cmd = [py, "-m", "reader", "--db", str(db), "--config", str(config),
           "update", "--no-scheduled", "--workers", str(READER_WORKERS)]
    out: dict = {"reader_setup": asdict(setup)}
    for phase in ("reader_cold", "reader_warm"):
        server.take_counts()
        stdout = run_dir / f"{phase}.out"
        with stdout.open("w") as fh:
            out[phase] = asdict(run_phase(cmd, timeout=args.timeout, stdout=fh, env=args.env))
        out[f"{phase}_http"] = server.take_counts()
        out[f"{phase}_status"] = reader_status(stdout.read_text(errors="replace"))
        out[f"{phase}_db"] = reader_state(db, args, py)
    return out


def run_size(n: int, files: list[Path], args, py: str) -> dict:
    # Nothing is deleted until the whole benchmark ends (see file_creation_us).
    with CorpusServer(files, n, gzip_bodies=args.gzip) as server:
        tmp_path = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=args.session))
        floor_in = tmp_path / "floor.json"
        floor_in.write_text(json.dumps([[str(f) for f in files], n]))
        floor_out = tmp_path / "floor.out"
        runs = []
        for r in range(args.repeat):
            run_dir = tmp_path / f"run{r}"
            run_dir.mkdir()
            load = os.getloadavg()[0]  # other work on the machine shows here
            with floor_out.open("w") as fh:
                floor = run_phase([py, "-c", FLOOR, str(floor_in)], timeout=args.timeout, stdout=fh, env=args.env)
            nan = float("nan")  # a phase killed by --timeout leaves its figures unknown
            floor_inner = {"entries": 0, "setup_s": nan, "parse_s": nan, **json.loads(floor_out.read_text() or "{}")}
            # Who goes first alternates between runs, so a change in the machine's load during a
            # run does not always land on the same side.
            sides = [("ours", run_ours), ("reader", run_reader)] if args.peer == "reader" else [("ours", run_ours)]
            if r % 2:
                sides.reverse()
            run = {"floor": asdict(floor), "floor_inner": floor_inner, "load_before": load,
                   "order": [name for name, _ in sides]}
            for _, side in sides:
                run.update(side(run_dir, server, n, args, py))
            runs.append(run)
            print(f"  N={n} run {r + 1}/{args.repeat}: " + ", ".join(
                f"{phase.replace('_', ' ')} {run[phase]['wall_s']:.2f}s"
                for phase in PHASES if phase in run), file=sys.stderr)
    return summarize(n, runs)


PHASES = ("floor", "cold", "publish", "warm", "reader_cold", "reader_warm")
PHASE_KEYS = ("wall_s", "cpu_s", "main_cpu_s", "peak_rss_mib", "tree_rss_mib", "tree_pss_mib", "processes",
              "harness_cpu_s")
RATIOS = {  # key: (ours, theirs); every ratio is of medians
    "ratio_cold_wall_floor": ("cold_wall_s", "floor_wall_s"),
    "ratio_cold_cpu_floor": ("cold_cpu_s", "floor_cpu_s"),
    "ratio_cold_wall_reader": ("cold_wall_s", "reader_cold_wall_s"),
    "ratio_cold_cpu_reader": ("cold_cpu_s", "reader_cold_cpu_s"),
    "ratio_warm_wall_reader": ("warm_wall_s", "reader_warm_wall_s"),
    "ratio_warm_cpu_reader": ("warm_cpu_s", "reader_warm_cpu_s"),
    "ratio_cold_rss_reader": ("cold_peak_rss_mib", "reader_cold_peak_rss_mib"),
    "ratio_cold_tree_rss_reader": ("cold_tree_rss_mib", "reader_cold_tree_rss_mib"),
}


def summarize(n: int, runs: list[dict]) -> dict:
    """Median over repeats of each figure (a single run: its figures)."""

    def med(phase: str, key: str) -> float:
        return statistics.median(r[phase][key] for r in runs)

    first = runs[0]
    phases = [p for p in PHASES if p in first]
    entries = first["floor_inner"].get("entries", 0)
    s = {
        "sources": n, "repeats": len(runs), "entries": entries,
        "articles_stored": first["db"]["articles"], "source_states": first["db"]["source_states"],
        "cold_http": first["cold_http"], "warm_http": first["warm_http"],
        "returncodes": sorted({r[p]["returncode"] for r in runs for p in [*phases, "reader_setup"] if p in r}),
    }
    for phase in phases:
        for key in PHASE_KEYS:
            s[f"{phase}_{key}"] = med(phase, key)
    s["floor_parse_s"] = med("floor_inner", "parse_s")
    if "cold" in first:
        for key in ("loop_s", "publish_s"):
            s[f"cold_{key}"] = statistics.median(r["db"].get(key, math.nan) for r in runs)
        s["cold_feed_files"], s["cold_feed_mb"] = first["db"].get("files", 0), first["db"].get("mb", math.nan)
    s["floor_setup_s"] = med("floor_inner", "setup_s")
    s["load_before"] = [round(r["load_before"], 2) for r in runs]
    s["order"] = [r["order"] for r in runs]
    for side in ("", "reader_"):
        if f"{side}cold" in first:
            s[f"{side}cold_wall_all"] = [round(r[f"{side}cold"]["wall_s"], 3) for r in runs]
            s[f"{side}cold_wall_min_s"] = min(s[f"{side}cold_wall_all"])
            s[f"{side}warm_wall_all"] = [round(r[f"{side}warm"]["wall_s"], 3) for r in runs]
            s[f"{side}cold_entries_per_s"] = entries / s[f"{side}cold_wall_s"]
    s["floor_entries_per_s"] = entries / s["floor_wall_s"]
    if "reader_cold" in first:
        s["reader_setup_wall_s"] = med("reader_setup", "wall_s")
        s["reader_entries_stored"] = first["reader_cold_db"]["entries"]
        for key in ("reader_cold_http", "reader_warm_http", "reader_cold_status", "reader_warm_status",
                    "reader_cold_db", "reader_warm_db"):
            s[key] = first[key]
    for key, (ours, theirs) in RATIOS.items():
        if theirs in s:
            s[key] = s[ours] / s[theirs] if s[theirs] else float("nan")
    s["checks"] = checks(n, runs)
    s["runs"] = runs  # every figure of every run, for latest.json
    return s


def checks(n: int, runs: list[dict]) -> list[str]:
    """What did not go as a clean comparison assumes (every cold fetch a 200, every warm one a 304, no
    failed feed), each distinct finding once, with the runs it happened in."""
    found: dict[str, list[int]] = {}
    for k, run in enumerate(runs, 1):
        problems = []
        for side, label in (("", "ours"), ("reader_", "reader")):
            if f"{side}cold" not in run:
                continue
            for cycle, status in (("cold", "200"), ("warm", "304")):
                http = run[f"{side}{cycle}_http"]
                if http["status"] != {status: n}:
                    problems.append(f"{label} {cycle}: HTTP {http['status']}, expected {{'{status}': {n}}} "
                                    f"({http['conditional']} conditional requests)")
        if "db" in run and run["db"]["source_states"] != {"ok": n}:
            problems.append(f"ours: source states after cold {run['db']['source_states']}")
        for cycle in ("cold", "warm") if "reader_cold" in run else ():
            state = run[f"reader_{cycle}_db"]
            if state["broken"] or state["never_updated"]:
                problems.append(f"reader after {cycle}: {state['broken']} broken feeds, {state['never_updated']} "
                                f"never updated; errors {state['errors']}")
        for problem in problems:
            found.setdefault(problem, []).append(k)
    return [f"run(s) {', '.join(map(str, ks))}: {problem}" for problem, ks in found.items()]


# -- report -------------------------------------------------------------------------------


def code_digest(package: Path) -> str:
    """sha256 over the package's files (paths and bytes): names the code measured, committed or not.
    Caches (__pycache__, .ruff_cache and other hidden folders) are left out, as `git archive` leaves them."""
    h = hashlib.sha256()
    files = (p for p in package.rglob("*") if p.is_file())
    for f in sorted(f for f in files if not any(part == "__pycache__" or part.startswith(".")
                                                 for part in f.relative_to(package).parts)):
        h.update(f.relative_to(package).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def file_creation_us(folder: Path, count: int = 2000) -> float:
    """Microseconds to create, write (3 KB) and rename one file in a new folder under
    ``folder``, as a post is written. The files are left in place (the session folder
    goes at the end).

    Why it is measured: a cold poll creates one file per article (~5,600 at 250 sources),
    reader one database file. On ext4 without a journal (this project's machines: no
    jbd2) the kernel skips inodes freed in the last 60-360 s when it allocates one
    (``recently_deleted``), scanning past each, so creating files in a folder where
    thousands were just deleted costs ~10x more kernel time. Measured on the 2-core
    machine: cold poll of 250 sources 6.48 s with the runs in /tmp right after the test
    suite and earlier runs had deleted their files there, 4.88 s in a folder with no recent
    deletions; reader's figure does not move. Hence: runs live in ``--workdir`` (default
    benchmarks/.work, outside /tmp, where test suites churn), nothing is deleted before
    the end, and this figure is printed so a slow file system shows in the results
    instead of in our cold wall time."""
    probe = Path(tempfile.mkdtemp(prefix="fs-probe-", dir=folder))
    data = b"x" * 3000
    started = time.perf_counter()
    for i in range(count):
        tmp, final = probe / f".{i}.tmp", probe / f"{i}.md"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.replace(tmp, final)
    return (time.perf_counter() - started) / count * 1e6


def machine_info(py: str, aggregator_dir: Path) -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    probe = ("import sys, importlib.metadata as m\n"
             "def v(name):\n"
             "    try:\n        return m.version(name)\n    except m.PackageNotFoundError:\n        return '-'\n"
             "print(sys.version.split()[0], v('feedparser'), v('reader'))")
    version = subprocess.run([py, "-c", probe], check=False, capture_output=True, text=True, cwd=REPO).stdout.split()
    git = ["git", "-C", str(aggregator_dir)]
    commit = subprocess.run([*git, "describe", "--always", "--dirty"], check=False, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "aggregator"], check=False, capture_output=True,
                           text=True).stdout.split("\n")
    version += ["?"] * (3 - len(version))
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "platform": platform.platform(),
        "python": version[0], "feedparser": version[1], "reader": version[2],
        "commit": commit or "not a git checkout", "interpreter": py, "aggregator_dir": str(aggregator_dir),
        "aggregator_sha256": code_digest(aggregator_dir / "aggregator"),
        "aggregator_uncommitted": [line[3:] for line in dirty if line[3:]],
    }


ROWS = [  # (label, key, format); a figure a run did not measure (--peer none) shows as "—"
    ("entries in the N bodies", "entries", "{:.0f}"),
    ("floor: wall s (process, feedparser.parse only)", "floor_wall_s", "{:.2f}"),
    ("floor: of which parsing s (in-process timer)", "floor_parse_s", "{:.2f}"),
    ("floor: CPU s", "floor_cpu_s", "{:.2f}"),
    ("floor: entries/s (process wall)", "floor_entries_per_s", "{:,.0f}"),
    ("cold poll: wall s", "cold_wall_s", "{:.2f}"),
    ("cold poll: wall s, best run", "cold_wall_min_s", "{:.2f}"),
    ("cold poll: CPU s (all processes)", "cold_cpu_s", "{:.2f}"),
    ("cold poll: of which the `poll` process itself, CPU s", "cold_main_cpu_s", "{:.2f}"),
    ("cold poll: of which fetch → parse → store loop s (own timer)", "cold_loop_s", "{:.2f}"),
    ("cold poll: of which publishing s (own timer)", "cold_publish_s", "{:.2f}"),
    ("cold poll: feed documents written (RSS, Atom, JSON; archives included)", "cold_feed_files", "{:,.0f}"),
    ("cold poll: their size, MB", "cold_feed_mb", "{:.1f}"),
    ("cold poll: entries/s (wall)", "cold_entries_per_s", "{:,.0f}"),
    ("cold poll: peak RSS of one process, MiB", "cold_peak_rss_mib", "{:.0f}"),
    ("cold poll: peak RSS of the tree (sampled), MiB", "cold_tree_rss_mib", "{:.0f}"),
    ("cold poll: peak PSS of the tree (sampled; shared pages counted once), MiB", "cold_tree_pss_mib", "{:.0f}"),
    ("cold poll: processes reaped by the harness", "cold_processes", "{:.0f}"),
    ("cold poll: harness CPU s (server + sampler)", "cold_harness_cpu_s", "{:.2f}"),
    ("publish alone (nothing changed): wall s", "publish_wall_s", "{:.2f}"),
    ("publish alone: CPU s", "publish_cpu_s", "{:.2f}"),
    ("warm poll (all 304): wall s", "warm_wall_s", "{:.2f}"),
    ("warm poll: CPU s", "warm_cpu_s", "{:.2f}"),
    ("warm poll: peak RSS of one process, MiB", "warm_peak_rss_mib", "{:.0f}"),
    ("articles stored after cold", "articles_stored", "{:.0f}"),
    ("reader cold update: wall s", "reader_cold_wall_s", "{:.2f}"),
    ("reader cold update: wall s, best run", "reader_cold_wall_min_s", "{:.2f}"),
    ("reader cold update: CPU s", "reader_cold_cpu_s", "{:.2f}"),
    ("reader cold update: entries/s (wall)", "reader_cold_entries_per_s", "{:,.0f}"),
    ("reader cold update: peak RSS of one process, MiB", "reader_cold_peak_rss_mib", "{:.0f}"),
    ("reader cold update: peak RSS of the tree (sampled), MiB", "reader_cold_tree_rss_mib", "{:.0f}"),
    ("reader cold update: peak PSS of the tree (sampled), MiB", "reader_cold_tree_pss_mib", "{:.0f}"),
    ("reader cold update: harness CPU s (server + sampler)", "reader_cold_harness_cpu_s", "{:.2f}"),
    ("reader warm update (all 304): wall s", "reader_warm_wall_s", "{:.2f}"),
    ("reader warm update: CPU s", "reader_warm_cpu_s", "{:.2f}"),
    ("reader warm update: peak RSS of one process, MiB", "reader_warm_peak_rss_mib", "{:.0f}"),
    ("reader: entries stored after cold", "reader_entries_stored", "{:.0f}"),
    ("reader: adding the N feeds (not in any cycle), wall s", "reader_setup_wall_s", "{:.2f}"),
    ("**ours/floor, cold wall**", "ratio_cold_wall_floor", "**{:.2f}×**"),
    ("**ours/floor, cold CPU**", "ratio_cold_cpu_floor", "**{:.2f}×**"),
    ("**ours/reader, cold wall**", "ratio_cold_wall_reader", "**{:.2f}×**"),
    ("**ours/reader, cold CPU**", "ratio_cold_cpu_reader", "**{:.2f}×**"),
    ("**ours/reader, warm wall**", "ratio_warm_wall_reader", "**{:.2f}×**"),
    ("**ours/reader, warm CPU**", "ratio_warm_cpu_reader", "**{:.2f}×**"),
    ("**ours/reader, cold peak RSS of one process**", "ratio_cold_rss_reader", "**{:.2f}×**"),
    ("**ours/reader, cold peak RSS of the tree**", "ratio_cold_tree_rss_reader", "**{:.2f}×**"),
]

MB_PER_MIB = 2**20 / 10**6
TARGETS_TEXT = ("**Targets** (issue 8, both sides timed as whole processes; set at 250 sources): cold wall "
                "≤ 0.5× reader's; warm wall (all 304) ≤ 0.5× reader's; at 10,000 sources also warm wall "
                "≤ 0.25× reader's and < 15 s, and peak RSS < 300 MB.")


def targets(s: dict) -> list[str]:
    """Each target of the issue that applies to this size, with the measured figure and ✓ or ✗ (medians)."""
    if "ratio_cold_wall_reader" not in s:
        return []

    def mark(ok: bool) -> str:
        return "✓" if ok else "✗"

    cold, warm = s["ratio_cold_wall_reader"], s["ratio_warm_wall_reader"]
    out = [f"cold wall ≤ 0.5× reader: {cold:.2f}× {mark(cold <= 0.5)}",
           f"warm wall ≤ 0.5× reader: {warm:.2f}× {mark(warm <= 0.5)}"]
    if s["sources"] == 10_000:
        one = max(s["cold_peak_rss_mib"], s["warm_peak_rss_mib"]) * MB_PER_MIB
        tree = max(s["cold_tree_rss_mib"], s["warm_tree_rss_mib"]) * MB_PER_MIB
        pss = max(s["cold_tree_pss_mib"], s["warm_tree_pss_mib"]) * MB_PER_MIB
        out += [f"warm wall ≤ 0.25× reader: {warm:.2f}× {mark(warm <= 0.25)}",
                f"warm wall < 15 s: {s['warm_wall_s']:.1f} s {mark(s['warm_wall_s'] < 15)}",
                (f"peak RSS < 300 MB: {one:.0f} MB for the largest process {mark(one < 300)}, "
                 f"{tree:.0f} MB summed over the whole tree (sampled; pages shared by processes counted in "
                 f"each) {mark(tree < 300)}, {pss:.0f} MB of PSS over the tree (each page once) {mark(pss < 300)}")]
    return out


def cell(s: dict, key: str, fmt: str) -> str:
    v = s.get(key)
    unknown = v is None or (isinstance(v, float) and math.isnan(v))  # NaN: a phase killed by --timeout
    return "—" if unknown else fmt.format(v)


def http(counts: dict) -> str:
    return (f"{counts['status']} ({counts['conditional']} conditional, over {counts['connections']} "
            "connections)")


def markdown(machine: dict, sizes: list[dict], args) -> str:
    peer = "none"
    if args.peer == "reader":
        peer = f"reader {machine['reader']} (`update --no-scheduled --workers {READER_WORKERS}`)"
    uncommitted = machine["aggregator_uncommitted"]
    code = f"code sha256 {machine['aggregator_sha256']}"
    if uncommitted:
        code += f"; uncommitted: {', '.join(uncommitted)}"
    out = [
        f"# Poll-cycle benchmark — {machine['date']}",
        "",
        (f"{machine['nproc']} CPUs ({machine['cpu_model']}), {machine['platform']}; Python {machine['python']}, "
         f"feedparser {machine['feedparser']}; aggregator {machine['commit']} from {machine['aggregator_dir']} "
         f"({code}); peer {peer}. "
         f"Creating a file in the work folder: {machine.get('file_creation_us', float('nan')):.0f} µs "
         "(see `file_creation_us` in cycle.py: over ~100 µs the file system, not the pipeline, dominates). "
         f"Median of {args.repeat} run(s); bodies {'gzip' if args.gzip else 'identity'}-encoded; "
         f"concurrency {args.concurrency or 'default'}, host_concurrency {args.host_concurrency}."),
        "",
        *(["**A phase failed or was killed (exit codes below): these figures are not valid.**", ""]
          if any(s["returncodes"] != [0] for s in sizes) else []),
        "| figure | " + " | ".join(f"N={s['sources']}" for s in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for label, key, fmt in ROWS:
        if any(key in s for s in sizes):
            out.append(f"| {label} | " + " | ".join(cell(s, key, fmt) for s in sizes) + " |")
    out.append("")
    if args.peer == "reader":
        out += [TARGETS_TEXT, ""]
        out += [f"- N={s['sources']}: " + "; ".join(targets(s)) + "." for s in sizes]
        out.append("")
    for s in sizes:
        out.append(f"- N={s['sources']}: source states after cold {s['source_states']}; "
                   f"HTTP cold {http(s['cold_http'])}, warm {http(s['warm_http'])}; "
                   f"exit codes {s['returncodes']}; cold wall per run {s['cold_wall_all']}; "
                   f"1-min load average before each run {s['load_before']}.")
        if "reader_cold_wall_all" in s:
            out.append(f"  reader: HTTP cold {http(s['reader_cold_http'])}, warm {http(s['reader_warm_http'])}; "
                       "`update` reported cold "
                       f"{s['reader_cold_status']}, warm {s['reader_warm_status']}; broken feeds after cold "
                       f"{s['reader_cold_db']['broken']}; cold wall per run {s['reader_cold_wall_all']}; "
                       f"order per run {s['order']}.")
        out += [f"  **check:** {c}" for c in s["checks"]]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, nargs="+", default=[250],
                   help="number of sources (several: one column each) [250]")
    p.add_argument("--corpus", help="folder of feed files [$AGGREGATOR_CORPUS/real (or $AGGREGATOR_CORPUS itself), "
                   "else ../shared/corpus/real beside the repo]")
    p.add_argument("--repeat", type=int, default=1, help="runs per size; figures are medians [1]")
    p.add_argument("--peer", choices=("reader", "none"), default="reader",
                   help="also measure the reader library (reader[cli] installed for --python) [reader]")
    p.add_argument("--concurrency", type=int, default=None, help="config `concurrency` [the config default]")
    p.add_argument("--host-concurrency", type=int, default=None,
                   help=f"config `host_concurrency` [--concurrency, else {READER_WORKERS}: every source is on one "
                   "host here, and the per-host limit would otherwise measure our politeness, not the pipeline]")
    p.add_argument("--gzip", action="store_true", help="serve bodies gzip-encoded")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a phase is killed [1800]")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs aggregator and reader [this one]")
    p.add_argument("--aggregator-dir", type=Path, default=REPO,
                   help="folder holding the `aggregator` package to measure, e.g. a `git archive` of another "
                   "commit or a frozen copy of a working tree that is being edited [this repo]")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/latest.*")
    p.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".work",
                   help="folder for the runs' data and output; nothing in it is deleted until the end (see "
                   "file_creation_us) [benchmarks/.work]")
    p.add_argument("--keep", action="store_true", help="keep the runs' folders (printed at the end)")
    args = p.parse_args(argv)
    args.host_concurrency = args.host_concurrency or args.concurrency or READER_WORKERS

    corpus = Path(args.corpus or os.environ.get("AGGREGATOR_CORPUS") or REPO.parent / "shared" / "corpus")
    if not args.corpus and (corpus / "real").is_dir():  # the env var names the corpus root, as in tests
        corpus = corpus / "real"
    files = sorted(f for f in corpus.iterdir() if f.is_file()) if corpus.is_dir() else []
    if not files:
        p.error(f"no feed files in {corpus}; pass --corpus or set AGGREGATOR_CORPUS")
    args.aggregator_dir = args.aggregator_dir.resolve()
    if not (args.aggregator_dir / "aggregator" / "__main__.py").is_file():
        p.error(f"no aggregator package in {args.aggregator_dir}")
    machine = machine_info(args.python, args.aggregator_dir)
    if args.peer == "reader" and machine["reader"] in ("-", "?"):
        p.error(f"reader is not installed for {args.python}: pip install 'reader[cli]', or pass --peer none")
    if not become_subreaper():
        print("warning: not a subreaper; the forkserver's CPU may go uncounted", file=sys.stderr)
    print(f"corpus: {len(files)} files from {corpus}", file=sys.stderr)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.session = Path(tempfile.mkdtemp(prefix="aggbench-", dir=args.workdir))
    machine["file_creation_us"] = round(file_creation_us(args.session), 1)
    print(f"work folder {args.session}: creating a file takes {machine['file_creation_us']:.0f} µs",
          file=sys.stderr)
    try:
        sizes = _measure(files, args)
    finally:
        if args.keep:
            print(f"runs kept in {args.session}", file=sys.stderr)
        else:
            shutil.rmtree(args.session, ignore_errors=True)
    md = markdown(machine, sizes, args)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        result = {"machine": machine, "corpus": str(corpus), "corpus_files": len(files), "repeat": args.repeat,
                  "peer": args.peer, "gzip": args.gzip, "concurrency": args.concurrency,
                  "host_concurrency": args.host_concurrency, "sizes": sizes}
        (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        (RESULTS / "latest.md").write_text(md)
    return 0 if all(s["returncodes"] == [0] for s in sizes) else 1


def _measure(files: list[Path], args) -> list[dict]:
    # Bytecode as on an installed system: compiled once, by an unmeasured 10-source
    # warm-up (which also pages in the corpus), into a private cache outside the repo;
    # PYTHONDONTWRITEBYTECODE (set on some machines) would recompile every module in
    # every process. READER_* variables would configure the peer's CLI behind our back.
    args.env = {k: v for k, v in os.environ.items()
                if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("READER_")}
    args.env["PYTHONPYCACHEPREFIX"] = str(args.session / "pycache")
    print("warm-up (not measured):", file=sys.stderr)
    run_size(10, files, argparse.Namespace(**{**vars(args), "repeat": 1}), args.python)
    return [run_size(n, files, args, args.python) for n in args.sources]


if __name__ == "__main__":
    sys.exit(main())
