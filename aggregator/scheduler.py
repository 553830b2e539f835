"""The daemon: APScheduler 3.x wiring and signals; no business logic.

One interval job per source (first run at start, staggered a little), each polling that
source through the shared ``Pipeline`` and publishing when something changed. Settings
follow HAZARDS.md: ``misfire_grace_time`` large (the 1 s default silently skips a run that
starts late), ``max_instances=1`` and ``coalesce=True`` (a slow source never runs twice at
once nor catches up in a burst), jitter so sources due together spread out.
SIGTERM / SIGINT: stop scheduling, let polls in flight finish, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import zlib
from datetime import timedelta

from .config import Config
from .pipeline import Pipeline, utcnow

log = logging.getLogger("aggregator.daemon")

START_STAGGER = 5.0  # seconds over which the first polls are spread


def _poll_job(pipeline: Pipeline, name: str) -> None:
    try:
        cycle = pipeline.poll([name])
    except Exception:  # the daemon stays up; a bug is logged with its traceback, not hidden
        log.exception("poll %s: unexpected error", name)
        return
    for r in cycle.results:
        if r.error:
            log.warning("poll %s: failed (%s): %s", r.source, r.error_kind, r.error)
        elif r.not_modified:
            log.info("poll %s: not modified", r.source)
        else:
            log.info(
                "poll %s: %d new, %d updated, %d unchanged, %d duplicates%s",
                r.source, r.new, r.updated, r.unchanged, r.duplicates,
                f"; published {len(cycle.published)} files" if cycle.published else "",
            )


def build_scheduler(config: Config, pipeline: Pipeline):
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=config.concurrency)},
        timezone="UTC",
    )
    start = utcnow()
    for source in config.sources:
        # A stable per-source offset spreads the first polls without randomness in tests.
        offset = (zlib.crc32(source.name.encode()) % 1000) / 1000 * START_STAGGER
        scheduler.add_job(
            _poll_job,
            IntervalTrigger(seconds=source.interval, jitter=max(1, source.interval // 10)),
            args=(pipeline, source.name),
            id=f"poll:{source.name}",
            name=f"poll {source.name}",
            next_run_time=start + timedelta(seconds=offset),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=source.interval,
        )
    return scheduler


def run_daemon(config: Config) -> None:
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("received %s: finishing polls in flight, then exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Pipeline(config) as pipeline:
        scheduler = build_scheduler(config, pipeline)
        scheduler.start()
        log.info("aggregator running: %d sources, output in %s", len(config.sources), config.output_dir)
        if not config.sources:
            log.warning("no sources configured in %s: add one with 'aggregator add-source'", config.path)
        while not stop.wait(1.0):
            pass
        scheduler.shutdown(wait=True)
    log.info("aggregator stopped")
