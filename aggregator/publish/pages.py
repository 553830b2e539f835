"""What the renderers receive: one output feed (``FeedDef``), one document of it (``Page``)
and the site-wide facts (``Site``). Frozen values, no I/O.

Layout under the output folder (``stem`` is ``all``, ``category/<slug>``,
``source/<slug>``, ``channel/<slug>`` or ``custom/<name>``)::

    <stem>.rss.xml  <stem>.atom.xml  <stem>.json      the current (subscription) documents
    archive/<stem>/<n>.rss.xml  .atom.xml  .json      archive page n, 1 = oldest (RFC 5005)

Archive pages hold ``limit`` articles each in the order they were stored (article id),
so a page's membership never changes once it is full; a page is archived when it is full
and a newer article exists (a feed that never overflowed has no archive). The
current document holds the newest ``limit`` articles by date and links to the newest
archive page (``prev-archive``; JSON Feed: ``next_url``). Articles newer than the last
full page and older than the current document's newest ``limit`` are in neither until
their page fills: that gap is at most one page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aggregator.models import StoredArticle

#: format -> file extension (after the stem)
FORMATS: dict[str, str] = {"rss": ".rss.xml", "atom": ".atom.xml", "json": ".json"}
#: format -> media type served and written in self links
MEDIA_TYPES: dict[str, str] = {
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "json": "application/feed+json",
}
AXES = ("all", "category", "source", "channel", "custom")
#: ``updated`` of a page with no items: fixed, so an empty feed is byte-stable too.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FeedDef:
    """One output feed: a value of one axis (or a ``[[feeds]]`` rule, or everything)."""

    axis: str  # one of AXES
    key: str  # the value on that axis ("" for "all"; the [[feeds]] name for "custom")
    title: str  # as feed readers show it, e.g. "aggregator · 金融"
    description: str
    stem: str  # "category/金融": files are stem + FORMATS[fmt]
    limit: int  # articles in the current document, and per archive page
    ttl: int  # minutes: the shortest polling interval among the sources that feed it

    def path(self, fmt: str, page: int | None = None) -> str:
        """Relative POSIX path of the current document (page None) or archive page n."""
        if page is None:
            return self.stem + FORMATS[fmt]
        return f"archive/{self.stem}/{page}{FORMATS[fmt]}"

    def page_key(self, page: int | None = None) -> str:
        """The name of one page, format aside (``category/金融``, ``archive/category/金融/3``)."""
        return self.stem if page is None else f"archive/{self.stem}/{page}"


@dataclass(frozen=True)
class Site:
    base_url: str  # URL of the output folder, ends with "/"
    title: str
    hub: str | None = None  # WebSub hub announced as rel="hub"
    #: source name -> the URL of its feed (RSS/Atom <source>, JSON Feed _source)
    source_urls: Mapping[str, str] = field(default_factory=dict)

    def url(self, rel_path: str = "") -> str:
        """Absolute URL of a file under the output folder (``rel_path`` percent-encoded)."""
        from urllib.parse import quote

        return self.base_url + quote(rel_path, safe="/")


@dataclass(frozen=True)
class Page:
    """One document of a feed: the current one (``number`` None) or archive page n."""

    feed: FeedDef
    items: tuple[StoredArticle, ...]  # newest first (date desc, id desc)
    number: int | None = None
    archives: int = 0  # full archive pages the feed has (the newest is page ``archives``)

    @property
    def is_archive(self) -> bool:
        return self.number is not None

    def path(self, fmt: str) -> str:
        return self.feed.path(fmt, self.number)

    @property
    def updated(self) -> datetime:
        """Newest ``updated`` among the items; EPOCH when there are none."""
        return max((_utc(a.updated) for a in self.items), default=EPOCH)

    def links(self, fmt: str) -> dict[str, str]:
        """rel -> relative path of the pages this one links to, in ``fmt``:
        ``self``, ``current`` (archives only), ``prev-archive`` (older page),
        ``next-archive`` (newer page, archives only)."""
        out = {"self": self.path(fmt)}
        if self.number is None:
            if self.archives:
                out["prev-archive"] = self.feed.path(fmt, self.archives)
            return out
        out["current"] = self.feed.path(fmt)
        if self.number > 1:
            out["prev-archive"] = self.feed.path(fmt, self.number - 1)
        if self.number < self.archives:
            out["next-archive"] = self.feed.path(fmt, self.number + 1)
        return out


@dataclass(frozen=True)
class Composed:
    """One rendered document as its parts: ``head + separator.join(items) + tail``.

    The renderers build each item once per publish run and reuse its bytes in every page
    that holds the article (its "all", category, source and channel feeds, an archive
    page); keeping the parts lets ``validate.validate_composed`` check each item once too.
    ``head + tail`` is itself a whole document: the page without its items.
    """

    head: bytes
    items: tuple[bytes, ...]
    tail: bytes
    separator: bytes = b""

    @property
    def data(self) -> bytes:
        return self.head + self.separator.join(self.items) + self.tail


@dataclass(frozen=True)
class IndexEntry:
    """One feed as ``index.html`` and ``index.opml`` list it."""

    feed: FeedDef
    items: int  # articles the feed holds in all (current document and archives)
    updated: datetime | None  # newest article update, None when empty


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
