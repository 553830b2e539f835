"""Frozen, stage-named values passed between the pipeline stages.

    Source --fetch--> Fetched | NotModified --parse--> ParsedFeed(ParsedEntry...)
           --normalize--> ArticleDraft --store--> StoredArticle --publish--> files

Nothing from a third-party library (FeedParserDict, sqlite3.Row, httpx.Response, feedgen
objects) crosses a module boundary: each stage converts to one of these at its edge.
All datetimes here are timezone-aware UTC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime


# --- configuration -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One ``[[sources]]`` table of config.toml, with defaults resolved."""

    name: str
    url: str
    category: str
    channel: str | None
    interval: int  # seconds between polls
    timezone: str | None = None  # IANA name for dates written without an offset
    options: RequestOptions = field(default_factory=lambda: RequestOptions())
    fulltext: FullTextRule | None = None  # None: "never" (the item's own content only)
    rsshub: tuple[tuple[str, str | int | bool], ...] = ()  # RSSHub query parameters of an rsshub:// source


FULLTEXT_MODES = ("never", "always", "auto")


@dataclass(frozen=True)
class FullTextRule:
    """A source's ``fulltext`` settings: when to fetch an item's article page ("always" or
    "auto", see fulltext.should_fetch) and how to take the article out of it."""

    mode: str
    content_selector: str | None = None
    remove_selectors: tuple[str, ...] = ()


# --- fetch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Validators:
    """HTTP cache validators remembered per source for conditional GET (RFC 9110 §13)."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchLimits:
    """Everything the fetcher may do, decided by config, never read from globals."""

    user_agent: str
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    deadline: float = 60.0  # total seconds for one fetch, redirects included
    max_body_bytes: int = 15 * 1024 * 1024  # counted after decompression
    max_redirects: int = 5
    allow_private_networks: bool = False


@dataclass(frozen=True)
class RequestOptions:
    """Per-source request settings, resolved by config (secrets already substituted).

    ``headers`` and ``proxy`` may hold credentials: they are left out of ``repr`` and the
    fetcher never logs them or puts them in error texts.
    """

    user_agent: str | None = None  # overrides FetchLimits.user_agent
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # Cookie, Referer, Authorization...
    timeout: float | None = None  # overrides FetchLimits.deadline (total seconds) for this source
    proxy: str | None = field(default=None, repr=False)  # http://, https://, socks5:// or socks5h:// URL


@dataclass(frozen=True)
class Fetched:
    """A 200 response with its whole (decoded, capped) body."""

    url: str  # what was asked for
    final_url: str  # after redirects
    status: int
    headers: tuple[tuple[str, str], ...]  # lower-case names, in arrival order
    body: bytes
    validators: Validators
    permanent_url: str | None = None  # set when every hop to final_url was 301/308

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class NotModified:
    """A 304: nothing to parse, nothing to write."""

    url: str
    final_url: str
    validators: Validators
    headers: tuple[tuple[str, str], ...] = ()  # a 304 may refresh Cache-Control / Expires
    permanent_url: str | None = None


# --- parse ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedEntry:
    """One item as the feed states it. Strings are raw: HTML is untrusted and uncleaned."""

    guid: str | None
    link: str | None
    title: str | None  # may hold entities or markup
    content: str | None  # the fullest HTML body the feed carries
    summary: str | None  # the short form, if different from content
    base_url: str | None  # resolve relative URLs in content against this (xml:base / link)
    published: datetime | None
    updated: datetime | None
    author: str | None
    image: str | None  # media:thumbnail / media:content / image enclosure / JSON image
    tags: tuple[str, ...] = ()
    published_raw: str | None = None  # the date strings as written, for dates.read_date
    updated_raw: str | None = None


@dataclass(frozen=True)
class ParsedFeed:
    title: str | None
    link: str | None
    version: str  # feedparser's version string ("rss20", "atom10", ...) or "json1x"
    entries: tuple[ParsedEntry, ...]
    warnings: tuple[str, ...] = ()  # tolerated problems (feedparser's bozo reason, ...)
    ttl_minutes: int | None = None  # RSS 2.0 <ttl>
    update_period: str | None = None  # RSS 1.0 mod_syndication sy:updatePeriod
    update_frequency: int | None = None  # sy:updateFrequency


@dataclass(frozen=True)
class FeedLink:
    """A feed advertised by an HTML page (``<link rel="alternate" type=...>``)."""

    url: str
    type: str
    title: str | None = None


# --- normalize -----------------------------------------------------------------------


@dataclass(frozen=True)
class ArticleDraft:
    """An item normalized into the article format, not yet stored.

    ``date`` is None when the item carries no date: the store then uses the time the
    article was first seen, which it keeps, so the date is stable across runs.
    """

    source: str
    category: str
    channel: str | None
    guid: str  # upstream identity inside its source: guid, else link, else content hash
    link: str | None
    title: str
    author: str
    date: datetime | None
    image: str | None  # the item's own image; None -> placeholder
    body_html: str  # cleaned, safe HTML (not yet wrapped or escaped for Hexo)
    summary: str  # plain-text excerpt
    dedup_keys: tuple[str, ...]  # identity keys, strongest first (see normalize.dedup_keys)
    content_hash: str  # changes only when something a reader sees changes
    date_note: str = "item"  # why the article has its date (dates.decide_date)
    fingerprint: int | None = None  # 64-bit SimHash of title + text (None: too short to judge)
    text_len: int = 0  # visible characters of the body: "the fullest body" wins a merge
    # Full text (issue 9): why the body is, or is not, the article page's text, e.g.
    # "kept: 2,341 chars (trafilatura)", "login wall (请登录)"; None when not tried. The
    # dedup keys and content_hash stay those of the item's own content, so the next poll
    # of the same item is "unchanged", not an edit back to the summary.
    fulltext: str | None = None


# --- store ---------------------------------------------------------------------------


PLACEHOLDER_IMAGE = "https://picsum.photos/400/300?random={n}"


@dataclass(frozen=True)
class StoredArticle:
    """An article as the database holds it; what the publisher receives."""

    id: int
    uid: str  # 32 hex chars, fixed at creation, never changes
    source: str
    category: str
    channel: str | None
    guid: str
    link: str | None
    title: str
    author: str
    date: datetime  # item date, else first seen
    image: str | None
    body_html: str
    summary: str
    content_hash: str
    first_seen: datetime
    updated: datetime  # last time its content changed (== first_seen when never edited)
    post_name: str  # file name under <output_dir>/posts/, fixed at creation
    date_note: str = "item"  # "item", or why the first-seen time stands in
    sources: tuple[tuple[str, str | None], ...] = ()  # (name, link) of every source merged in, first first

    @property
    def categories(self) -> list[str]:
        """The seed's three-level categories: topic, source, channel (if any)."""
        cats = [self.category, self.source]
        if self.channel:
            cats.append(self.channel)
        return cats

    @property
    def placeholder_number(self) -> int:
        """1..10000, derived from the identity so it is the same on every run."""
        return int(hashlib.sha256(self.uid.encode()).hexdigest()[:8], 16) % 10000 + 1

    @property
    def thumbnail(self) -> str:
        return self.image or PLACEHOLDER_IMAGE.format(n=self.placeholder_number)

    @property
    def feed_id(self) -> str:
        """The guid/Atom id we publish: a URN derived from ``uid``, so it never changes,
        even if ``base_url`` does (RFC 4122 name-based UUID)."""
        import uuid

        return uuid.uuid5(uuid.NAMESPACE_URL, "aggregator:article:" + self.uid).urn


# --- pipeline results ----------------------------------------------------------------


@dataclass(frozen=True)
class SourceResult:
    """What one poll of one source did. ``error`` is the message when it failed."""

    source: str
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    not_modified: bool = False
    error: str | None = None
    error_kind: str | None = None
    next_poll: datetime | None = None  # when this source is due again (None: gone)
    moved_to: str | None = None  # a 301/308 target recorded in this poll
    gone: bool = False  # HTTP 410: no longer polled
    skipped: str | None = None  # why it was not polled at all (gone, backing off)
    skipped_entries: tuple[str, ...] = ()  # one message per entry that could not be used


@dataclass(frozen=True)
class CycleResult:
    results: tuple[SourceResult, ...]
    published: tuple[str, ...] = ()  # output files (re)written
    posts_written: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return any(r.new or r.updated for r in self.results)


# --- publishing and operations --------------------------------------------------------


@dataclass(frozen=True)
class FeedRule:
    """One ``[[feeds]]`` table of config.toml: a user-defined output feed.

    Selection: an article is taken when its category is in ``categories`` *or* one of its
    sources is in ``sources`` *or* its channel is in ``channels``; all three empty takes
    every article. Then the filters (RSSHub's ``filter``/``filterout`` are the model): each
    ``include_*`` pattern that is set must match, no ``exclude_*`` pattern may match.
    The plain ``include`` / ``exclude`` patterns (field "any") search the title and the
    plain text together, like RSSHub's ``filter``; ``*_title`` / ``*_text`` / ``*_author``
    search one field.
    Patterns are Python regular expressions, searched case-insensitively unless
    ``case_sensitive``.
    """

    name: str
    title: str | None = None
    categories: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    include: tuple[tuple[str, str], ...] = ()  # (field, pattern); field: any | title | text | author
    exclude: tuple[tuple[str, str], ...] = ()
    case_sensitive: bool = False
    limit: int | None = None  # items in the current document; items_per_feed when None


@dataclass(frozen=True)
class ArticleRef:
    """What planning the published feeds needs of an article: everything but its body."""

    id: int
    source: str
    sources: tuple[str, ...]  # every source merged into it, the first first
    category: str
    channel: str | None
    title: str
    author: str
    date: datetime
    updated: datetime
    content_hash: str


@dataclass(frozen=True)
class OutputState:
    """What was last published for one output page (``category/金融``, ``archive/all/3``)."""

    path: str
    signature: str | None
    items: int = 0
    updated: datetime | None = None  # newest article update on the page
    published: datetime | None = None  # when its files were last written
    error: str | None = None  # why the last attempt was refused (validation), if it was
    error_at: datetime | None = None


@dataclass(frozen=True)
class SourceStats:
    name: str
    state: str  # new | ok | failing | gone
    polls_total: int
    errors_total: int
    last_success: datetime | None
    last_attempt: datetime | None
    next_poll: datetime | None
    last_error: str | None
    articles: int


@dataclass(frozen=True)
class Stats:
    """A snapshot of the database for /metrics, /healthz and ``status``."""

    sources: tuple[SourceStats, ...]
    articles_total: int
    articles_by_category: tuple[tuple[str, int], ...]
    articles_last_24h: int
    last_cycle_at: datetime | None  # end of the last poll cycle (any source)
    last_cycle_seconds: float | None
    last_publish_at: datetime | None
    last_publish_seconds: float | None
    published_pages: int
    publish_errors: tuple[tuple[str, str], ...]  # (output page, message)
