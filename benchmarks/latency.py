"""Concurrency under latency: N sources whose server answers each request after a delay.

    python benchmarks/latency.py --sources 1000 --delay 0.1 --concurrency 8 16 32

A loopback server (bound to 0.0.0.0, reached through 127.0.0.1 … 127.0.0.H so the per-host
limits see H hosts, like an aggregator polling many sites) sleeps ``--delay`` seconds and
then answers with a one-item feed unique to the path. For each concurrency, a fresh
config and database, then ``aggregator poll`` is timed as a whole process. The figure to
compare is N × delay ÷ concurrency (what a perfectly concurrent fetcher would take).
Writes ``benchmarks/results/latency.json`` and ``latency.md``. Loopback only; bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def make_handler(delay: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            time.sleep(delay)
            n = self.path.strip("/").split("/")[-1]
            body = (
                f'<?xml version="1.0"?><rss version="2.0"><channel><title>Feed {n}</title>'
                f"<link>https://site{n}.example/</link><description>d</description>"
                f"<item><title>Story {n}</title><link>https://site{n}.example/story</link>"
                f"<guid>story-{n}</guid><description>&lt;p&gt;Body of story {n}.&lt;/p&gt;</description></item>"
                "</channel></rss>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def write_config(folder: Path, port: int, sources: int, hosts: int, concurrency: int) -> Path:
    lines = [
        'data_dir = "data"', 'output_dir = "out"', "allow_private_networks = true",
        f"concurrency = {concurrency}", "",
    ]
    for i in range(sources):
        host = f"127.0.0.{1 + i % hosts}"
        lines += ["[[sources]]", f'name = "s{i}"', f'url = "http://{host}:{port}/feed/{i}"', f'category = "c{i % 10}"', ""]
    path = folder / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.1)
    ap.add_argument("--hosts", type=int, default=50, help="distinct loopback hosts the sources are spread over")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args()

    server = ThreadingHTTPServer(("0.0.0.0", 0), make_handler(args.delay))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    rows = []
    try:
        for conc in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = write_config(Path(tmp), port, args.sources, args.hosts, conc)
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "poll"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, timeout=600)
                wall = time.perf_counter() - start
                failed = proc.stderr.count("failed")
                ideal = args.sources * args.delay / conc
                rows.append({"concurrency": conc, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
                             "ratio": round(wall / ideal, 2), "exit": proc.returncode, "failed_sources": failed})
                print(f"concurrency {conc}: {wall:.2f} s (ideal {ideal:.2f} s), exit {proc.returncode}, {failed} failed", flush=True)
    finally:
        server.shutdown()
        server.server_close()

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "python": platform.python_version(), "sources": args.sources, "delay_s": args.delay, "hosts": args.hosts,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    md = [f"# Poll cycle under latency — {meta['date']}", "",
          f"{args.sources} sources on {args.hosts} loopback hosts, each answer after {args.delay * 1000:.0f} ms; "
          f"{meta['cpus']} CPUs, Python {meta['python']}. `aggregator poll` timed as a whole process "
          "(start-up, fetch, parse, store, posts and publish included).", "",
          "| concurrency | wall s | N × delay ÷ concurrency | ratio | failed |", "| ---: | ---: | ---: | ---: | ---: |"]
    md += [f"| {r['concurrency']} | {r['wall_s']} | {r['ideal_s']} | {r['ratio']} | {r['failed_sources']} |" for r in rows]
    (RESULTS / "latency.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print("\n".join(md))


if __name__ == "__main__":
    main()
