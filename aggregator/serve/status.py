"""What the poller's records say: ``/healthz`` (``health``) and ``/metrics`` (``StatsCollector``).

Owns: the polling-interval arithmetic the server needs (``shortest_interval``, also behind
``files.max_age``; ``health_window``), the pure health decision, reading one ``Stats``
snapshot per request from the database read-only (``read_stats``), and its Prometheus
exposition. Must not: write (a missing database is not created), read the clock (``now``
is passed in), or judge individual sources failing as unhealthy — that is what
``aggregator_source_up`` is for (see the ``aggregator.serve`` docstring).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from aggregator.config import Config, format_interval
from aggregator.errors import AggregatorError
from aggregator.models import Stats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

HEALTH_GRACE = 60  # seconds added to twice the shortest interval


def shortest_interval(config: Config) -> int:
    """Seconds between polls of the most frequently polled source."""
    return min((s.interval for s in config.sources), default=config.default_interval)


def health_window(config: Config) -> int:
    """How old the last poll cycle may be, and how long a source may be overdue, in
    seconds, before /healthz says 503."""
    return 2 * shortest_interval(config) + HEALTH_GRACE


def health(stats: Stats | None, config: Config, now: datetime) -> tuple[bool, str]:
    """(healthy, one-line reason); ``stats`` None: no readable database. Unhealthy: no
    cycle yet, or the last one ended more than ``health_window`` ago while a configured,
    not-gone source has been due for longer than that (see the ``aggregator.serve``
    docstring)."""
    if stats is None:
        return False, "no database yet (no poll has run)"
    if stats.last_cycle_at is None:
        return False, "no poll cycle yet"
    window = health_window(config)
    age = (now - stats.last_cycle_at).total_seconds()
    if age <= window:
        return True, "ok"
    # When each configured source is due: its stored next poll time; one without (never
    # polled, or its URL just changed) was due at the latest when the last cycle ran.
    known = {s.name: s for s in stats.sources}
    due = []
    for source in config.sources:
        state = known.get(source.name)
        if state is None or state.state != "gone":
            due.append(((state.next_poll if state else None) or stats.last_cycle_at, source.name))
    if not due or (now - min(due)[0]).total_seconds() <= window:
        return True, "ok"  # every source waits for a later poll time (hints, backoff): nothing missed
    due_at, name = min(due)
    return False, (f"last poll cycle ended {format_interval(int(age))} ago ({stats.last_cycle_at:%Y-%m-%dT%H:%M:%SZ}),"
                   f" more than {format_interval(window)}; {name} due since {due_at:%Y-%m-%dT%H:%M:%SZ}")


# -- reading the database, and /metrics --------------------------------------------------


def read_stats(config: Config, now: datetime) -> tuple[Stats | None, str | None]:
    """(stats, None), or (None, why) when the database is missing or unreadable. A missing
    database is not created: the server never writes."""
    from aggregator.store import Store

    if not config.db_path.is_file():
        return None, "no database yet (no poll has run)"
    try:
        with Store(config.db_path, readonly=True) as store:
            return store.stats(now), None
    except AggregatorError as e:
        return None, f"database unreadable: {e}"


class StatsCollector:
    """A prometheus_client collector over one ``Stats`` snapshot per scrape (no global
    registry: each app has its own). Sources configured but never polled are listed too,
    as ``new`` with zero counts, so a dashboard sees every source from the start."""

    def __init__(self, config: Config, load: Callable[[], tuple[Stats | None, str | None]]):
        self.config = config
        self.load = load

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats, _ = self.load()
        up_db = GaugeMetricFamily("aggregator_database_up", "1 when the database could be read for this scrape.")
        up_db.add_metric([], 1 if stats is not None else 0)
        yield up_db
        polls = CounterMetricFamily("aggregator_polls", "Polls of the source (fetch attempts).", labels=["source"])
        errors = CounterMetricFamily("aggregator_poll_errors", "Failed polls of the source.", labels=["source"])
        up = GaugeMetricFamily("aggregator_source_up", "1 when the source's last poll succeeded (or it is new), 0 when"
                               " failing or gone.", labels=["source"])
        success = GaugeMetricFamily("aggregator_source_last_success_timestamp_seconds",
                                    "Unix time of the source's last successful poll.", labels=["source"])
        by_name = {s.name: s for s in (stats.sources if stats else ())}
        for name in sorted(set(by_name) | {s.name for s in self.config.sources}):
            s = by_name.get(name)
            polls.add_metric([name], s.polls_total if s else 0)
            errors.add_metric([name], s.errors_total if s else 0)
            up.add_metric([name], 1 if s is None or s.state in ("ok", "new") else 0)
            if s is not None and s.last_success is not None:
                success.add_metric([name], s.last_success.timestamp())
        yield from (polls, errors, up, success)
        if stats is None:
            return
        articles = GaugeMetricFamily("aggregator_articles", "Stored articles per category.", labels=["category"])
        for category, n in stats.articles_by_category:
            articles.add_metric([category], n)
        yield articles
        gauges = [
            ("aggregator_articles_total", "Stored articles.", stats.articles_total),
            ("aggregator_articles_last_24h", "Articles first seen in the last 24 hours.", stats.articles_last_24h),
            ("aggregator_last_cycle_timestamp_seconds", "Unix time the last poll cycle ended.",
             stats.last_cycle_at.timestamp() if stats.last_cycle_at else None),
            ("aggregator_last_cycle_duration_seconds", "Seconds the last poll cycle took.", stats.last_cycle_seconds),
            ("aggregator_publish_duration_seconds", "Seconds the last publish took.", stats.last_publish_seconds),
            ("aggregator_published_pages", "Output pages published and current.", stats.published_pages),
            ("aggregator_publish_errors", "Output pages whose last publish was refused by validation.",
             len(stats.publish_errors)),
        ]
        for name, help_text, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
