"""Benchmark one poll cycle of aggregator, as whole processes, against the parsing floor.

    /tmp/venv/bin/python benchmarks/cycle.py                  # 250 sources
    /tmp/venv/bin/python benchmarks/cycle.py --sources 250 1000 --repeat 3

For each N: serve the corpus from a loopback HTTP server in this process (file i % len at
/feed/<i>, ETag + Last-Modified + 304), write a config with N sources over 10 categories,
then time, as separate processes:
  floor    feedparser.parse(io.BytesIO(body)) of the N bodies, one process, no network/storage
  cold     `python -m aggregator --config X poll` on an empty data dir (fetch..publish)
  publish  `python -m aggregator --config X publish` right after (nothing changed)
  warm     `poll` again: every source answers 304
Prints a Markdown table and writes benchmarks/results/latest.{json,md}.

Owns: the server, the process accounting and the report. Must not: import aggregator (it
is measured from the outside, like a user runs it) or reach anything but 127.0.0.1.

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
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CATEGORIES = 10
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
        self.bytes_sent = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.corpus = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/feed/{i}"

    def take_counts(self) -> dict:
        with self.lock:
            out = {"status": {str(k): v for k, v in sorted(self.status.items())}, "bytes": self.bytes_sent}
            self.status, self.bytes_sent = {}, 0
        return out

    def __enter__(self) -> CorpusServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real feed servers do
    timeout = 30
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass

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
            return bool(ims) and email.utils.parsedate_to_datetime(last_modified) <= email.utils.parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False

    def _send(self, srv: CorpusServer, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)
        with srv.lock:
            srv.status[status] = srv.status.get(status, 0) + 1
            srv.bytes_sent += len(body)


# -- process accounting -----------------------------------------------------------------


@dataclass
class Phase:
    wall_s: float
    cpu_s: float  # user + sys of every process of the phase
    main_cpu_s: float  # the command's own process (with any children it reaped itself)
    sys_s: float  # the system-time part of cpu_s (file writes, fsync, page faults)
    peak_rss_mib: float  # largest ru_maxrss of any one process
    tree_rss_mib: float  # largest sampled sum of RSS over the whole process tree
    processes: int
    harness_cpu_s: float  # this process (HTTP server + sampler) during the phase
    returncode: int


def become_subreaper() -> bool:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants (the forkserver) are reparented to us."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _tree_rss(root: int) -> int:
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
    total, todo = 0, list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, ())
    return total


def run_phase(cmd: list[str], *, timeout: float, stdout=subprocess.DEVNULL, env=None) -> Phase:
    """Run ``cmd`` to the end (killed after ``timeout``), reap every descendant, account."""
    peak_tree = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_tree
        me = os.getpid()
        while not stop.wait(0.05):
            peak_tree = max(peak_tree, _tree_rss(me))

    self0 = resource.getrusage(resource.RUSAGE_SELF)
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, start_new_session=True, cwd=REPO, env=env)
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
        sys.stderr.write(f"{' '.join(cmd)} exited {proc.returncode}:\n{b''.join(err).decode(errors='replace')[-3000:]}\n")
    return Phase(
        wall_s=wall,
        cpu_s=sum(u.ru_utime + u.ru_stime for u in usages),
        main_cpu_s=usages[0].ru_utime + usages[0].ru_stime,
        sys_s=sum(u.ru_stime for u in usages),
        peak_rss_mib=max(u.ru_maxrss for u in usages) / 1024,  # KiB on Linux
        tree_rss_mib=peak_tree / 2**20,
        processes=len(usages),
        harness_cpu_s=(self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime),
        returncode=proc.returncode,
    )


# -- one size ---------------------------------------------------------------------------


def write_config(path: Path, server: CorpusServer, n: int, concurrency: int | None) -> Path:
    def q(s: str) -> str:
        return json.dumps(s)  # a JSON string of ASCII is a valid TOML basic string

    lines = ['data_dir = "data"', 'output_dir = "out"', 'base_url = "https://feeds.example.org/"',
             "allow_private_networks = true", "timeout = 120"]
    if concurrency:
        lines.append(f"concurrency = {concurrency}")
    for i in range(n):
        lines += ["", "[[sources]]", f"name = {q(f'src-{i:05d}')}", f"url = {q(server.url(i))}",
                  f"category = {q(f'cat-{i % CATEGORIES}')}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def db_counts(db: Path) -> dict:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            states = dict(conn.execute("SELECT state, count(*) FROM sources GROUP BY state").fetchall())
            articles = conn.execute("SELECT count(*) FROM articles").fetchone()[0]
    except sqlite3.Error as e:
        return {"articles": 0, "source_states": {"unreadable": str(e)}}
    return {"articles": articles, "source_states": states}


def run_size(n: int, files: list[Path], args, py: str) -> dict:
    aggregator = [py, "-m", "aggregator"]
    with tempfile.TemporaryDirectory(prefix=f"aggbench-{n}-") as tmp, CorpusServer(files, n, gzip_bodies=args.gzip) as server:
        tmp_path = Path(tmp)
        floor_in = tmp_path / "floor.json"
        floor_in.write_text(json.dumps([[str(f) for f in files], n]))
        floor_out = tmp_path / "floor.out"
        runs = []
        for r in range(args.repeat):
            run_dir = tmp_path / f"run{r}"
            run_dir.mkdir()
            config = write_config(run_dir / "config.toml", server, n, args.concurrency)
            cmd = [*aggregator, "--config", str(config)]
            load = os.getloadavg()[0]  # other work on the machine shows here
            with floor_out.open("w") as fh:
                floor = run_phase([py, "-c", FLOOR, str(floor_in)], timeout=args.timeout, stdout=fh, env=args.env)
            nan = float("nan")  # a phase killed by --timeout leaves its figures unknown
            floor_inner = {"entries": 0, "setup_s": nan, "parse_s": nan, **json.loads(floor_out.read_text() or "{}")}
            server.take_counts()
            cold = run_phase([*cmd, "poll"], timeout=args.timeout, env=args.env)
            cold_http = server.take_counts()
            counts = db_counts(run_dir / "data" / "aggregator.db")
            publish = run_phase([*cmd, "publish"], timeout=args.timeout, env=args.env)
            warm = run_phase([*cmd, "poll"], timeout=args.timeout, env=args.env)
            warm_http = server.take_counts()
            runs.append({"floor": asdict(floor), "floor_inner": floor_inner, "cold": asdict(cold), "cold_http": cold_http,
                         "publish": asdict(publish), "warm": asdict(warm), "warm_http": warm_http, "db": counts,
                         "load_before": load})
            print(f"  N={n} run {r + 1}/{args.repeat}: floor {floor.wall_s:.2f}s, cold {cold.wall_s:.2f}s, "
                  f"publish {publish.wall_s:.2f}s, warm {warm.wall_s:.2f}s", file=sys.stderr)
    return summarize(n, runs)


def summarize(n: int, runs: list[dict]) -> dict:
    """Median over repeats of each figure (a single run: its figures)."""

    def med(phase: str, key: str) -> float:
        return statistics.median(r[phase][key] for r in runs)

    entries = runs[0]["floor_inner"].get("entries", 0)
    s = {
        "sources": n, "repeats": len(runs), "entries": entries,
        "articles_stored": runs[0]["db"]["articles"], "source_states": runs[0]["db"]["source_states"],
        "cold_http": runs[0]["cold_http"], "warm_http": runs[0]["warm_http"],
        "returncodes": sorted({r[p]["returncode"] for r in runs for p in ("floor", "cold", "publish", "warm")}),
    }
    for phase in ("floor", "cold", "publish", "warm"):
        for key in ("wall_s", "cpu_s", "main_cpu_s", "peak_rss_mib", "tree_rss_mib", "processes", "harness_cpu_s"):
            s[f"{phase}_{key}"] = med(phase, key)
    s["floor_parse_s"] = med("floor_inner", "parse_s")
    s["floor_setup_s"] = med("floor_inner", "setup_s")
    s["cold_wall_all"] = [round(r["cold"]["wall_s"], 3) for r in runs]
    s["cold_wall_min_s"] = min(s["cold_wall_all"])
    s["load_before"] = [round(r["load_before"], 2) for r in runs]
    s["runs"] = runs  # every figure of every run, for latest.json
    s["cold_entries_per_s"] = entries / s["cold_wall_s"]
    s["floor_entries_per_s"] = entries / s["floor_wall_s"]
    s["ratio_cold_wall_floor"] = s["cold_wall_s"] / s["floor_wall_s"]
    s["ratio_cold_cpu_floor"] = s["cold_cpu_s"] / s["floor_cpu_s"]
    return s


# -- report -------------------------------------------------------------------------------


def machine_info(py: str) -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([py, "-c", "import sys, feedparser; print(sys.version.split()[0], feedparser.__version__)"],
                             capture_output=True, text=True, cwd=REPO).stdout.split()
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)), "cpu_model": model, "platform": platform.platform(),
        "python": version[0] if version else "?", "feedparser": version[1] if len(version) > 1 else "?",
        "commit": commit or "?", "interpreter": py,
    }


ROWS = [  # (label, key, format)
    ("entries in the N bodies", "entries", "{:.0f}"),
    ("floor: wall s (process, feedparser.parse only)", "floor_wall_s", "{:.2f}"),
    ("floor: of which parsing s (in-process timer)", "floor_parse_s", "{:.2f}"),
    ("floor: CPU s", "floor_cpu_s", "{:.2f}"),
    ("floor: entries/s (process wall)", "floor_entries_per_s", "{:,.0f}"),
    ("cold poll: wall s", "cold_wall_s", "{:.2f}"),
    ("cold poll: wall s, best run", "cold_wall_min_s", "{:.2f}"),
    ("cold poll: CPU s (all processes)", "cold_cpu_s", "{:.2f}"),
    ("cold poll: of which the `poll` process itself, CPU s", "cold_main_cpu_s", "{:.2f}"),
    ("cold poll: entries/s (wall)", "cold_entries_per_s", "{:,.0f}"),
    ("cold poll: peak RSS of one process, MiB", "cold_peak_rss_mib", "{:.0f}"),
    ("cold poll: peak RSS of the tree (sampled), MiB", "cold_tree_rss_mib", "{:.0f}"),
    ("cold poll: processes reaped by the harness", "cold_processes", "{:.0f}"),
    ("cold poll: harness CPU s (server + sampler)", "cold_harness_cpu_s", "{:.2f}"),
    ("**ours/floor, cold wall**", "ratio_cold_wall_floor", "**{:.1f}×**"),
    ("**ours/floor, cold CPU**", "ratio_cold_cpu_floor", "**{:.1f}×**"),
    ("publish alone (nothing changed): wall s", "publish_wall_s", "{:.2f}"),
    ("publish alone: CPU s", "publish_cpu_s", "{:.2f}"),
    ("warm poll (all 304): wall s", "warm_wall_s", "{:.2f}"),
    ("warm poll: CPU s", "warm_cpu_s", "{:.2f}"),
    ("warm poll: peak RSS of one process, MiB", "warm_peak_rss_mib", "{:.0f}"),
    ("articles stored after cold", "articles_stored", "{:.0f}"),
]


def markdown(machine: dict, sizes: list[dict], args) -> str:
    out = [
        f"# Poll-cycle benchmark — {machine['date']}",
        "",
        f"{machine['nproc']} CPUs ({machine['cpu_model']}), {machine['platform']}; Python {machine['python']}, "
        f"feedparser {machine['feedparser']}; aggregator {machine['commit']}. "
        f"Median of {args.repeat} run(s); bodies {'gzip' if args.gzip else 'identity'}-encoded; "
        f"concurrency {args.concurrency or 'default'}.",
        "",
        *(["**A phase failed or was killed (exit codes below): these figures are not valid.**", ""]
          if any(s["returncodes"] != [0] for s in sizes) else []),
        "| figure | " + " | ".join(f"N={s['sources']}" for s in sizes) + " |",
        "| --- | " + " | ".join("---:" for _ in sizes) + " |",
    ]
    for label, key, fmt in ROWS:
        out.append(f"| {label} | " + " | ".join(fmt.format(s[key]) for s in sizes) + " |")
    out.append("")
    for s in sizes:
        out.append(f"- N={s['sources']}: source states after cold {s['source_states']}; HTTP cold {s['cold_http']['status']}, "
                   f"warm {s['warm_http']['status']}; exit codes {s['returncodes']}; cold wall per run {s['cold_wall_all']}; "
                   f"1-min load average before each run {s['load_before']}.")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", type=int, nargs="+", default=[250], help="number of sources (several: one column each) [250]")
    p.add_argument("--corpus", help="folder of feed files [$AGGREGATOR_CORPUS/real (or $AGGREGATOR_CORPUS itself), "
                   "else ../shared/corpus/real beside the repo]")
    p.add_argument("--repeat", type=int, default=1, help="runs per size; figures are medians [1]")
    p.add_argument("--concurrency", type=int, default=None, help="config `concurrency` [the config default]")
    p.add_argument("--gzip", action="store_true", help="serve bodies gzip-encoded")
    p.add_argument("--timeout", type=float, default=1800, help="seconds before a phase is killed [1800]")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs aggregator [this one]")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/latest.*")
    args = p.parse_args(argv)

    corpus = Path(args.corpus or os.environ.get("AGGREGATOR_CORPUS") or REPO.parent / "shared" / "corpus")
    if not args.corpus and (corpus / "real").is_dir():  # the env var names the corpus root, as in tests
        corpus = corpus / "real"
    files = sorted(f for f in corpus.iterdir() if f.is_file()) if corpus.is_dir() else []
    if not files:
        p.error(f"no feed files in {corpus}; pass --corpus or set AGGREGATOR_CORPUS")
    if not become_subreaper():
        print("warning: not a subreaper; the forkserver's CPU may go uncounted", file=sys.stderr)
    machine = machine_info(args.python)
    print(f"corpus: {len(files)} files from {corpus}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="aggbench-pycache-") as pycache:
        # Bytecode as on an installed system: compiled once, by an unmeasured 10-source
        # warm-up (which also pages in the corpus), into a private cache outside the repo;
        # PYTHONDONTWRITEBYTECODE (set on some machines) would recompile every module in
        # every process.
        args.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        args.env["PYTHONPYCACHEPREFIX"] = pycache
        print("warm-up (not measured):", file=sys.stderr)
        run_size(10, files, argparse.Namespace(**{**vars(args), "repeat": 1}), args.python)
        sizes = [run_size(n, files, args, args.python) for n in args.sources]
    md = markdown(machine, sizes, args)
    print(md)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        result = {"machine": machine, "corpus": str(corpus), "corpus_files": len(files), "repeat": args.repeat,
                  "gzip": args.gzip, "concurrency": args.concurrency, "sizes": sizes}
        (RESULTS / "latest.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        (RESULTS / "latest.md").write_text(md)
    return 0 if all(s["returncodes"] == [0] for s in sizes) else 1


if __name__ == "__main__":
    sys.exit(main())
