"""Which feeds exist, which articles each holds, and which pages must be rebuilt.

Owns: the output feeds (one per value of every axis — category, source, channel — plus
"all" and every ``[[feeds]]`` rule), their names on disk (``slug``), membership and the
``[[feeds]]`` filters, the split into the current document and RFC 5005 archive pages,
and each page's *signature*: a hash of everything its bytes depend on, so that a page
whose signature did not change is neither rendered nor rewritten.

Must not: query the database (it receives ``ArticleRef`` values and a callback for
bodies), render, write files or read the clock. Pure: same input, same plan.

Membership decisions:
- category and channel: the article's own (first source's) category and channel — an
  article has one topic; a copy merged in from another category does not move it;
- source: every source the article came from (``ArticleRef.sources``), so a source's feed
  is complete even when its copy of a story was merged into another source's article;
- all: every article; custom: see :class:`aggregator.models.FeedRule`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.models import ArticleRef, FeedRule, Source
from aggregator.publish.pages import EPOCH, FeedDef, IndexEntry, Site
from aggregator.text import strip_illegal_chars

#: bump when the renderers change what they write, so every page is rebuilt once
RENDER_VERSION = 1
_SLUG_MAX_BYTES = 80  # + "/123.atom.xml" stays far below NAME_MAX (255 bytes)


# --- names ------------------------------------------------------------------------------


def _readable_slug(name: str) -> str:
    # Unicode letters, digits and combining marks (Devanagari, Thai… need them) are kept,
    # so 金融 stays 金融 (percent-encoded only inside URLs); everything else, "/", "." and
    # "\" included, becomes "-". No "." survives, so no slug is hidden or "..".
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", name).lower():
        kind = unicodedata.category(ch)[0]
        if kind in "LN" or ch == "_" or (kind == "M" and out and out[-1] != "-"):
            out.append(ch)
        elif out and out[-1] != "-":
            out.append("-")
    slug = "".join(out).strip("-_")
    while len(slug.encode("utf-8")) > _SLUG_MAX_BYTES:
        slug = slug[:-1]
    return slug.rstrip("-_")


def slug(key: str) -> str:
    """Deterministic, file-system and URL safe name for one axis value.

    A value that is already its own slug (``金融``, ``tech-news``) keeps it as is; any
    other (``Tech News``, ``C++``, ``../x``, ``🙂``) gets its readable part plus 8 hex of
    its SHA-256, so two values never share a file even when they read alike (``C++`` /
    ``C#``, or ``Tech`` / ``tech`` on a case-insensitive file system), and a feed's URL
    does not depend on which other feeds exist.
    """
    readable = _readable_slug(strip_illegal_chars(key))
    if readable and readable == key:
        return readable
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}" if readable else digest


_DESCRIPTIONS = {
    "all": "Everything collected by {site}",
    "category": "Articles in {key}, collected by {site}",
    "source": "Articles from {key}, collected by {site}",
    "channel": "Articles in the channel {key}, collected by {site}",
    "custom": "{key}: a selection by {site}",
}


def feed_def(axis: str, key: str, *, site_title: str, limit: int, ttl: int, title: str | None = None) -> FeedDef:
    """The feed of one axis value (``feed_def("category", "金融", ...)``)."""
    if axis == "all":
        stem, shown = "all", site_title
    elif axis == "custom":
        stem, shown = f"custom/{key}", title or f"{site_title} · {key}"
    else:
        stem, shown = f"{axis}/{slug(key)}", f"{site_title} · {key}"
    return FeedDef(
        axis=axis, key=key, title=strip_illegal_chars(shown),
        description=strip_illegal_chars(_DESCRIPTIONS[axis].format(key=key, site=site_title)),
        stem=stem, limit=limit, ttl=ttl,
    )


# --- membership -------------------------------------------------------------------------


def _ttl(sources: Iterable[Source], default_interval: int) -> int:
    """Minutes: the shortest polling interval among ``sources`` (RSS ``<ttl>``; a reader
    polling more often than the sources are polled learns nothing new)."""
    seconds = min((s.interval for s in sources), default=default_interval)
    return max(1, math.ceil(seconds / 60))


class _Matcher:
    """A [[feeds]] rule as a predicate over articles; bodies are asked for only when a
    text pattern needs them, and only for articles the selection already took."""

    def __init__(self, rule: FeedRule):
        flags = 0 if rule.case_sensitive else re.IGNORECASE
        self.rule = rule
        self.include = [(f, re.compile(p, flags)) for f, p in rule.include]
        self.exclude = [(f, re.compile(p, flags)) for f, p in rule.exclude]
        self.needs_text = any(f in ("any", "text") for f, _ in (*rule.include, *rule.exclude))

    def selects(self, ref: ArticleRef) -> bool:
        r = self.rule
        if not (r.categories or r.sources or r.channels):
            return True
        return (ref.category in r.categories or any(s in r.sources for s in ref.sources)
                or (ref.channel is not None and ref.channel in r.channels))

    def passes(self, ref: ArticleRef, text: str) -> bool:
        fields = {"title": ref.title, "text": text, "author": ref.author, "any": f"{ref.title}\n{text}"}
        return (all(p.search(fields[f]) for f, p in self.include)
                and not any(p.search(fields[f]) for f, p in self.exclude))


@dataclass(frozen=True)
class PageJob:
    """One page to (maybe) render: its feed, which articles, and its signature."""

    feed: FeedDef
    number: int | None  # None: the current document; n: archive page n (1 = oldest)
    archives: int  # full archive pages of the feed
    ids: tuple[int, ...]  # newest first (date desc, id desc)
    signature: str
    updated: datetime  # newest article update on the page (EPOCH when empty)

    @property
    def key(self) -> str:
        return self.feed.page_key(self.number)


@dataclass(frozen=True)
class SitePlan:
    jobs: tuple[PageJob, ...]
    index: tuple[IndexEntry, ...]
    skipped: tuple[str, ...] = ()  # feeds left out (a slug taken twice), one message each


def _newest_first(refs: Iterable[ArticleRef]) -> list[ArticleRef]:
    return sorted(refs, key=lambda r: (r.date, r.id), reverse=True)


def _signature(feed: FeedDef, number: int | None, archives: int, refs: Sequence[ArticleRef], site: Site) -> str:
    # What the page links to, not the archive count itself: a new archive page changes the
    # current document and the previously newest page (its next-archive link), no other.
    links = ["current", archives] if number is None else ["archive", number, number < archives]
    data = [
        RENDER_VERSION, site.base_url, site.title, site.hub,
        [feed.axis, feed.key, feed.title, feed.description, feed.stem, feed.limit, feed.ttl],
        links,
        [[r.id, r.content_hash, r.updated.isoformat(), r.date.isoformat(), r.author, r.source,
          site.source_urls.get(r.source)] for r in refs],
    ]
    return hashlib.sha256(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


def _pages(feed: FeedDef, members: Sequence[ArticleRef], site: Site) -> list[PageJob]:
    """Archive pages of ``limit`` articles in id order, and the current document: the
    newest ``limit``. A page is archived once it is full *and* a newer article exists
    (so a feed that never overflowed has no archive duplicating its current document);
    its membership is fixed from then on."""
    by_id = sorted(members, key=lambda r: r.id)
    archives = max(0, (len(by_id) - 1) // feed.limit)
    jobs = []
    current = _newest_first(members)[: feed.limit]
    for number, refs in [(None, current)] + [
        (n, _newest_first(by_id[(n - 1) * feed.limit: n * feed.limit])) for n in range(1, archives + 1)
    ]:
        jobs.append(PageJob(
            feed=feed, number=number, archives=archives, ids=tuple(r.id for r in refs),
            signature=_signature(feed, number, archives, refs, site),
            updated=max((r.updated for r in refs), default=EPOCH),
        ))
    return jobs


def plan_site(
    refs: Sequence[ArticleRef],
    sources: Sequence[Source],
    rules: Sequence[FeedRule],
    *,
    site: Site,
    items_per_feed: int,
    default_interval: int,
    bodies: Callable[[Sequence[int]], Mapping[int, str]] = lambda ids: {},
) -> SitePlan:
    """Every feed and every page of it. ``bodies(ids)`` returns cleaned body HTML; it is
    called only for the text filters of ``rules``.

    Feeds exist for every configured category, source and channel (empty until their
    first article) and for every value the stored articles carry (a source removed from
    the config keeps its feed while its articles are kept).
    """
    from aggregator.text import html_to_text

    values: dict[str, set[str]] = {"category": set(), "source": set(), "channel": set()}
    for s in sources:
        values["category"].add(s.category)
        values["source"].add(s.name)
        if s.channel:
            values["channel"].add(s.channel)
    members: dict[tuple[str, str], list[ArticleRef]] = {}
    for r in refs:
        members.setdefault(("category", r.category), []).append(r)
        for name in r.sources:
            members.setdefault(("source", name), []).append(r)
        if r.channel:
            members.setdefault(("channel", r.channel), []).append(r)
    for axis, key in members:
        values[axis].add(key)

    def ttl_of(pick: Callable[[Source], bool]) -> int:
        return _ttl([s for s in sources if pick(s)], default_interval)

    feeds: list[tuple[FeedDef, list[ArticleRef]]] = [
        (feed_def("all", "", site_title=site.title, limit=items_per_feed, ttl=ttl_of(lambda s: True)), list(refs))
    ]
    pickers: dict[str, Callable[[str], Callable[[Source], bool]]] = {
        "category": lambda k: lambda s: s.category == k,
        "source": lambda k: lambda s: s.name == k,
        "channel": lambda k: lambda s: s.channel == k,
    }
    skipped: list[str] = []
    for axis in ("category", "source", "channel"):
        taken: dict[str, str] = {}
        for key in sorted(values[axis]):
            feed = feed_def(axis, key, site_title=site.title, limit=items_per_feed, ttl=ttl_of(pickers[axis](key)))
            if feed.stem in taken:
                # Only a SHA-256 prefix collision, or a value literally named like another's
                # hashed slug, gets here; the first in sorted order keeps the file.
                skipped.append(f"{axis} {key!r}: feed name {feed.stem!r} already used by {taken[feed.stem]!r}")
                continue
            taken[feed.stem] = key
            feeds.append((feed, members.get((axis, key), [])))

    text_cache: dict[int, str] = {}
    for rule in rules:
        matcher = _Matcher(rule)
        chosen = [r for r in refs if matcher.selects(r)]
        if matcher.needs_text:
            missing = [r.id for r in chosen if r.id not in text_cache]
            if missing:
                text_cache.update((i, html_to_text(b)) for i, b in bodies(missing).items())
        chosen = [r for r in chosen if matcher.passes(r, text_cache.get(r.id, ""))]
        picked = {s.name for s in sources if matcher.selects(ArticleRef(
            id=0, source=s.name, sources=(s.name,), category=s.category, channel=s.channel, title="", author="",
            date=EPOCH, updated=EPOCH, content_hash=""))}
        feed = feed_def("custom", rule.name, site_title=site.title, limit=rule.limit or items_per_feed,
                        ttl=ttl_of(lambda s, picked=picked: s.name in picked), title=rule.title)
        feeds.append((feed, chosen))

    jobs: list[PageJob] = []
    index: list[IndexEntry] = []
    for feed, chosen in feeds:
        jobs += _pages(feed, chosen, site)
        index.append(IndexEntry(feed=feed, items=len(chosen), updated=max((r.updated for r in chosen), default=None)))
    return SitePlan(jobs=tuple(jobs), index=tuple(index), skipped=tuple(skipped))
