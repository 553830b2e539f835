"""Stage order and per-source error capture. One poll cycle, as pseudocode:

    for each source, concurrently (threads, ``concurrency`` at a time):
        state   = store.source_state(source)
        fetched = fetch(source.url, state.validators)       # NotModified -> done, nothing written
        if sha256(fetched.body) == state.body_hash: done    # same bytes as last time
        drafts  = worker: normalize(parse(fetched.body))    # process pool; errors come back as values
        result  = store.apply(drafts)                       # dedup: new / update / unchanged / duplicate
        write a post file for every new or updated article
        any error on the way -> store.record_failure(source, message); the others go on
    record the cycle's end and duration (status, /healthz)
    if anything changed (or the published set's settings did): publish — plan every feed
        and page, render and validate only pages whose signature changed, ping the hub

Owns: the order of stages, concurrency, and turning any expected error into that source's
recorded failure. Must not: make decisions (``decide``), write SQL (``store``), or build
output (``publish``). The clock is read in one place (``utcnow``) and passed down.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import AggregatorError, ConfigError, NotAFeedError, ParseError, PublishError
from .models import ArticleDraft, CycleResult, Fetched, NotModified, Source, SourceResult
from .rsshub import is_route
from .schedule import Outcome, describe, next_poll
from .store import ArticleReader, SourceState, Store, to_iso

if TYPE_CHECKING:  # the worker pool is imported on first parse: a warm (304) cycle never needs it
    from .work import Processed

log = logging.getLogger("aggregator")

PARSE_TIMEOUT = 120.0  # seconds one body may spend in a worker before its source fails
UNCHANGED_BATCH = 200  # 304s recorded per transaction
MIN_BODIES_IN_FLIGHT = 16  # fetched bodies waiting for a parse worker, at least
FULLTEXT_MAX_PAGES = 50  # article pages fetched for one source in one poll (a first poll of a big feed)
FULLTEXT_BUDGET = 180.0  # seconds one source's article pages may take in one poll
EXTRACT_TIMEOUT = 60.0  # seconds one page may spend in a worker being extracted
PAGE_CACHE = timedelta(days=7)  # an extracted page is reused this long (same link in another source, an edit)


def utcnow() -> datetime:
    """The one place the pipeline reads the clock (to the second: stored times and the
    published files stay byte-stable)."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def article_uid(draft: ArticleDraft) -> str:
    """A new article's permanent id: its source and upstream identity."""
    return hashlib.sha256(f"{draft.source}\x00{draft.guid}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class _Outcome:
    """What a fetch thread hands back to the cycle: a body to process, or a final result."""

    source: Source
    fetched: Fetched | None = None
    not_modified: NotModified | None = None
    same_body: bool = False
    error: AggregatorError | None = None
    served_by: str | None = None  # the RSSHub instance that answered an rsshub:// route


class _Done:
    """A fetch thread's finished call, read like a Future's ``result()`` by the cycle."""

    __slots__ = ("_value", "_error")

    def __init__(self, value: Any, error: BaseException | None):
        self._value = value
        self._error = error

    @classmethod
    def of(cls, call: Callable[..., Any], *args: Any) -> _Done:
        try:
            return cls(call(*args), None)
        except BaseException as e:  # raised again on the cycle's thread, as a Future would
            return cls(None, e)

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Pending:
    """A fetched body on its way to the store: parsing (``processed`` None), then, for a
    source with full text, its article pages being fetched. Mutable, owned by the cycle's
    loop on the main thread."""

    __slots__ = ("source", "fetched", "future", "processed")

    def __init__(self, source: Source, fetched: Fetched, future: Future):
        self.source, self.fetched, self.future = source, fetched, future
        self.processed: Processed | None = None


@dataclass(frozen=True)
class _Finished:
    result: SourceResult
    posts: tuple[str, ...] = ()


class Pipeline:
    """Long-lived runner: one fetcher and one worker pool, shared by every cycle."""

    def __init__(self, config: Config, *, clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.clock = clock
        self._fetcher = None
        self._pool = None
        self._pool_lock = threading.Lock()
        self.policy = config.poll_policy()
        self.publish_lock = threading.Lock()  # feedgen changes the process locale: one at a time
        self.last_publish = None  # SiteResult of the last publish, for the CLI's summary
        self._retired: list = []  # fetchers replaced by a reload, closed with the pipeline

    # -- resources, created on first need (a warm 304 cycle never imports the parsers) --

    @property
    def fetcher(self):
        if self._fetcher is None:
            from .fetch import Fetcher

            self._fetcher = Fetcher(
                self.config.fetch_limits(), host_limits=(self.config.host_concurrency, self.config.host_delay)
            )
        return self._fetcher

    def _workers(self):
        """The worker processes (parse + normalize + clean, and large publishes)."""
        with self._pool_lock:
            if self._pool is None:
                from .work import make_pool

                self._pool = make_pool()
            return self._pool

    def _submit(self, body: bytes, headers, url: str, source: Source) -> Future:
        from .work import process_feed

        return self._workers().submit(process_feed, body, headers, url, source, self.clock(), self.config.future_skew,
                                      self.config.iframe_hosts)

    def _reset_pool(self) -> None:
        """A worker stuck past PARSE_TIMEOUT cannot be cancelled alone: end the pool."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)

    def reconfigure(self, config: Config) -> None:
        """A reloaded config (SIGHUP): polls started from now on use it; polls in flight
        finish with what they started with. The fetcher is rebuilt only when its limits
        changed (the old one is closed with the pipeline)."""
        old = self.config
        self.config = config
        self.policy = config.poll_policy()
        if (config.fetch_limits(), config.host_concurrency, config.host_delay) != (
                old.fetch_limits(), old.host_concurrency, old.host_delay) and self._fetcher is not None:
            self._retired.append(self._fetcher)
            self._fetcher = None

    def close(self) -> None:
        for fetcher in [*self._retired, self._fetcher]:
            if fetcher is not None:
                fetcher.close()
        self._retired.clear()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one cycle ------------------------------------------------------------------

    def select(self, names: Sequence[str] | None) -> list[Source]:
        if not names:
            return list(self.config.sources)
        unknown = [n for n in names if self.config.source(n) is None]
        if unknown:
            raise ConfigError(f"{self.config.path}: no source named {', '.join(map(repr, unknown))}")
        return [self.config.source(n) for n in names]

    def poll(
        self,
        names: Sequence[str] | None = None,
        *,
        on_result: Callable[[SourceResult], None] | None = None,
        publish: bool = True,
        due_only: bool = False,
        include_gone: bool = False,
    ) -> CycleResult:
        """One cycle over ``names`` (all sources when empty). ``due_only`` skips sources
        whose next poll time (kept in the database) is still ahead — the daemon's view;
        a gone (410) source is skipped unless ``include_gone``."""
        sources = self.select(names)
        results: list[SourceResult] = []
        posts: list[str] = []
        with Store(self.config.db_path) as store:
            states: dict[str, SourceState] = {}
            todo: list[Source] = []
            now = self.clock()
            started = time.monotonic()
            # one read for a whole cycle, not a transaction (and two file locks) per source
            known = store.source_states() if len(sources) > 16 else None
            for src in sources:
                if known is None:
                    state = store.source_state(src.name)
                else:
                    state = known.get(src.name) or SourceState(name=src.name)
                if state.url and state.url != src.url:
                    # The operator changed the URL in config.toml: a new start for it.
                    store.reset_source(src.name, src.url)
                    state = store.source_state(src.name)
                states[src.name] = state
                if state.state == "gone" and not include_gone:
                    results.append(SourceResult(source=src.name, gone=True, skipped="gone (HTTP 410): no longer polled"))
                elif due_only and state.next_poll and state.next_poll > now:
                    results.append(SourceResult(source=src.name, next_poll=state.next_poll, skipped="not due yet"))
                else:
                    todo.append(src)

            instances = self._instances(store) if any(is_route(s.url) for s in todo) else None
            # At most this many fetched bodies wait for (or are in) the parse workers; the
            # fetch threads wait for a slot, so a cycle over 10,000 sources never holds
            # thousands of bodies in memory at once.
            slots = threading.BoundedSemaphore(max(MIN_BODIES_IN_FLIGHT, 4 * (os.cpu_count() or 1)))

            stopping = threading.Event()  # the cycle's loop failed: fetch nothing more

            def fetch_one(source: Source) -> _Outcome | None:
                state = states[source.name]
                while not slots.acquire(timeout=0.5):
                    if stopping.is_set():  # nobody will release a slot any more
                        return None
                served_by = None
                try:
                    if is_route(source.url):
                        got, served_by = self._fetch_route(source, state, instances)
                    else:
                        got = self.fetcher.fetch(
                            state.moved_to or source.url, state.validators, source=source.name, options=source.options
                        )
                except AggregatorError as e:
                    return _Outcome(source, error=e)
                except BaseException:
                    slots.release()
                    raise
                if isinstance(got, NotModified):
                    return _Outcome(source, not_modified=got, served_by=served_by)
                same = state.body_hash is not None and _body_hash(got.body) == state.body_hash
                return _Outcome(source, fetched=got, same_body=same, served_by=served_by)

            pending: list[_Pending] = []
            unchanged: list[tuple[str, str, dict]] = []  # 304s / same body, recorded in batches

            def finish(block: bool) -> None:
                """Store what the workers have parsed (all of it when ``block``), so storing
                overlaps with the fetches still in flight. Runs on this thread only: one
                writer."""
                for item in [p for p in pending if block or p.future.done()]:
                    state = states[item.source.name]
                    try:
                        if item.processed is None:
                            processed = self._parsed(item.source, item.future)
                            todo = self._fulltext_todo(store, item.source, processed)
                            if todo:  # the article pages first, on a fetch thread
                                cached = store.cached_pages([processed.drafts[i].link for i in todo],
                                                            since=self.clock() - PAGE_CACHE)
                                item.processed = processed
                                item.future = threads.submit(self._full_text, item.source, processed, todo, cached)
                                item.future.add_done_callback(lambda f: events.put((False, f)))
                                continue
                        else:
                            try:
                                processed, pages = item.future.result()
                            except Exception:  # a bug in the full-text path must not cost the feed
                                log.exception("source %s: full text failed; items kept as the feed has them",
                                              item.source.name)
                                processed, pages = item.processed, []
                            if pages:
                                store.save_pages(pages, older_than=self.clock() - PAGE_CACHE)
                        pending.remove(item)
                        result = self._apply(store, state, item.source, item.fetched, processed,
                                             served_by=served[item.source.name])
                    except BaseException:
                        if item in pending:
                            pending.remove(item)
                        slots.release()
                        raise
                    slots.release()
                    if result.posts:
                        posts.extend(result.posts)
                    results.append(result.result)
                    if on_result:
                        on_result(result.result)

            if todo:
                # made here, once: eight threads importing httpx on first use would queue
                # on the import lock instead of fetching
                _ = self.fetcher
            # Fetch threads and parse workers report here when they finish: the loop wakes once
            # per event and looks only at the (bounded) bodies in flight, never at every
            # source's future (waiting on all of them is quadratic at 10,000 sources).
            events: queue.SimpleQueue[tuple[bool, Future | _Done]] = queue.SimpleQueue()
            served: dict[str, str | None] = {}  # the RSSHub instance that answered, per source
            queued: queue.SimpleQueue[Source] = queue.SimpleQueue()
            for s in todo:
                queued.put(s)

            def fetch_all() -> None:
                """One fetch thread: sources from the queue until it is empty (one task per
                thread, not a Future per source: 10,000 Futures were a tenth of a warm cycle)."""
                while True:
                    try:
                        source = queued.get_nowait()
                    except queue.Empty:
                        return
                    events.put((True, _Done.of(fetch_one, source)))

            with ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="fetch") as threads:
                for _ in range(min(self.config.concurrency, len(todo))):
                    threads.submit(fetch_all)
                fetching = len(todo)
                try:
                    while fetching or pending:
                        try:
                            was_fetch, future = events.get(timeout=PARSE_TIMEOUT)
                        except queue.Empty:  # a parse stuck past its limit: finish() times it out
                            finish(block=True)
                            continue
                        if was_fetch:
                            fetching -= 1
                            outcome = future.result()
                            src, state, now = outcome.source, states[outcome.source.name], self.clock()
                            served[src.name] = outcome.served_by
                            before = len(results)
                            if outcome.error is not None:
                                slots.release()
                                results.append(self._failed(store, src, state, outcome.error, now))
                            elif outcome.not_modified is not None or outcome.same_body:
                                slots.release()
                                got = outcome.not_modified or outcome.fetched
                                moved = self._moved(src, state, got.permanent_url)
                                hints = (state.ttl_minutes, state.update_period, state.update_frequency)
                                next_at = self._next(src, now, Outcome("not-modified", headers=got.headers,
                                                                       ttl_minutes=hints[0], update_period=hints[1],
                                                                       update_frequency=hints[2]))
                                # batched: one commit for many 304s (flushed below and at the end)
                                unchanged.append((src.name, src.url, dict(now=now, validators=got.validators,
                                                                          body_hash=None, next_poll=next_at,
                                                                          moved_to=moved, served_by=outcome.served_by)))
                                results.append(SourceResult(source=src.name, not_modified=True, next_poll=next_at,
                                                            moved_to=moved))
                            else:
                                f = outcome.fetched
                                parsing = self._submit(f.body, f.headers, f.final_url, src)
                                pending.append(_Pending(src, f, parsing))
                                parsing.add_done_callback(lambda f: events.put((False, f)))
                            if on_result and len(results) > before:
                                on_result(results[-1])
                            if len(unchanged) >= UNCHANGED_BATCH:
                                store.record_successes(unchanged)
                                unchanged.clear()
                        finish(block=False)
                except BaseException:  # the fetch threads stop after their current source
                    stopping.set()
                    while not queued.empty():
                        with contextlib.suppress(queue.Empty):
                            queued.get_nowait()
                    raise

            store.record_successes(unchanged)
            finish(block=True)
            if instances is not None:
                store.record_instance_health([_health_row(h) for h in instances.changed()])
            if store.pending_posts():  # merged articles' posts, once each (see _store)
                try:
                    posts.extend(self._write_posts(store, missing=False))
                except PublishError as e:  # owed still: the next publish writes them
                    log.error("post files still owed, not written: %s", e)

            order = {s.name: i for i, s in enumerate(sources)}
            results.sort(key=lambda r: order[r.source])
            cycle = CycleResult(results=tuple(results), posts_written=tuple(posts))
            expired = self._expire(store) if cycle.changed else 0
            if todo:
                store.set_meta(last_cycle_at=to_iso(self.clock()), last_cycle_seconds=round(time.monotonic() - started, 3))
            if publish and (cycle.changed or expired or self._publish_due(store)):
                cycle = CycleResult(results=cycle.results, posts_written=cycle.posts_written, published=tuple(self._publish(store)))
        return cycle

    def _parsed(self, src: Source, future: Future) -> Processed:
        from .work import Processed

        try:
            return future.result(timeout=PARSE_TIMEOUT)
        except FutureTimeout:
            self._reset_pool()
            return Processed(source=src.name, error=f"parsing took longer than {PARSE_TIMEOUT:.0f} s", error_kind=ParseError.kind)
        except Exception as e:  # a worker died (e.g. killed by the memory limit)
            self._reset_pool()
            return Processed(source=src.name, error=f"parser worker failed: {type(e).__name__}: {e}", error_kind=ParseError.kind)

    def _apply(self, store: Store, state: SourceState, src: Source, fetched: Fetched, processed: Processed, *,
               served_by: str | None = None) -> _Finished:
        now = self.clock()
        if processed.error:
            cls = NotAFeedError if processed.error_kind == NotAFeedError.kind else ParseError
            return _Finished(self._failed(store, src, state, cls(processed.error, source=src.name), now))
        result, written = self._store(store, src, state, fetched, processed, now, served_by=served_by)
        return _Finished(result, tuple(written))

    # -- full text (issue 9) ------------------------------------------------------------

    def _fulltext_todo(self, store: Store, src: Source, processed: Processed) -> list[int]:
        """Which drafts need their article page: items this source has not stored yet, or
        its own items changed upstream, that ``fulltext.should_fetch`` says are short or cut
        (all of them with "always"). An item seen before is never fetched again; a copy
        merged into another source's article neither."""
        rule = src.fulltext
        if rule is None or processed.error or not processed.drafts:
            return []
        from .fulltext import should_fetch

        known = store.own_versions([d.dedup_keys[0] for d in processed.drafts])
        todo = []
        for i, d in enumerate(processed.drafts):
            mine = known.get(d.dedup_keys[0])
            if mine is not None and (mine[0] != d.source or mine[1] == d.content_hash):
                continue
            if d.link and should_fetch(d.body_html, d.title, rule.mode):
                todo.append(i)
        return todo

    def _full_text(self, src: Source, processed: Processed, todo: list[int], cached: dict[str, dict]):
        """On a fetch thread: fetch (or take from the cache) the article page of each draft
        in ``todo``, extract it in a worker, judge it (``fulltext.gate``) and put the result
        in the draft. Returns the new Processed and the pages to cache."""
        from .fulltext import gate, with_page

        drafts = list(processed.drafts)
        fresh: list[dict] = []
        cached = dict(cached)  # and the pages fetched here: items of one feed may share a link
        stop = time.monotonic() + FULLTEXT_BUDGET
        for n, i in enumerate(todo):
            draft = drafts[i]
            page = cached.get(draft.link)
            if page is None and n >= FULLTEXT_MAX_PAGES:
                drafts[i] = replace(draft, fulltext=f"page not fetched: over {FULLTEXT_MAX_PAGES} new items in one poll")
                continue
            if page is None and time.monotonic() > stop:
                drafts[i] = replace(draft, fulltext=f"page not fetched: the poll's {FULLTEXT_BUDGET:.0f} s for pages ran out")
                continue
            if page is None:
                page = self._page(src, draft.link)
                if page.pop("transient", False):
                    drafts[i] = replace(draft, fulltext=f"page not fetched: {page['error']}")
                    continue
                fresh.append(page)
                cached[draft.link] = page
            extracted = _extracted(page)
            if page["error"] and (not page["status"] or page["status"] < 300):  # blocked, too large; extractor failed
                verb = "used" if page["status"] else "fetched"
                drafts[i] = replace(draft, fulltext=f"page not {verb}: {page['error']}")
                continue
            verdict = gate(extracted, title=draft.title, summary=draft.body_html, page_status=page["status"])
            drafts[i] = with_page(draft, extracted, verdict)
            log.debug("source %s: full text of %s: %s", src.name, draft.link, drafts[i].fulltext)
        return replace(processed, drafts=tuple(drafts)), fresh

    def _page(self, src: Source, url: str) -> dict:
        """One article page through the guarded fetcher (the source's own headers, proxy
        and deadline; the per-host limits), extracted in a worker process with a time
        limit, as a ``pages`` row. "transient": a failure worth trying again later
        (network, timeout, 5xx, 429), not cached."""
        from .fulltext import read_page

        row = dict.fromkeys(Store.PAGE_FIELDS)
        row.update(url=url, fetched=to_iso(self.clock()), status=0, markers="[]")
        options = src.options
        if options.headers and not _same_origin(src.url, url):
            # the source's Cookie/Authorization belong to its own origin: a feed linking
            # elsewhere must not collect them (User-Agent, timeout and proxy still apply)
            options = replace(options, headers=())
        try:
            got = self.fetcher.fetch(url, source=src.name, options=options)
        except AggregatorError as e:
            status = getattr(e, "status", None) or 0
            row.update(status=status, error=e.message)
            row["transient"] = e.kind in ("network", "timeout") or status >= 500 or status == 429
            return row
        assert isinstance(got, Fetched)  # no validators sent: never a 304
        rule = src.fulltext
        row.update(status=got.status, final_url=got.final_url)
        content_type = dict(got.headers).get("content-type")
        job = self._workers().submit(read_page, got.body, content_type, got.final_url,
                                     content_selector=rule.content_selector, remove_selectors=rule.remove_selectors)
        try:
            extracted = job.result(timeout=EXTRACT_TIMEOUT)
        except FutureTimeout:
            self._reset_pool()
            row["error"] = f"extraction took longer than {EXTRACT_TIMEOUT:.0f} s"
            return row
        except Exception as e:  # a worker died, or the page broke the extractor
            row["error"] = f"extraction failed: {type(e).__name__}: {e}"
            return row
        if extracted is not None:
            row.update(html=extracted.html, text=extracted.text, method=extracted.method,
                       page_title=extracted.page_title, page_text=extracted.page_text,
                       markers=json.dumps(list(extracted.markers)))
        return row

    # -- RSSHub routes (issue 9) ---------------------------------------------------------

    def _instances(self, store: Store):
        """The configured RSSHub instances with their remembered health, shared by this
        cycle's fetch threads."""
        from .rsshub import InstanceHealth, InstancePool

        health = {r[0]: InstanceHealth(*r) for r in store.instance_health()}
        return InstancePool(self.config.rsshub_instances, health)

    def _fetch_route(self, source: Source, state: SourceState, instances) -> tuple[Fetched | NotModified, str]:
        """An ``rsshub://`` route from the first instance that answers with a feed. An
        instance failing (5xx, 429, 403, timeout, network, a body that is not a feed) is
        recorded and the next one is tried in the same fetch; a 404 (an instance without
        the route) is tried elsewhere but does not count against the instance. Validators
        go only to the instance that gave them."""
        from .errors import RouteFailedError
        from .models import Validators
        from .rsshub import broken_feed, is_instance_failure, route_url

        params = dict(source.rsshub)
        failures: list[str] = []
        last_kind = "network"
        for base in instances.order(self.clock()):
            url = route_url(base, source.url, params)
            validators = state.validators if state.served_by == base else Validators()
            try:
                got = self.fetcher.fetch(url, validators, source=source.name, options=source.options)
            except AggregatorError as e:
                if is_instance_failure(getattr(e, "status", None), e.kind):
                    instances.record(base, self.clock(), error=e.message)
                failures.append(e.message)
                last_kind = e.kind
                continue
            if isinstance(got, Fetched) and (why := broken_feed(got.body, dict(got.headers).get("content-type"))):
                instances.record(base, self.clock(), error=f"not a feed: {why}")
                failures.append(f"{url}: not a feed: {why}")
                last_kind = NotAFeedError.kind
                continue
            instances.record(base, self.clock())
            if failures:
                log.info("source %s: served by %s after %d failing instance(s)", source.name, base, len(failures))
            return got, base
        raise RouteFailedError(f"every RSSHub instance failed for {source.url}: " + "; ".join(failures),
                               kind=last_kind, source=source.name)

    def _expire(self, store: Store) -> int:
        """Retention per category (config ``retention``): rows and post files go together;
        the dedup keys stay as tombstones so an expired story is not republished."""
        removed = 0
        now = self.clock()
        for category in store.categories():
            kind, n = self.config.retention_rule(category)
            if kind == "forever":
                continue
            gone = store.expire(category, keep=n if kind == "count" else None,
                                older_than=now - timedelta(seconds=n) if kind == "age" else None)
            for article in gone:
                (self.config.posts_dir / article.post_name).unlink(missing_ok=True)
            if gone:
                log.info("retention: %d article(s) of %s removed", len(gone), category)
            removed += len(gone)
        return removed

    def _next(self, src: Source, now: datetime, outcome: Outcome) -> datetime | None:
        """The next poll time, rounded up to the second the database stores (up, so a
        Retry-After is never undercut)."""
        at = next_poll(now, src.interval, outcome, key=src.name, policy=self.policy)
        if at is not None and at.microsecond:
            at = at.replace(microsecond=0) + timedelta(seconds=1)
        return at

    def _moved(self, src: Source, state: SourceState, permanent_url: str | None) -> str | None:
        """A 301/308 chain: fetch the new URL from now on (RFC 9110 §15.4.2) and say so. Not
        for an rsshub:// route: an instance's redirect is the instance's business."""
        if permanent_url and permanent_url not in (src.url, state.moved_to) and not is_route(src.url):
            from .fetch import redact

            log.warning("source %s moved permanently to %s (run 'aggregator poll --update-moved' to write it to the config)",
                        src.name, redact(permanent_url))
            return permanent_url
        return None

    def _failed(self, store: Store, src: Source, state: SourceState, error: AggregatorError, now: datetime) -> SourceResult:
        status = getattr(error, "status", None)
        if status == 410:
            log.warning("source %s is gone (HTTP 410): no longer polled; its articles stay published", src.name)
            store.record_failure(src.name, src.url, now=now, kind=error.kind, message=error.message, gone=True)
            return SourceResult(source=src.name, error=error.message, error_kind=error.kind, gone=True)
        retry_after = getattr(error, "retry_after", None)
        next_at = self._next(src, now, Outcome(
            "error", status=status, error_count=state.error_count + 1,
            headers=(("retry-after", retry_after),) if retry_after else (),
        ))
        log.warning("source %s failed (%s): %s; next try %s", src.name, error.kind, error.message, describe(next_at, now))
        store.record_failure(src.name, src.url, now=now, kind=error.kind, message=error.message, next_poll=next_at)
        return SourceResult(source=src.name, error=error.message, error_kind=error.kind, next_poll=next_at)

    def _store(self, store: Store, src: Source, state: SourceState, fetched: Fetched, processed: Processed, now: datetime,
               *, served_by: str | None = None):
        from .publish.posts import post_name

        for problem in processed.problems:
            log.info("%s", problem)
        applied = store.apply(
            processed.drafts, now=now, name_post=post_name, uid_of=article_uid,
            near=self.config.near_duplicate_rule, max_edits_per_day=self.config.max_edits_per_day,
        )
        written = []
        done: list[int] = []
        try:
            # A merged copy only adds a source to an article already on disk: its post stays
            # owed (pending_posts) and is written once at the end of the cycle, however many
            # sources merged into it (at 10,000 sources an article may merge 40 times).
            articles = applied.new + applied.updated
            for article, changed in zip(articles, self._write_many(articles)):
                if changed:
                    written.append(article.post_name)
                done.append(article.id)
        except PublishError as e:
            # The articles are committed with their posts marked as owed (pending_posts, in
            # the same transaction); the next publish that can write writes them. The
            # source itself did not fail.
            log.error("source %s: articles stored, but post files not written: %s", src.name, e)
        store.posts_written(done)
        hints = (processed.ttl_minutes, processed.update_period, processed.update_frequency)
        next_at = self._next(src, now, Outcome("ok", headers=fetched.headers, ttl_minutes=hints[0],
                                               update_period=hints[1], update_frequency=hints[2]))
        moved = self._moved(src, state, fetched.permanent_url)
        # Recorded last: if anything above failed, the next poll sees a new body again.
        store.record_success(
            src.name, src.url, now=now, validators=fetched.validators, body_hash=_body_hash(fetched.body),
            title=processed.title, next_poll=next_at, moved_to=moved, hints=hints, served_by=served_by,
        )
        return SourceResult(
            source=src.name, new=len(applied.new), updated=len(applied.updated),
            unchanged=applied.unchanged, duplicates=applied.duplicates,
            skipped_entries=tuple(p for p in processed.problems if "skipped" in p),
            next_poll=next_at, moved_to=moved,
        ), written

    def ingest(self, source: Source, fetched: Fetched, *, served_by: str | None = None) -> SourceResult:
        """Store a response fetched outside a cycle (``add-source``'s check) exactly as a poll
        would, validators and full text included: adding a feed never costs two downloads
        (issue 3). ``served_by``: the RSSHub instance that answered a route."""
        with Store(self.config.db_path) as store:
            state = store.source_state(source.name)
            from .work import process_feed

            processed = process_feed(fetched.body, fetched.headers, fetched.final_url, source, self.clock(),
                                     self.config.future_skew, self.config.iframe_hosts)
            todo = self._fulltext_todo(store, source, processed)
            if todo:
                cached = store.cached_pages([processed.drafts[i].link for i in todo], since=self.clock() - PAGE_CACHE)
                processed, pages = self._full_text(source, processed, todo, cached)
                store.save_pages(pages, older_than=self.clock() - PAGE_CACHE)
            result = self._apply(store, state, source, fetched, processed, served_by=served_by).result
            if result.error:
                return result
            if result.new or result.updated or not (self.config.output_dir / "index.opml").exists():
                self._publish(store)
            return result

    # -- publish ----------------------------------------------------------------------

    def publish(self, *, posts: str = "missing", force: bool = False) -> list[str]:
        """Rebuild the feeds; ``posts``: "missing" writes post files that are absent (cheap:
        one listing of the folder), "all" re-renders every post (after an upgrade changed the
        format), "none" leaves them."""
        with Store(self.config.db_path) as store:
            written = self._write_posts(store, every=posts == "all") if posts != "none" else []
            return written + self._publish(store, force=force)

    def _write_posts(self, store: Store, *, every: bool = False, missing: bool = True) -> list[str]:
        """Write, from the database, the post files owed by committed changes (a crash
        between a commit and its files, an unwritable folder) and, with ``missing``, every
        one absent from the folder (all of them with ``every``). Raises PublishError when
        the folder still cannot be written."""
        folder = self.config.posts_dir
        owed = set(store.pending_posts())
        names = store.post_names()
        if every or missing:
            # an empty file is a post a power cut caught between create and write (posts
            # are not fsynced): missing too
            existing = {e.name for e in os.scandir(folder) if e.stat().st_size} if folder.is_dir() else set()
            todo = [i for i, name in names.items() if every or i in owed or name not in existing]
        else:
            todo = sorted(i for i in owed if i in names)
        written = []
        for start in range(0, len(todo), 500):  # bodies loaded a batch at a time
            batch = store.articles_by_id(todo[start:start + 500])
            written += [a.post_name for a, changed in zip(batch, self._write_many(batch, folder)) if changed]
            store.posts_written([a.id for a in batch if a.id in owed])
        store.posts_written(sorted(owed - set(names)))  # owed by articles since expired or purged
        return written

    def _write_many(self, articles, folder: Path | None = None) -> list[bool]:
        """Write post files, one after the other on this thread. (A pool of writer threads
        was measured: no faster on a cold cycle, since creating files in one folder
        serialises in the kernel, and the GIL hand-offs cost 25% more system time.)"""
        from .publish.posts import write_post

        folder = folder or self.config.posts_dir
        return [write_post(a, folder) for a in articles]

    def catch_up(self) -> list[str]:
        """What the daemon runs at start and after a failed write: every missing post file,
        then a publish (only pages whose signature changed are rendered). Leftover
        temporary files of an interrupted write are removed."""
        from .publish.atomic import remove_stale_temp_files

        remove_stale_temp_files(self.config.output_dir)
        with Store(self.config.db_path) as store:
            return self._write_posts(store) + self._publish(store)

    def site(self):
        from .publish import Site

        return Site(base_url=self.config.base_url, title=self.config.site_title, hub=self.config.websub_hub,
                    source_urls={s.name: self._public_url(s) for s in self.config.sources})

    def _public_url(self, source: Source) -> str:
        """The URL a published feed names as an item's origin (``<source url>``): an
        rsshub:// route as the first configured instance serves it, so readers get a URL
        they can open."""
        if is_route(source.url) and self.config.rsshub_instances:
            from .rsshub import route_url

            return route_url(self.config.rsshub_instances[0], source.url, dict(source.rsshub))
        return source.url

    def _settings_hash(self) -> str:
        """What the published set depends on besides the articles: when it changes (a
        [[feeds]] rule, the site title, a new source's category), publish even if no
        article did."""
        c = self.config
        data = [c.base_url, c.site_title, c.websub_hub, c.items_per_feed, c.default_interval, repr(c.feeds),
                [(s.name, self._public_url(s), s.category, s.channel, s.interval) for s in c.sources]]
        return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode()).hexdigest()

    def _publish_due(self, store: Store) -> bool:
        out = self.config.output_dir
        if not (out / "index.opml").exists() or not (out / "index.html").exists():
            return True
        meta = store.meta()
        return meta.get("publish_pending") == "1" or meta.get("publish_settings") != self._settings_hash()

    def _publish(self, store: Store, *, force: bool = False) -> list[str]:
        from .publish import plan_site, publish_site
        from .publish.site import PARALLEL_PAGES

        started = time.monotonic()
        posts_ok = True
        if store.pending_posts():
            try:
                self._write_posts(store, missing=False)  # owed by a crash or a failed write
            except PublishError as e:
                log.error("post files still cannot be written: %s", e)
                posts_ok = False
        site = self.site()
        plan = plan_site(
            store.article_refs(), self.config.sources, self.config.feeds, site=site,
            items_per_feed=self.config.items_per_feed, default_interval=self.config.default_interval,
            bodies=store.article_bodies,
        )
        previous = store.outputs()
        changed = sum(1 for j in plan.jobs if force or getattr(previous.get(j.key), "signature", None) != j.signature)
        executor = self._workers() if changed >= PARALLEL_PAGES else None
        with self.publish_lock:
            # feeds never show an article's merge list (posts do): not loaded, not pickled
            load = functools.partial(store.articles_by_id, sources=False)
            result = publish_site(self.config.output_dir, plan, site, previous=previous, load=load,
                                  force=force, executor=executor, workers=os.cpu_count() or 1,
                                  worker_load=ArticleReader(store.path))
        now = self.clock()
        store.record_outputs(result.done, result.failed, result.gone, now)
        pending = bool(result.failed) or not posts_ok
        store.set_meta(last_publish_at=to_iso(now), last_publish_seconds=round(time.monotonic() - started, 3),
                       publish_settings=self._settings_hash(), publish_pending=1 if pending else 0)
        log.info("published: %d pages rendered, %d unchanged, %d files written, %d refused",
                 result.rendered, result.kept, len(result.written), len(result.failed))
        if self.config.websub_hub and result.changed_feeds:
            from .publish.websub import ping

            for problem in ping(self.config.websub_hub, [site.url(p) for p in result.changed_feeds]):
                log.warning("WebSub: %s", problem)
        self.last_publish = result
        return [str(Path(p)) for p in result.written]


def _body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _same_origin(source_url: str, url: str) -> bool:
    import httpx

    from .politeness import same_origin

    try:
        return same_origin(httpx.URL(source_url), httpx.URL(url))
    except (httpx.InvalidURL, TypeError, ValueError):
        return False


def _extracted(page: dict):
    """A cached ``pages`` row as ``fulltext.Extracted`` (None: nothing was extracted)."""
    if page.get("html") is None:
        return None
    from .fulltext import Extracted

    return Extracted(html=page["html"], text=page["text"] or "", method=page["method"] or "",
                     page_title=page["page_title"] or "", page_text=page["page_text"] or "",
                     markers=tuple(json.loads(page["markers"] or "[]")))


def _health_row(h) -> tuple:
    return (h.url, h.last_success, h.last_failure, h.failures, h.last_error, h.next_try)


# -- add-source's check ------------------------------------------------------------------


@dataclass(frozen=True)
class FeedCheck:
    """What ``add-source`` learned from its one GET (two when a page points at a feed)."""

    url: str  # the feed's URL (the advertised one when the given URL was a page)
    title: str | None
    entries: int
    discovered_from: str | None = None  # the page URL, when the feed was found through it
    fetched: Fetched | None = None  # the response, so the first poll need not download it again
    served_by: str | None = None  # the RSSHub instance that answered an rsshub:// route


def check_feed(config: Config, url: str, *, source: str | None = None,
               rsshub: tuple[tuple[str, str], ...] = ()) -> FeedCheck:
    """Fetch ``url`` once; if it is an HTML page that advertises a feed, fetch that instead;
    an ``rsshub://`` route is tried on the instances in turn, as a poll does (their health
    is recorded). Raises ``SourceError`` (NotAFeedError, FetchError, ParseError) with a
    clear message."""
    from .errors import NotAFeedError
    from .fetch import Fetcher
    from .parse import find_feed_links, looks_like_html, parse_feed

    if is_route(url):
        name = source or url
        with Pipeline(config) as pipeline, Store(config.db_path) as store:
            instances = pipeline._instances(store)
            try:
                got, base = pipeline._fetch_route(Source(name=name, url=url, category="", channel=None, interval=0,
                                                         rsshub=rsshub), SourceState(name=name), instances)
            finally:
                store.record_instance_health([_health_row(h) for h in instances.changed()])
        assert isinstance(got, Fetched)  # no validators sent: never a 304
        feed = parse_feed(got.body, got.headers, got.final_url, source=source)
        return FeedCheck(url=url, title=feed.title, entries=len(feed.entries), fetched=got, served_by=base)

    with Fetcher(config.fetch_limits()) as fetcher:
        got = fetcher.fetch(url, source=source)
        assert isinstance(got, Fetched)  # no validators sent: never a 304
        discovered_from = None
        if looks_like_html(got.body, got.content_type):
            links = find_feed_links(got.body, got.headers, got.final_url)
            if not links:
                raise NotAFeedError(f"{url} is an HTML page that advertises no feed (no <link rel=\"alternate\"> of a feed type)", source=source)
            discovered_from, url = url, links[0].url
            got = fetcher.fetch(url, source=source)
            assert isinstance(got, Fetched)
        feed = parse_feed(got.body, got.headers, got.final_url, source=source)
    return FeedCheck(url=url, title=feed.title, entries=len(feed.entries), discovered_from=discovered_from, fetched=got)


def purge_source(config: Config, name: str) -> int:
    """Delete a source's articles, their post files and state; republish. Returns how many."""
    with Store(config.db_path) as store:
        gone = store.forget_source(name)
    for article in gone:
        (config.posts_dir / article.post_name).unlink(missing_ok=True)
    with Pipeline(config) as pipeline:
        pipeline.publish()
    return len(gone)


def update_moved_sources(config: Config) -> list[tuple[str, str]]:
    """Write every recorded 301/308 target into config.toml (``poll --update-moved``).
    The stored state follows, validators kept, so nothing is fetched twice."""
    from .config import set_source_url_in_file

    changed = []
    with Store(config.db_path) as store:
        states = store.source_states()
        for src in config.sources:
            state = states.get(src.name)
            if state and state.moved_to and state.moved_to != src.url:
                set_source_url_in_file(config.path, src.name, state.moved_to)
                store.adopt_moved_url(src.name, state.moved_to)
                changed.append((src.name, state.moved_to))
    return changed
