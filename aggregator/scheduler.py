"""The daemon: APScheduler 3.x wiring, signals, systemd notifications; no business logic.

One job per source (first run at start, staggered a little, or at the next poll time
stored in the database when that is later), each polling that source through the shared
``Pipeline``, publishing when something changed, and moving itself to the next poll time
the pipeline decided. Settings follow HAZARDS.md: ``misfire_grace_time`` large (the 1 s
default silently skips a run that starts late), ``max_instances=1`` and ``coalesce=True``
(a slow source never runs twice at once nor catches up in a burst); jitter comes from
``schedule.next_poll``.

Life of ``aggregator run`` (``Daemon.run``):
1. take the lock ``<data_dir>/aggregator.pid`` (a second daemon on the same database
   exits with a message naming the first);
2. catch up: remove temporary files an interrupted write left, write every post file the
   database has and the folder lacks, publish (only changed pages are rendered) — so a
   ``kill -9`` at any moment costs nothing: the database is written first, files are
   rebuilt from it;
3. start the scheduler (and the HTTP server with ``--serve``), then ``READY=1``;
4. main loop: ``WATCHDOG=1`` every half ``WatchdogSec`` while the scheduler runs;
   ``STATUS=`` after each poll; SIGHUP re-reads config.toml (added sources start,
   removed ones stop, changed ones are rescheduled; an invalid file is refused with a
   logged error and the running config kept);
5. SIGTERM / SIGINT: ``STOPPING=1``, no new polls, polls in flight finish (each bounded
   by the fetch deadline) and publish, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import zlib
from datetime import datetime, timedelta

from .config import Config, load_config
from .errors import AggregatorError
from .notify import Notifier
from .pipeline import Pipeline, utcnow
from .schedule import describe

log = logging.getLogger("aggregator.daemon")

START_STAGGER = 5.0  # seconds over which the first polls are spread
STOP_GRACE = 25.0  # seconds a stop waits beyond the fetch deadline for parse, store, publish


class InFlight:
    """Counts the polls running, so that a stop can wait for them *before* shutting the
    scheduler down: APScheduler's ``shutdown(wait=True)`` holds its job-store lock while
    it waits, and a finishing poll needs that lock to move its job (``modify_job``) — a
    deadlock that kept a SIGTERM'd daemon alive until systemd's SIGKILL."""

    def __init__(self, on_done=None):
        self._cond = threading.Condition()
        self._count = 0
        self._stopping = False
        self._on_done = on_done

    def start(self) -> bool:
        """False once stopping: a poll queued before the stop does not start."""
        with self._cond:
            if self._stopping:
                return False
            self._count += 1
            return True

    def done(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()
        if self._on_done is not None:
            self._on_done()

    def stop_and_wait(self, timeout: float) -> bool:
        """No new polls; wait for the running ones. False when some were still running."""
        with self._cond:
            self._stopping = True
            return self._cond.wait_for(lambda: self._count == 0, timeout)


def _poll_job(scheduler, pipeline: Pipeline, name: str, inflight: InFlight | None = None) -> None:
    """Poll one source if it is due, then move its job to the next poll time that the
    pipeline stored (interval, cache hints, backoff, Retry-After — see ``schedule``)."""
    if inflight is not None and not inflight.start():
        return
    try:
        _poll_and_reschedule(scheduler, pipeline, name)
    finally:
        if inflight is not None:
            inflight.done()


def _poll_and_reschedule(scheduler, pipeline: Pipeline, name: str) -> None:
    if pipeline.config.source(name) is None:  # removed by a reload while queued
        _remove(scheduler, name)
        return
    try:
        cycle = pipeline.poll([name], due_only=True)
    except Exception:  # the daemon stays up; a bug is logged with its traceback, not hidden
        log.exception("poll %s: unexpected error", name, extra={"source": name})
        return
    for r in cycle.results:
        if r.gone:
            log.warning("poll %s: gone (HTTP 410); no longer polled", r.source, extra={"source": r.source})
            _remove(scheduler, r.source)
            continue
        if r.skipped:
            log.debug("poll %s: skipped (%s)", r.source, r.skipped, extra={"source": r.source})
        elif r.error:
            log.warning("poll %s: failed (%s): %s; next try %s", r.source, r.error_kind, r.error,
                        describe(r.next_poll, utcnow()), extra={"source": r.source})
        elif r.not_modified:
            log.info("poll %s: not modified; next %s", r.source, describe(r.next_poll, utcnow()),
                     extra={"source": r.source})
        else:
            log.info(
                "poll %s: %d new, %d updated, %d unchanged, %d duplicates%s; next %s",
                r.source, r.new, r.updated, r.unchanged, r.duplicates,
                f"; published {len(cycle.published)} files" if cycle.published else "",
                describe(r.next_poll, utcnow()), extra={"source": r.source},
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


def _add_job(scheduler, pipeline: Pipeline, source, first: datetime, inflight: InFlight | None = None) -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler.add_job(
        _poll_job,
        # The trigger is the fallback cadence; after every run the job is moved to the
        # next poll time the pipeline decided and stored.
        IntervalTrigger(seconds=source.interval),
        args=(scheduler, pipeline, source.name, inflight),
        id=_job_id(source.name),
        name=f"poll {source.name}",
        next_run_time=first,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=source.interval,
        replace_existing=True,
    )


def _first_poll(source, state, start: datetime) -> datetime | None:
    """When a source's job first runs: soon (a stable per-source offset spreads the first
    polls without randomness in tests), or at the stored next poll (a backoff, a
    Retry-After) when that is later; None for a source that is gone (HTTP 410)."""
    if state is not None and state.state == "gone" and state.url == source.url:
        return None
    offset = (zlib.crc32(source.name.encode()) % 1000) / 1000 * START_STAGGER
    first = start + timedelta(seconds=offset)
    if state is not None and state.next_poll and state.next_poll > first and state.url == source.url:
        first = state.next_poll
    return first


def build_scheduler(config: Config, pipeline: Pipeline, inflight: InFlight | None = None):
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    from .store import Store

    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=config.concurrency)},
        timezone="UTC",
    )
    start = utcnow()
    with Store(config.db_path) as store:
        states = store.source_states()
    for source in config.sources:
        first = _first_poll(source, states.get(source.name), start)
        if first is None:
            log.info("source %s is gone (HTTP 410); not scheduled", source.name, extra={"source": source.name})
            continue
        _add_job(scheduler, pipeline, source, first, inflight)
    return scheduler


def status_line(config: Config, now: datetime) -> str:
    """The one-line summary systemd shows (``STATUS=``) and ``status`` prints."""
    from .store import Store

    with Store(config.db_path) as store:
        stats = store.stats(now)
    states: dict[str, int] = {}
    configured = {s.name for s in config.sources}
    seen = set()
    for s in stats.sources:
        if s.name in configured:
            states[s.state] = states.get(s.state, 0) + 1
            seen.add(s.name)
    if configured - seen:
        states["new"] = states.get("new", 0) + len(configured - seen)
    health = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no sources"
    return (f"{len(config.sources)} sources ({health}); {stats.articles_total} articles, "
            f"{stats.articles_last_24h} in 24 h")


class Daemon:
    """``aggregator run``: see the module docstring for its life."""

    def __init__(self, config: Config, *, serve: tuple[str, int] | None = None,
                 notifier: Notifier | None = None):
        self.config = config
        self.serve = serve
        self.notifier = notifier or Notifier()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._status_due = threading.Event()

    # -- signals (handlers only set flags: the main loop does the work) ---------------

    def _on_stop(self, signum, frame):  # noqa: ARG002
        log.info("received %s: finishing polls in flight, then exiting", signal.Signals(signum).name)
        self._stop.set()
        self._wake.set()

    def _on_hup(self, signum, frame):  # noqa: ARG002
        self._reload.set()
        self._wake.set()

    def _polled(self) -> None:
        self._status_due.set()
        self._wake.set()

    # -- life --------------------------------------------------------------------------

    def run(self) -> None:
        from .daemon import DaemonLock

        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)
        with DaemonLock(self.config.data_dir):
            self._run_locked()
        log.info("aggregator stopped")

    def _run_locked(self) -> None:
        config = self.config
        server = None
        with Pipeline(config) as pipeline:
            self.pipeline = pipeline
            try:
                written = pipeline.catch_up()
                if written:
                    log.info("catch-up: %d files written from the database", len(written))
            except AggregatorError as e:  # an unwritable folder: polling goes on, publishing retries
                log.error("catch-up at start failed: %s", e)
            if self.serve is not None:
                from .serve import ServerThread

                server = ServerThread(config, host=self.serve[0], port=self.serve[1])
                server.start()
                log.info("serving %s on http://%s:%d/", config.output_dir, self.serve[0], server.port)
            self.inflight = InFlight(self._polled)
            scheduler = build_scheduler(config, pipeline, self.inflight)
            self.scheduler = scheduler
            scheduler.start()
            log.info("aggregator running: %d sources, output in %s", len(config.sources), config.output_dir)
            if not config.sources:
                log.warning("no sources configured in %s: add one with 'aggregator add-source'", config.path)
            self.notifier.ready(self._status())
            try:
                self._loop(scheduler)
            finally:
                self.notifier.stopping()
                scheduler.pause()
                # each poll is bounded by the fetch deadline, then parse, store and publish
                if not self.inflight.stop_and_wait(self.config.timeout + STOP_GRACE):
                    log.warning("stopping with polls still running; their sources are polled again next time")
                scheduler.shutdown(wait=False)
                if server is not None:
                    server.stop()

    def _loop(self, scheduler) -> None:
        from apscheduler.schedulers.base import STATE_RUNNING

        beat = self.notifier.watchdog_interval
        tick = min(beat, 5.0) if beat else 5.0
        last_beat = 0.0
        while not self._stop.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if self._status_due.is_set():
                self._status_due.clear()
                self.notifier.status(self._status())
            now = time.monotonic()
            if beat and now - last_beat >= beat and scheduler.state == STATE_RUNNING:
                self.notifier.watchdog()
                last_beat = now

    def _status(self) -> str:
        try:
            return status_line(self.config, utcnow())
        except AggregatorError as e:
            return f"database unreadable: {e}"

    def reload(self) -> bool:
        """Re-read config.toml (SIGHUP). Added sources start polling, removed ones stop,
        changed ones are rescheduled with their new settings. An invalid file is refused:
        logged, and the running config kept. Settings that need a restart (data_dir,
        output_dir, concurrency, the server's address) are reported, not applied."""
        self.notifier.reloading()
        try:
            new = load_config(self.config.path)
        except AggregatorError as e:
            log.error("reload refused, keeping the running config: %s", e)
            self.notifier.ready(f"reload refused: {e}; " + self._status())
            return False
        old = self.config
        for key in ("data_dir", "output_dir", "concurrency"):
            if getattr(new, key) != getattr(old, key):
                log.warning("reload: %s changed; it takes effect at the next restart", key)
                new = _keep(new, key, getattr(old, key))
        before = {s.name: s for s in old.sources}
        after = {s.name: s for s in new.sources}
        self.pipeline.reconfigure(new)
        self.config = new
        from .store import Store

        with Store(new.db_path) as store:
            states = store.source_states()
        start = utcnow()
        for name in before.keys() - after.keys():
            _remove(self.scheduler, name)
            log.info("reload: source %s removed; no longer polled", name, extra={"source": name})
        for name, source in after.items():
            if before.get(name) == source:
                continue
            first = _first_poll(source, states.get(name), start)
            if first is None:
                continue
            _add_job(self.scheduler, self.pipeline, source, first, self.inflight)
            log.info("reload: source %s %s", name, "changed" if name in before else "added", extra={"source": name})
        log.info("reload: %d sources", len(new.sources))
        self.notifier.ready(self._status())
        return True


def _keep(config: Config, key: str, value):
    import dataclasses

    return dataclasses.replace(config, **{key: value})


def run_daemon(config: Config, *, serve: tuple[str, int] | None = None) -> None:
    """Poll until SIGTERM/SIGINT. ``serve`` = (host, port) also serves the output folder
    (``aggregator.serve``) from a thread of this process."""
    Daemon(config, serve=serve).run()
