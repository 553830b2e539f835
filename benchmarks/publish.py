"""Publishing alone: full rebuild, incremental publish, and a publish where nothing changed.

    python benchmarks/publish.py                      # 33 sources x 50 articles: 100 feeds x 50 items
    python benchmarks/publish.py --sources 200 --items 50

The database is filled through the real ``Store.apply`` with synthetic articles whose
body, title, guid and link lengths follow the distribution measured on the shared corpus
(``dedup_scale.Synth``). Every source has its own category and channel, so the published
set is 1 "all" feed + S category + S source + S channel feeds (S = 33: 100 feeds), each
holding ``--items`` articles in its current document; the "all" feed also gets its archive
pages. Each feed is written as RSS, Atom and JSON Feed.

Measured in this process with ``Pipeline.publish`` (the code the daemon and the CLI run):

1. first publish into an empty folder (plan + render + validate + write every page);
2. ``--rebuild`` with nothing changed (every page rendered and validated, no file written);
3. nothing changed (signatures equal: nothing rendered, nothing written);
4. incremental: one new article in one source, then publish;

and, as a whole process, ``aggregator publish`` with nothing changed (start-up included).
The four cases run ``--repeat`` times (default 3) from the same freshly filled database;
each figure is the minimum over the repeats (wall and CPU separately). CPU is this
process's (``time.process_time``, all its threads) and, apart, that of the pipeline's
worker processes, where a large publish renders RSS and Atom.
The first publish also writes the articles' post files the fill left pending (the
pipeline owes them before it publishes), so it is not a feeds-only figure.
Writes ``benchmarks/results/publish.json`` and ``.md``. No network.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import dedup_scale

from aggregator.config import load_config
from aggregator.models import Source
from aggregator.pipeline import Pipeline, article_uid
from aggregator.publish.posts import post_name
from aggregator.store import Store


def write_config(folder: Path, sources: int) -> Path:
    lines = ['data_dir = "data"', 'output_dir = "out"', 'base_url = "https://feeds.example.org/"',
             'site_title = "bench"', "items_per_feed = 50", ""]
    for k in range(sources):
        lines += ["[[sources]]", f'name = "source-{k:04d}"', f'url = "https://www.site{k}.example/feed"',
                  f'category = "cat-{k:04d}"', f'channel = "chan-{k:04d}"', 'interval = "15m"', ""]
    path = folder / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def fill(config, items: int, synth: dedup_scale.Synth) -> int:
    """``items`` articles per source through the real Store.apply; returns how many."""
    sources = {s.name: s for s in config.sources}
    synth.sources = [Source(name=s.name, url=s.url, category=s.category, channel=s.channel, interval=s.interval)
                     for s in config.sources] * (dedup_scale.N_SOURCES // len(config.sources) + 1)
    total = 0
    with Store(config.db_path) as store:
        for k, src in enumerate(config.sources):
            drafts = []
            for j in range(items):
                item = synth.item(k * 100_000 + j, fp_share=0.0, source=k)
                d = dedup_scale.draft_of(synth, item)
                drafts.append(replace(d, channel=sources[d.source].channel))
            result = store.apply(drafts, now=dedup_scale.NOW, name_post=post_name, uid_of=article_uid)
            total += len(result.new)
    return total


def timed(fn) -> tuple[float, float, object]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def workers_cpu(pipeline: Pipeline) -> float:
    """CPU seconds the pipeline's worker processes have used so far (a large publish
    renders RSS and Atom there). Read from /proc: they are the forkserver's children, so
    no rusage of ours ever counts them; 0 where /proc is not there."""
    pool = getattr(pipeline, "_pool", None)  # private: a benchmark may look
    total = 0.0
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def run_cases(config, rows: dict[str, dict]) -> None:
    """The four in-process cases on a freshly filled database; ``rows`` keeps, per case,
    the minimum wall and CPU seconds seen so far."""
    with Pipeline(config, clock=lambda: dedup_scale.NOW) as pipeline:
        def run(label: str, **kw) -> None:
            before = workers_cpu(pipeline)
            wall, cpu, _ = timed(lambda: pipeline.publish(posts="none", **kw))
            r = pipeline.last_publish
            row = {"case": label, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                   "workers_cpu_s": round(workers_cpu(pipeline) - before, 3),
                   "pages_rendered": r.rendered, "pages_kept": r.kept, "files_written": len(r.written),
                   "refused": len(r.failed)}
            if label in rows:
                for key in ("wall_s", "cpu_s", "workers_cpu_s"):
                    row[key] = min(row[key], rows[label][key])
            rows[label] = row

        run("first publish (empty folder)")
        run("--rebuild, nothing changed", force=True)
        run("nothing changed")
        synth = dedup_scale.Synth(seed=7)
        synth.sources = [Source(name=s.name, url=s.url, category=s.category, channel=s.channel,
                                interval=s.interval) for s in config.sources] * 1000
        item = synth.item(999_999_999, fp_share=0.0, source=0)
        draft = dedup_scale.draft_of(synth, item)
        draft = replace(draft, channel=config.sources[0].channel, date=dedup_scale.NOW + timedelta(minutes=1))
        with Store(config.db_path) as store:
            store.apply([draft], now=dedup_scale.NOW, name_post=post_name, uid_of=article_uid)
        run("one new article")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sources", type=int, default=33)
    ap.add_argument("--items", type=int, default=50, help="articles per source")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the four cases; the minimum is reported")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results/ alone")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="aggregator-publish-bench-") as tmp:
        folder = Path(tmp)
        config = load_config(write_config(folder, args.sources))
        t0 = time.perf_counter()
        articles = fill(config, args.items, dedup_scale.Synth(seed=6))
        fill_s = time.perf_counter() - t0
        filled = folder / "filled"
        shutil.copytree(config.db_path.parent, filled)
        rows: dict[str, dict] = {}
        for _ in range(args.repeat):
            shutil.rmtree(config.output_dir, ignore_errors=True)
            shutil.rmtree(config.db_path.parent)
            shutil.copytree(filled, config.db_path.parent)
            run_cases(config, rows)
        plan_pages = rows["first publish (empty folder)"]["pages_rendered"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(2):  # the first run writes the post files the in-process runs left out
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config.path), "publish"],
                                  capture_output=True, text=True, env=env, timeout=600, check=False)
            cli_s = time.perf_counter() - t0
            if proc.returncode != 0:
                raise SystemExit(f"aggregator publish failed: {proc.stderr}")
        files = sum(1 for p in config.output_dir.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in config.output_dir.rglob("*") if p.is_file())

    feeds = 1 + 3 * args.sources
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "sources": args.sources, "articles": articles, "feeds": feeds, "pages": plan_pages,
        "files": files, "output_bytes": size, "fill_s": round(fill_s, 1), "repeat": args.repeat,
        "cases": list(rows.values()),
        "cli_nothing_changed_s": round(cli_s, 3),
    }
    lines = [
        (f"Publish: {args.sources} sources, {articles:,} articles -> {feeds} feeds x {args.items} items "
         f"({plan_pages} pages incl. archives, {files} files, {size / 1e6:.1f} MB), "
         f"Python {platform.python_version()}, {os.cpu_count()} CPUs; minimum of {args.repeat} runs"),
        "",
        "| case | wall s | CPU s | workers' CPU s | pages rendered | pages unchanged | files written |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {r['case']} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['workers_cpu_s']:.3f} | {r['pages_rendered']}"
              f" | {r['pages_kept']} | {r['files_written']} |" for r in rows.values()]
    lines += ["", f"`aggregator publish` as a whole process, nothing changed: {cli_s:.2f} s"]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "publish.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "publish.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
