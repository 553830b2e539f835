"""Render, validate and write the pages a plan says changed; remove those that are gone.

Owns: the publish run over the output folder: for every page of the plan whose
signature differs from the one last published (or whose files are missing), render it in
every format, check each document with ``validate`` and swap in only the ones that pass;
delete the files of pages that no longer exist (only pages this publisher recorded, so
nothing else in the folder is touched); write ``index.opml`` and ``index.html``.

Must not: query the database (articles come from the ``load`` callback, the previous
state from ``previous``) or read the clock.

Validation before swap: a document that fails keeps the last good file on disk; the page
is reported in ``failed`` with the reason and, having no signature recorded, is tried
again at the next publish. The other formats of the same page are still written.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from aggregator.errors import PublishError
from aggregator.models import OutputState, StoredArticle
from aggregator.publish.atomic import write_atomic
from aggregator.publish.pages import FORMATS, Page, Site
from aggregator.publish.plan import PageJob, SitePlan

log = logging.getLogger(__name__)

#: articles loaded at a time while rendering (bounds memory on a full rebuild; the
#: per-article render caches live as long as one batch)
LOAD_BATCH = 10_000
#: below this many pages a batch is rendered here: shipping articles to worker processes
#: (and their first import of the renderers) costs more than it saves
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


def _render(page: Page, site: Site, fmt: str, caches: dict[str, dict]) -> tuple[bytes, list[str]]:
    cache = caches.setdefault(fmt, {})
    if fmt == "json":
        from aggregator.publish.json_feed import render_json

        return render_json(page, site, cache), []
    from aggregator.publish.feeds import render_page

    return render_page(page, site, fmt, cache)


@dataclass
class _Rendered:
    """What rendering some pages did (merged into the SiteResult)."""

    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    done: list[OutputState] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    changed_feeds: list[str] = field(default_factory=list)

    def add(self, other: _Rendered) -> None:
        for name in ("written", "unchanged", "skipped", "done", "failed", "changed_feeds"):
            getattr(self, name).extend(getattr(other, name))


def _emit(output_dir: Path, rel_path: str, data: bytes, out: _Rendered) -> bool:
    """Validate, then write atomically; True when the file changed. Raises PublishError
    when refused or unwritable (the old file stays)."""
    from aggregator.publish.validate import validate

    validate(rel_path, data)
    changed = write_atomic(output_dir / rel_path, data)
    (out.written if changed else out.unchanged).append(rel_path)
    return changed


def render_jobs(output_dir: Path, jobs: Sequence[PageJob], articles: Mapping[int, StoredArticle],
                site: Site) -> _Rendered:
    """Render, validate and write ``jobs`` (every format). Runs in this process or in a
    worker process (everything it takes and returns pickles)."""
    out = _Rendered()
    caches: dict[str, dict] = {}  # the articles behind the ids stay the same for the call
    for job in jobs:
        page = Page(feed=job.feed, items=tuple(articles[i] for i in job.ids if i in articles),
                    number=job.number, archives=job.archives)
        problems: list[str] = []
        for fmt in FORMATS:
            rel_path = page.path(fmt)
            try:
                data, left_out = _render(page, site, fmt, caches)
                out.skipped.extend(left_out)
                if _emit(output_dir, rel_path, data, out) and job.number is None:
                    out.changed_feeds.append(rel_path)
            except PublishError as e:
                log.error("not published: %s", e)
                problems.append(str(e))
        if problems:
            out.failed.append((job.key, "; ".join(problems)))
        else:
            out.done.append(OutputState(path=job.key, signature=job.signature, items=len(job.ids),
                                        updated=job.updated if job.ids else None))
    return out


def _split(jobs: Sequence[PageJob], parts: int) -> list[list[PageJob]]:
    """``parts`` groups of about the same number of items, each keeping a feed's pages
    together (its articles' entries are rendered once per process and reused)."""
    groups: list[list[PageJob]] = [[] for _ in range(parts)]
    sizes = [0] * parts
    by_feed: dict[str, list[PageJob]] = {}
    for job in jobs:
        by_feed.setdefault(job.feed.stem, []).append(job)
    for feed_jobs in sorted(by_feed.values(), key=lambda js: -sum(len(j.ids) + 1 for j in js)):
        i = sizes.index(min(sizes))
        groups[i].extend(feed_jobs)
        sizes[i] += sum(len(j.ids) + 1 for j in feed_jobs)
    return [g for g in groups if g]


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
) -> SiteResult:
    """Bring ``output_dir`` in line with ``plan``. ``force`` renders every page (the
    files are still rewritten only when their bytes change). With an ``executor`` (the
    pipeline's worker processes) and ``workers`` > 1, a large batch of pages is rendered
    in ``workers`` parts at once."""
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

    batch: list[PageJob] = []
    batches: list[list[PageJob]] = []
    size = 0
    for job in todo:
        batch.append(job)
        size += len(job.ids)
        if size >= LOAD_BATCH:
            batches.append(batch)
            batch, size = [], 0
    if batch:
        batches.append(batch)

    for group in batches:
        ids = sorted({i for job in group for i in job.ids})
        articles = {a.id: a for a in load(ids)}
        if executor is not None and workers > 1 and len(group) >= PARALLEL_PAGES:
            parts = _split(group, workers)
            futures = [executor.submit(render_jobs, output_dir, part,
                                       {i: articles[i] for i in {i for j in part for i in j.ids} if i in articles},
                                       site) for part in parts]
            for future in futures:
                out.add(future.result())
        else:
            out.add(render_jobs(output_dir, group, articles, site))

    planned = {job.key for job in plan.jobs}
    gone = sorted(k for k in previous if k not in planned)
    for key in gone:
        for ext in FORMATS.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(output_dir / (key + ext))
                out.written.append(key + ext)

    from aggregator.publish.index_html import render_index_html
    from aggregator.publish.opml import OPML_NAME, render_opml

    for rel_path, data in ((OPML_NAME, render_opml(plan.index, site)),
                           ("index.html", render_index_html(plan.index, site))):
        try:
            _emit(output_dir, rel_path, data, out)
        except PublishError as e:
            log.error("not published: %s", e)
            out.failed.append((rel_path, str(e)))

    return SiteResult(
        written=tuple(out.written), unchanged=tuple(out.unchanged), skipped=tuple(out.skipped), done=tuple(out.done),
        failed=tuple(out.failed), gone=tuple(gone), changed_feeds=tuple(out.changed_feeds),
        rendered=len(todo), kept=kept,
    )
