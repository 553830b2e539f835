"""The daemon: APScheduler 3.x wiring and signals; no business logic.

One job per source (first run at start, staggered a little, or at the next poll time
stored in the database when that is later), each polling that source through the shared
``Pipeline``, publishing when something changed, and moving itself to the next poll time
the pipeline decided. Settings
follow HAZARDS.md: ``misfire_grace_time`` large (the 1 s default silently skips a run that
starts late), ``max_instances=1`` and ``coalesce=True`` (a slow source never runs twice at
once nor catches up in a burst); jitter comes from ``schedule.next_poll``.
SIGTERM / SIGINT: stop scheduling, let polls in flight finish, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import zlib
from datetime import datetime, timedelta

from .config import Config
from .pipeline import Pipeline, utcnow
from .schedule import describe

log = logging.getLogger("aggregator.daemon")

START_STAGGER = 5.0  # seconds over which the first polls are spread


def _poll_job(scheduler, pipeline: Pipeline, name: str) -> None:
    """Poll one source if it is due, then move its job to the next poll time that the
    pipeline stored (interval, cache hints, backoff, Retry-After — see ``schedule``)."""
    try:
        cycle = pipeline.poll([name], due_only=True)
    except Exception:  # the daemon stays up; a bug is logged with its traceback, not hidden
        log.exception("poll %s: unexpected error", name)
        return
    for r in cycle.results:
        if r.gone:
            log.warning("poll %s: gone (HTTP 410); no longer polled", r.source)
            _remove(scheduler, r.source)
            continue
        if r.skipped:
            log.debug("poll %s: skipped (%s)", r.source, r.skipped)
        elif r.error:
            log.warning("poll %s: failed (%s): %s; next try %s", r.source, r.error_kind, r.error, describe(r.next_poll, utcnow()))
        elif r.not_modified:
            log.info("poll %s: not modified; next %s", r.source, describe(r.next_poll, utcnow()))
        else:
            log.info(
                "poll %s: %d new, %d updated, %d unchanged, %d duplicates%s; next %s",
                r.source, r.new, r.updated, r.unchanged, r.duplicates,
                f"; published {len(cycle.published)} files" if cycle.published else "",
                describe(r.next_poll, utcnow()),
            )
        if r.next_poll is not None:
            _reschedule(scheduler, r.source, r.next_poll)


def _job_id(name: str) -> str:
    return f"poll:{name}"


def _reschedule(scheduler, name: str, when: datetime) -> None:
    from apscheduler.jobstores.base import JobLookupError

    try:
        scheduler.modify_job(_job_id(name), next_run_time=when)
    except JobLookupError:  # removed meanwhile (shutdown)
        pass


def _remove(scheduler, name: str) -> None:
    from apscheduler.jobstores.base import JobLookupError

    try:
        scheduler.remove_job(_job_id(name))
    except JobLookupError:
        pass


def build_scheduler(config: Config, pipeline: Pipeline):
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from .store import Store

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=config.concurrency)},
        timezone="UTC",
    )
    start = utcnow()
    with Store(config.db_path) as store:
        states = store.source_states()
    for source in config.sources:
        state = states.get(source.name)
        if state is not None and state.state == "gone" and state.url == source.url:
            log.info("source %s is gone (HTTP 410); not scheduled", source.name)
            continue
        # A stable per-source offset spreads the first polls without randomness in tests;
        # a stored next poll (a backoff, a Retry-After) is honoured across restarts.
        offset = (zlib.crc32(source.name.encode()) % 1000) / 1000 * START_STAGGER
        first = start + timedelta(seconds=offset)
        if state is not None and state.next_poll and state.next_poll > first and state.url == source.url:
            first = state.next_poll
        scheduler.add_job(
            _poll_job,
            # The trigger is the fallback cadence; after every run the job is moved to the
            # next poll time the pipeline decided and stored.
            IntervalTrigger(seconds=source.interval),
            args=(scheduler, pipeline, source.name),
            id=_job_id(source.name),
            name=f"poll {source.name}",
            next_run_time=first,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=source.interval,
        )
    return scheduler


def run_daemon(config: Config, *, serve: tuple[str, int] | None = None) -> None:
    """Poll until SIGTERM/SIGINT. ``serve`` = (host, port) also serves the output folder
    (``aggregator.serve``) from a thread of this process."""
    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        log.info("received %s: finishing polls in flight, then exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    if serve is not None:
        from .serve import ServerThread

        server = ServerThread(config, host=serve[0], port=serve[1])
        server.start()
        log.info("serving %s on http://%s:%d/", config.output_dir, serve[0], server.port)
    with Pipeline(config) as pipeline:
        scheduler = build_scheduler(config, pipeline)
        scheduler.start()
        log.info("aggregator running: %d sources, output in %s", len(config.sources), config.output_dir)
        if not config.sources:
            log.warning("no sources configured in %s: add one with 'aggregator add-source'", config.path)
        while not stop.wait(1.0):
            pass
        scheduler.shutdown(wait=True)
    if server is not None:
        server.stop()
    log.info("aggregator stopped")
