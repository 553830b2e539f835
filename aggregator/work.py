"""The CPU-bound middle of the pipeline, run in worker processes: bytes -> drafts.

Owns: running parse + normalize (+ clean) for one fetched body inside a process pool whose
workers have an address-space limit, so a hostile feed that slips past the parser's guards
costs one worker, not the daemon (HAZARDS.md: feedparser's loose parser can expand entities
without bound). Both cores are used for parsing, which is the bulk of a cold cycle.
Must not: touch the database, the clock or files. Everything crossing the process boundary
is a plain picklable value; errors come back as values (``Processed.error``), never raised
across it.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import AggregatorError, ParseError
from .models import ArticleDraft, Source

WORKER_MEMORY_LIMIT = 2 * 1024**3  # bytes of address space per worker process


@dataclass(frozen=True)
class Processed:
    source: str
    title: str | None = None
    ttl_minutes: int | None = None  # the feed's own refresh hints, for the poll scheduler
    update_period: str | None = None
    update_frequency: int | None = None
    drafts: tuple[ArticleDraft, ...] = ()
    problems: tuple[str, ...] = ()  # entries skipped, parser warnings
    error: str | None = None
    error_kind: str | None = None


def process_feed(
    body: bytes, headers: tuple[tuple[str, str], ...], url: str, source: Source, now: datetime, future_skew: timedelta,
    iframe_hosts: frozenset[str],
) -> Processed:
    """Parse one body and normalize its entries. Never raises for bad input."""
    from .normalize import normalize_entries
    from .parse import parse_feed

    try:
        feed = parse_feed(body, headers, url, source=source.name)
    except AggregatorError as e:
        return Processed(source=source.name, error=e.message, error_kind=e.kind)
    except MemoryError:
        return Processed(source=source.name, error="feed too large to parse within the worker's memory limit", error_kind=ParseError.kind)
    drafts, problems = normalize_entries(feed.entries, source, now=now, future_skew=future_skew, iframe_hosts=iframe_hosts)
    return Processed(
        source=source.name,
        title=feed.title,
        ttl_minutes=feed.ttl_minutes,
        update_period=feed.update_period,
        update_frequency=feed.update_frequency,
        drafts=tuple(drafts),
        problems=tuple(problems) + tuple(f"{source.name}: {w}" for w in feed.warnings),
    )


def _limit_worker() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = WORKER_MEMORY_LIMIT if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_LIMIT, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
        pass


def make_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """A pool of parse workers. ``forkserver``: workers fork from a clean, single-threaded
    server that has already imported the parsing stack, so they start fast and never inherit
    a lock held by one of the daemon's threads (fork from a threaded process can deadlock)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["aggregator.work", "aggregator.parse", "aggregator.normalize"])
    return ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 2, mp_context=ctx, initializer=_limit_worker)
