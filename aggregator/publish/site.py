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
from dataclasses import dataclass
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


def publish_site(
    output_dir: Path,
    plan: SitePlan,
    site: Site,
    *,
    previous: Mapping[str, OutputState],
    load: Callable[[Sequence[int]], Sequence[StoredArticle]],
    force: bool = False,
) -> SiteResult:
    """Bring ``output_dir`` in line with ``plan``. ``force`` renders every page (the
    files are still rewritten only when their bytes change)."""
    from aggregator.publish.validate import validate

    output_dir = Path(output_dir)
    written: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = list(plan.skipped)
    done: list[OutputState] = []
    failed: list[tuple[str, str]] = []
    changed_feeds: list[str] = []
    kept = 0

    def emit(rel_path: str, data: bytes) -> bool:
        """Validate, then write atomically; True when the file changed. Raises
        PublishError when refused or unwritable (the old file stays)."""
        validate(rel_path, data)
        changed = write_atomic(output_dir / rel_path, data)
        (written if changed else unchanged).append(rel_path)
        return changed

    todo: list[PageJob] = []
    for job in plan.jobs:
        prev = previous.get(job.key)
        paths = [job.feed.path(fmt, job.number) for fmt in FORMATS]
        if (not force and prev is not None and prev.signature == job.signature
                and all((output_dir / p).is_file() for p in paths)):
            unchanged.extend(paths)
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
        caches: dict[str, dict] = {}  # per batch: the articles behind the ids stay the same
        for job in group:
            page = Page(feed=job.feed, items=tuple(articles[i] for i in job.ids if i in articles),
                        number=job.number, archives=job.archives)
            problems: list[str] = []
            for fmt in FORMATS:
                rel_path = page.path(fmt)
                try:
                    data, left_out = _render(page, site, fmt, caches)
                    skipped.extend(left_out)
                    if emit(rel_path, data) and job.number is None:
                        changed_feeds.append(rel_path)
                except PublishError as e:
                    log.error("not published: %s", e)
                    problems.append(str(e))
            if problems:
                failed.append((job.key, "; ".join(problems)))
            else:
                done.append(OutputState(path=job.key, signature=job.signature, items=len(job.ids),
                                        updated=job.updated if job.ids else None))

    planned = {job.key for job in plan.jobs}
    gone = sorted(k for k in previous if k not in planned)
    for key in gone:
        for ext in FORMATS.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(output_dir / (key + ext))
                written.append(key + ext)

    from aggregator.publish.index_html import render_index_html
    from aggregator.publish.opml import OPML_NAME, render_opml

    for rel_path, data in ((OPML_NAME, render_opml(plan.index, site)),
                           ("index.html", render_index_html(plan.index, site))):
        try:
            emit(rel_path, data)
        except PublishError as e:
            log.error("not published: %s", e)
            failed.append((rel_path, str(e)))

    return SiteResult(
        written=tuple(written), unchanged=tuple(unchanged), skipped=tuple(skipped), done=tuple(done),
        failed=tuple(failed), gone=tuple(gone), changed_feeds=tuple(changed_feeds),
        rendered=len(todo), kept=kept,
    )
