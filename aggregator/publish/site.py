"""Render, validate and write the pages a plan says changed; remove those that are gone.

Owns: the publish run over the output folder: for every page of the plan whose
signature differs from the one last published (or whose files are missing), render it in
every format, check each document with ``validate`` (feed pages: ``validate_composed``,
the same verdict) and swap in only the ones that pass; delete the files of pages that no
longer exist (only pages this publisher recorded, so nothing else in the folder is
touched); write ``index.opml`` and ``index.html``.

Must not: query the database (articles come from the ``load`` callback, the previous
state from ``previous``) or read the clock.

Validation before swap: a document that fails keeps the last good file on disk; the page
is reported in ``failed`` with the reason and, having no signature recorded, is tried
again at the next publish. The other formats of the same page are still written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator.errors import PublishError
from aggregator.models import OutputState, StoredArticle
from aggregator.publish.atomic import AtomicBatch
from aggregator.publish.pages import FORMATS, Composed, Page, Site
from aggregator.publish.plan import PageJob, SitePlan

log = logging.getLogger(__name__)

#: distinct articles per rendering batch (bounds memory on a full rebuild: a batch's
#: entries stay cached until it is done; its articles are read ENTRY_CHUNK at a time)
LOAD_BATCH = 10_000
#: articles read at a time while their entries are rendered (what a publishing process
#: holds at once besides the batch's entries)
ENTRY_CHUNK = 500
#: pages from which a batch is rendered in worker processes (when the pipeline hands
#: some over): below, shipping the articles there costs more than it saves. Measured on
#: 2 cores (benchmarks/publish.py data, pool already running, as in the daemon): 132
#: pages rebuilt in 0.30 s instead of 0.53 s, 800 pages in 1.95 s instead of 3.0 s; a
#: whole ``aggregator publish --rebuild`` process, which starts the pool, breaks even
#: at 132 pages (0.86 s either way).
PARALLEL_PAGES = 24


@dataclass(frozen=True)
class SiteResult:
    """Paths are relative to the output folder, POSIX style (``category/金融.rss.xml``)."""

    written: tuple[str, ...]  # created or changed
    unchanged: tuple[str, ...]  # rendered to the same bytes, or not rendered at all
    skipped: tuple[str, ...]  # one message per item or feed left out
    done: tuple[OutputState, ...]  # pages published: their new state
    failed: tuple[tuple[str, str], ...]  # (page, why) refused by validation
    gone: tuple[str, ...]  # pages removed
    changed_feeds: tuple[str, ...]  # current documents rewritten (paths), for WebSub
    rendered: int = 0  # pages rendered
    kept: int = 0  # pages whose signature had not changed


def _render(page: Page, site: Site, fmt: str, caches: dict[str, Any]) -> tuple[Composed, list[str]]:
    if fmt == "json":
        from aggregator.publish.json_feed import compose_json

        return compose_json(page, site, caches.setdefault("json", {})), []
    from aggregator.publish.feeds import EntryCache, render_page

    return render_page(page, site, fmt, caches.setdefault("entries", EntryCache()))


def _entries(load: Callable[[Sequence[int]], Sequence[StoredArticle]], ids: Sequence[int], site: Site,
             formats: Sequence[str], caches: dict[str, Any]) -> dict[int, StoredArticle]:
    """Read the articles ``ids`` through ``load``, ``ENTRY_CHUNK`` at a time, render each
    one's entry in every one of ``formats`` into ``caches`` (the caches ``_render`` reads),
    and keep the article without its body and summary: composing a page needs only the
    entries and its items' ids and dates, so a batch holds its entries and not its
    articles too (at 10,000 sources ~22 MB less in each publishing process). An article
    whose entry cannot be rendered is kept whole: the page holding it reports why."""
    from aggregator.publish.feeds import EntryCache
    from aggregator.publish.json_feed import json_entry

    entries = caches.setdefault("entries", EntryCache())
    json_items = caches.setdefault("json", {})
    kept: dict[int, StoredArticle] = {}
    for start in range(0, len(ids), ENTRY_CHUNK):
        for article in load(ids[start:start + ENTRY_CHUNK]):
            try:
                for fmt in formats:
                    if fmt == "json":
                        json_entry(article, site, json_items)
                    else:
                        entries.item(article, site, rss=fmt == "rss")
            except PublishError:
                kept[article.id] = article
            else:
                kept[article.id] = dataclasses.replace(article, body_html="", summary="")
    return kept


@dataclass
class _Rendered:
    """What the publish run did so far (becomes the SiteResult)."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    done: list[OutputState] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    changed_feeds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Outcome:
    """One document of one page: whether its file changed, or why it was not published."""

    changed: bool = False
    problem: str | None = None
    skipped: tuple[str, ...] = ()  # items left out of it


def render_formats(output_dir: Path, jobs: Sequence[PageJob], load: Callable[[Sequence[int]], Sequence[StoredArticle]],
                   ids: Sequence[int], site: Site, formats: Sequence[str]) -> list[list[_Outcome]]:
    """Render, validate and write the ``formats`` documents of ``jobs``, whose articles
    are ``ids``, read through ``load``: per job, one outcome per format. Runs in this
    process or in a worker process (what it takes and returns pickles; ``load`` too when
    it runs there).

    Every article's entries first (``_entries``), then one page after the other
    (feedgen and the item caches are not for threads); each document that passes
    validation goes to its temporary file at once; the call ends by committing them all
    together (``AtomicBatch``: one flush of the disk for the batch instead of two fsyncs
    per file), so the new files appear when the call returns."""
    from aggregator.publish.validate import validate_composed

    caches: dict[str, Any] = {}  # the articles behind the ids stay the same for the call
    articles = _entries(load, ids, site, formats, caches)
    checked: set = set()  # items validate_composed has passed
    rows: list[list[_Outcome]] = []
    staged: list[tuple[int, int, str]] = []  # (row, column, target) of the documents to commit
    with AtomicBatch() as batch:
        for job in jobs:
            page = Page(feed=job.feed, items=tuple(articles[i] for i in job.ids if i in articles),
                        number=job.number, archives=job.archives)
            row: list[_Outcome] = []
            for fmt in formats:
                rel_path, left_out = page.path(fmt), []
                try:
                    doc, left_out = _render(page, site, fmt, caches)
                    validate_composed(rel_path, doc, checked)
                    target = output_dir / rel_path
                    changed = batch.stage(target, doc.data)
                except PublishError as e:
                    row.append(_Outcome(problem=str(e), skipped=tuple(left_out)))
                    continue
                if changed:
                    staged.append((len(rows), len(row), os.fspath(target)))
                row.append(_Outcome(changed=changed, skipped=tuple(left_out)))
            rows.append(row)
        failed = batch.commit()
    for r, c, target in staged:
        if target in failed:
            rows[r][c] = _Outcome(problem=failed[target], skipped=rows[r][c].skipped)
    return rows


def _render_pickled(output_dir: Path, payload: bytes, formats: Sequence[str]) -> list[list[_Outcome]]:
    """``render_formats`` in a worker process, its jobs, articles and site pickled by
    ``_render_batch``."""
    jobs, articles, site = pickle.loads(payload)
    return render_formats(output_dir, jobs, _reading(articles), sorted(articles), site, formats)


def _reading(articles: Mapping[int, StoredArticle]) -> Callable[[Sequence[int]], list[StoredArticle]]:
    """A ``load`` over articles already in memory."""
    return lambda ids: [articles[i] for i in ids if i in articles]


def _render_loaded(output_dir: Path, payload: bytes, formats: Sequence[str]) -> list[list[_Outcome]]:
    """``render_formats`` in a worker process that reads its articles itself: the payload
    holds the jobs, the site, the article ids and ``worker_load``."""
    jobs, site, ids, load = pickle.loads(payload)
    return render_formats(output_dir, jobs, load, ids, site, formats)


def _render_batch(output_dir: Path, jobs: Sequence[PageJob], ids: Sequence[int], site: Site,
                  load: Callable[[Sequence[int]], Sequence[StoredArticle]],
                  worker_load: Callable[[Sequence[int]], Sequence[StoredArticle]] | None,
                  executor: Executor | None, workers: int) -> list[list[_Outcome]]:
    """Per job, the outcome of each format (in FORMATS order). With worker processes, RSS
    and Atom render there, one format each, and JSON here: each process then renders an
    article's item once, as one process rendering every page does, instead of splitting
    pages (where most articles would be rendered by both).

    With a ``worker_load``, each worker reads the batch's articles itself, while this
    process reads its own: no article is pickled, copied through a pipe and unpickled
    twice, and the three processes start rendering together (at 10,000 sources the
    pickled articles and their copies in the executor's queue were most of the poll
    process's peak memory)."""
    if executor is None or workers < 2 or len(jobs) < PARALLEL_PAGES:
        return render_formats(output_dir, jobs, load, ids, site, tuple(FORMATS))
    if worker_load is not None:
        payload = pickle.dumps((jobs, site, ids, worker_load), protocol=pickle.HIGHEST_PROTOCOL)
        futures = {fmt: executor.submit(_render_loaded, output_dir, payload, (fmt,)) for fmt in ("rss", "atom")}
    else:
        # Pickled once for both workers (the executor would pickle the articles, bodies
        # and all, once per call; handing over bytes only copies them).
        articles = {a.id: a for a in load(ids)}
        payload = pickle.dumps((jobs, articles, site), protocol=pickle.HIGHEST_PROTOCOL)
        futures = {fmt: executor.submit(_render_pickled, output_dir, payload, (fmt,)) for fmt in ("rss", "atom")}
        load = _reading(articles)  # read once, for JSON here too
    del payload  # not held here while JSON renders (tens of MB at 10,000 articles)
    columns = {"json": render_formats(output_dir, jobs, load, ids, site, ("json",))}
    columns.update((fmt, future.result()) for fmt, future in futures.items())
    return [[columns[fmt][i][0] for fmt in FORMATS] for i in range(len(jobs))]


def publish_site(
    output_dir: Path,
    plan: SitePlan,
    site: Site,
    *,
    previous: Mapping[str, OutputState],
    load: Callable[[Sequence[int]], Sequence[StoredArticle]],
    force: bool = False,
    executor: Executor | None = None,
    workers: int = 1,
    worker_load: Callable[[Sequence[int]], Sequence[StoredArticle]] | None = None,
) -> SiteResult:
    """Bring ``output_dir`` in line with ``plan``. ``force`` renders every page (the
    files are still rewritten only when their bytes change). With an ``executor`` (the
    pipeline's worker processes) and ``workers`` > 1, a batch of at least
    ``PARALLEL_PAGES`` pages is rendered in three processes, one per format; the workers
    get their articles from ``worker_load`` (``load`` that can be pickled, e.g. a reader
    of the database) when there is one, else pickled from this process."""
    output_dir = Path(output_dir)
    out = _Rendered(skipped=list(plan.skipped))
    kept = 0

    todo: list[PageJob] = []
    for job in plan.jobs:
        prev = previous.get(job.key)
        paths = [job.feed.path(fmt, job.number) for fmt in FORMATS]
        if (not force and prev is not None and prev.signature == job.signature
                and all((output_dir / p).is_file() for p in paths)):
            out.unchanged.extend(paths)
            kept += 1
        else:
            todo.append(job)

    # Batches of at most LOAD_BATCH distinct articles: an article is in several pages
    # (all, its category, source, channel), and a batch renders it once for all of them.
    batch: list[PageJob] = []
    batches: list[list[PageJob]] = []
    seen: set[int] = set()
    for job in todo:
        fresh = {i for i in job.ids if i not in seen}
        if batch and len(seen) + len(fresh) > LOAD_BATCH:
            batches.append(batch)
            batch, seen, fresh = [], set(), set(job.ids)
        batch.append(job)
        seen |= fresh
    if batch:
        batches.append(batch)

    for group in batches:
        ids = sorted({i for job in group for i in job.ids})
        outcomes_of = _render_batch(output_dir, group, ids, site, load, worker_load, executor, workers)
        for job, outcomes in zip(group, outcomes_of, strict=True):
            problems: list[str] = []
            for fmt, outcome in zip(FORMATS, outcomes, strict=True):
                rel_path = job.feed.path(fmt, job.number)
                out.skipped.extend(outcome.skipped)
                if outcome.problem is not None:
                    log.error("not published: %s", outcome.problem)
                    problems.append(outcome.problem)
                    continue
                (out.written if outcome.changed else out.unchanged).append(rel_path)
                if outcome.changed and job.number is None:
                    out.changed_feeds.append(rel_path)
            if problems:
                out.failed.append((job.key, "; ".join(problems)))
            else:
                out.done.append(OutputState(path=job.key, signature=job.signature, items=len(job.ids),
                                            updated=job.updated if job.ids else None))

    planned = {job.key for job in plan.jobs}
    gone = sorted(k for k in previous if k not in planned)
    for key in gone:
        for ext in FORMATS.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(output_dir / (key + ext))
                out.written.append(key + ext)

    from aggregator.publish.index_html import render_index_html
    from aggregator.publish.opml import OPML_NAME, render_opml
    from aggregator.publish.validate import validate

    staged: list[tuple[str, bool]] = []
    problems: list[tuple[str, str]] = []
    with AtomicBatch() as batch:  # the two made durable together, as the pages are
        for rel_path, data in ((OPML_NAME, render_opml(plan.index, site)),
                               ("index.html", render_index_html(plan.index, site))):
            try:
                validate(rel_path, data)
                staged.append((rel_path, batch.stage(output_dir / rel_path, data)))
            except PublishError as e:
                problems.append((rel_path, str(e)))
        failed = batch.commit()
    for rel_path, changed in staged:
        if os.fspath(output_dir / rel_path) in failed:
            problems.append((rel_path, failed[os.fspath(output_dir / rel_path)]))
        else:
            (out.written if changed else out.unchanged).append(rel_path)
    for rel_path, problem in problems:
        log.error("not published: %s", problem)
        out.failed.append((rel_path, problem))

    return SiteResult(
        written=tuple(out.written), unchanged=tuple(out.unchanged), skipped=tuple(out.skipped), done=tuple(out.done),
        failed=tuple(out.failed), gone=tuple(gone), changed_feeds=tuple(out.changed_feeds),
        rendered=len(todo), kept=kept,
    )
