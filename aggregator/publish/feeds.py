"""RSS 2.0 and Atom 1.0 documents of one feed page (feedgen for the page, lxml for its
items, which come out exactly as feedgen writes them: see "items" below).

Owns: the bytes of one page (``render_rss`` / ``render_atom``; ``render_page`` gives them
as parts, each article's entry built once per publish run) — the current document of a
feed or one of its RFC 5005 archive pages (see ``pages.py`` for the layout).

Must not: query the database, read the clock, write files, or clean HTML (bodies arrive
cleaned). Same page in -> byte-identical bytes out: nothing here depends on "now".

Decisions (see HAZARDS.md, "Publishing"):

- items: the newest ``limit`` by (date desc, id desc), appended in that order (feedgen
  prepends by default);
- guid / Atom id: ``article.feed_id`` (a URN, ``isPermaLink="false"``), stable even when
  ``base_url`` changes;
- full cleaned HTML in ``content:encoded`` (RSS) and ``<content type="html">`` (Atom);
  the plain-text excerpt in ``<description>`` (HTML-escaped, since RSS readers treat it
  as HTML; the title stands in when there is no excerpt, so the body never moves into
  ``<description>``) and Atom ``<summary>``;
- author: RSS ``<author>`` must be an e-mail address, so RSS uses ``dc:creator``; Atom
  uses ``<author><name>``, with the site as feed-level author for entries without one;
- ``lastBuildDate`` / ``<updated>``: the newest ``article.updated`` among the items; an
  empty feed says 1970-01-01T00:00:00Z (EPOCH) so that it too is byte-stable;
- links: ``atom:link rel="self"`` (with its media type), ``rel="alternate"`` (the index
  page), ``rel="hub"`` when a WebSub hub is configured, and the RFC 5005 links
  (``prev-archive`` from the current document to the newest archive page; ``current``,
  ``prev-archive`` and ``next-archive`` between archive pages, which also carry
  ``<fh:archive/>``). Every page of a feed has the same feed id (the current Atom URL);
- ``<ttl>`` (RSS): the shortest polling interval of the sources feeding it, in minutes;
- attribution: RSS ``<source url="…">name</source>`` and Atom ``<source>`` (title and
  link) name the source the article came from and its feed URL, when configured;
- every string is stripped of XML-illegal characters first; an item that still fails is
  left out with a warning, never the whole feed;
- images (``feed_image_url``): only the item's *own* image (``article.image``) is
  published. The picsum placeholder of ``article.thumbnail`` is for Hexo themes, which
  need some picture; in a feed a random photo would pass for the article's. An item
  without an image gets no image element at all.
  RSS: ``<media:thumbnail url=…/>`` (Media RSS, http://search.yahoo.com/mrss/), the
  element readers look at for an item's picture. No ``<enclosure>``: RSS 2.0 allows one
  per item and podcast clients download it as the item's media file.
  Atom: ``<link rel="enclosure" type="image/…" href=…/>`` (RFC 4287 §4.2.7.2; Atom allows
  any number; ``length`` is optional and omitted, the type is guessed from the extension)
  plus the same ``<media:thumbnail>`` as RSS, so both formats name the same picture.
  The URL is published as the WHATWG URL parser would fetch it: tab/CR/LF removed, the
  ASCII characters never valid in a URL (space, ``"<>`{}``, controls) percent-encoded,
  non-ASCII kept (an IRI); anything but an absolute http(s) URL is left out.

Threads: feedgen formats RFC 822 dates by switching the *process-wide* locale to C and
back. ``_FEEDGEN_LOCK`` serialises our own renders, but nothing else in the process may
rely on the locale while a render runs: call ``publish`` from one thread only.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

# First: feedgen.util reads ``lxml.etree`` after a bare ``import lxml``, which works only
# once something has imported lxml.etree (until issue 8, feedgen.entry did, imported first).
from lxml import etree

# isort: split
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.ext.dc import DcEntryExtension, DcExtension
from feedgen.ext.media import MediaEntryExtension, MediaExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from aggregator import __version__
from aggregator.errors import PublishError
from aggregator.models import StoredArticle
from aggregator.publish.pages import EPOCH, MEDIA_TYPES, Composed, Page, Site
from aggregator.text import strip_illegal_chars

log = logging.getLogger(__name__)

GENERATOR = "aggregator"
UNTITLED = "(untitled)"
ATOM_NS = "http://www.w3.org/2005/Atom"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005
INDEX_PAGE = "index.html"

_FEEDGEN_LOCK = threading.RLock()


# --- images ---------------------------------------------------------------------------

#: Fixed here rather than ``mimetypes``, which reads the host's mime.types: another
#: machine could answer differently and the output would no longer be byte-identical.
IMAGE_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg",
    "png": "image/png", "apng": "image/apng", "gif": "image/gif", "webp": "image/webp",
    "avif": "image/avif", "svg": "image/svg+xml", "bmp": "image/bmp", "ico": "image/x-icon",
    "tif": "image/tiff", "tiff": "image/tiff", "heic": "image/heic", "heif": "image/heif",
    "jxl": "image/jxl",
}
# The commonest photo type; Atom's type is advisory anyway (RFC 4287 §4.2.7.3).
DEFAULT_IMAGE_TYPE = "image/jpeg"

# WHATWG URL Standard, "basic URL parser": tab and newlines are removed anywhere, C0
# controls and spaces trimmed at both ends, and the "path percent-encode set" minus its
# structural "#" and "?" is percent-encoded (C0 controls, space, " < > ` { } and DEL).
_URL_REMOVED = re.compile(r"[\t\n\r]")
_URL_TRIMMED = "".join(map(chr, range(0x21)))
_URL_ESCAPED = {c: f"%{c:02X}" for c in [*range(0x20), 0x7F, *map(ord, ' "<>`{}')]}


def feed_image_url(image: str | None) -> str | None:
    """The item's own image URL as the feeds publish it, or None when there is none to
    publish (no image, or not an absolute http(s) URL). Never the placeholder."""
    if not image:
        return None
    url = _URL_REMOVED.sub("", strip_illegal_chars(image)).strip(_URL_TRIMMED)
    url = url.translate(_URL_ESCAPED)
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1" and other broken hosts
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def image_type(url: str) -> str:
    """MIME type from the extension of the URL's last path segment (query ignored)."""
    try:
        name = urlsplit(url).path.rsplit("/", 1)[-1]
    except ValueError:
        return DEFAULT_IMAGE_TYPE
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem):  # "image", ".png": no extension
        return DEFAULT_IMAGE_TYPE
    return IMAGE_TYPES.get(extension.lower(), DEFAULT_IMAGE_TYPE)


class _FeedLinks(BaseExtension):
    """RSS: the ``atom:link`` elements feedgen writes only for ``rel="self"`` (hub and
    archive links), and ``<fh:archive/>`` on archive pages, in both formats."""

    def __init__(self) -> None:
        self.rss_links: list[tuple[str, str, str]] = []  # (rel, href, type)
        self.archive = False

    def extend_ns(self):
        return {"fh": HISTORY_NS}

    def extend_rss(self, feed):
        channel = feed[0]
        for rel, href, mime_type in self.rss_links:
            link = xml_elem(f"{{{ATOM_NS}}}link", channel, href=href, rel=rel)
            if mime_type:
                link.attrib["type"] = mime_type
        if self.archive:
            xml_elem(f"{{{HISTORY_NS}}}archive", channel)
        return feed

    def extend_atom(self, feed):
        if self.archive:
            xml_elem(f"{{{HISTORY_NS}}}archive", feed)
        return feed


class _NoEntryExtension(BaseEntryExtension):
    """Entry level of ``_FeedLinks``: nothing."""


# --- rendering ------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # models promise aware UTC; a naive value is taken as UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _newest_first(articles: Sequence[StoredArticle]) -> list[StoredArticle]:
    return sorted(articles, key=lambda a: (_utc(a.date), a.id), reverse=True)


def _feed_generator(*, rss: bool) -> FeedGenerator:
    """A FeedGenerator with our extensions. Pages and item templates both come from here:
    every document of a format declares the same namespaces on its root, in the order the
    extensions are registered, so an item serialised in a template has the bytes it has in
    every page."""
    fg = FeedGenerator()
    fg.register_extension("feed_links", _FeedLinks, _NoEntryExtension, atom=True, rss=True)
    # register_extension with the classes ``load_extension("dc")`` / ("media") would find:
    # it looks for a "<name>_entry" module first, and that failed import searches the
    # file system every time (a third of the cost of a page's envelope).
    if rss:
        fg.register_extension("dc", DcExtension, DcEntryExtension, atom=False, rss=True)
    # Loaded for every feed, images or not, so the root element never depends on which
    # items are present.
    fg.register_extension("media", MediaExtension, MediaEntryExtension, atom=True, rss=True)
    return fg


def _new_feed(page: Page, site: Site, fmt: str) -> FeedGenerator:
    feed = page.feed
    fg = _feed_generator(rss=fmt == "rss")
    fg.id(site.url(feed.path("atom")))
    fg.title(feed.title)
    fg.description(feed.description)
    fg.generator(GENERATOR, version=__version__)
    fg.updated(page.updated)  # also lastBuildDate; feedgen's default is now()
    links = page.links(fmt)
    fg.feed_links.archive = page.is_archive
    extra = [(rel, site.url(path), MEDIA_TYPES[fmt]) for rel, path in links.items() if rel != "self"]
    if site.hub:
        extra.append(("hub", strip_illegal_chars(site.hub), ""))
    # RSS <channel><link> is the *last* link added: self first, alternate last.
    fg.link(href=site.url(links["self"]), rel="self", type=MEDIA_TYPES[fmt])
    if fmt == "rss":
        fg.feed_links.rss_links = extra
    else:
        for rel, href, mime_type in extra:
            fg.link(href=href, rel=rel, **({"type": mime_type} if mime_type else {}))
    fg.link(href=site.url(INDEX_PAGE), rel="alternate", type="text/html")
    if fmt == "rss":
        fg.ttl(feed.ttl)
    else:
        fg.author(name=strip_illegal_chars(site.title) or GENERATOR)
    if feed.axis in ("category", "channel"):
        fg.category(term=strip_illegal_chars(feed.key))
    return fg


# --- items ----------------------------------------------------------------------------
#
# An item is built here with lxml as feedgen 1.0.0 builds it from the calls the decisions
# above need (``FeedEntry.id/title/link/content/summary/published/updated/category/source``,
# ``author`` in Atom, ``dc:creator`` and ``media:thumbnail`` in RSS), element for element
# and attribute for attribute in feedgen's order, so the bytes are feedgen's. feedgen's own
# route cost three times as much per item (an entry object, its extensions registered anew,
# every field checked and copied, the process locale switched twice per RFC 822 date) and
# an item is built once per article and format in a publish of thousands (issue 8).
# tests/test_publish.py renders the same items through feedgen and compares the bytes.
# The envelope of each page (channel / feed level) is still feedgen's.

_CONTENT_ENCODED = "{http://purl.org/rss/1.0/modules/content/}encoded"
_DC_CREATOR = "{http://purl.org/dc/elements/1.1/}creator"
_MEDIA_THUMBNAIL = "{http://search.yahoo.com/mrss/}thumbnail"
# RFC 822 names: English whatever the locale (feedgen switches the locale to C for them)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_element = etree.Element
_child = etree.SubElement


def _rfc822(moment: datetime) -> str:
    """``Wed, 10 Nov 2021 11:50:52 GMT``: feedgen's ``%a, %d %b %Y %H:%M:%S %z`` of a UTC
    time (``%Y`` unpadded, as the C library writes it) with the "GMT" we publish."""
    m = _utc(moment)
    return (f"{_WEEKDAYS[m.weekday()]}, {m.day:02d} {_MONTHS[m.month - 1]} {m.year} "
            f"{m.hour:02d}:{m.minute:02d}:{m.second:02d} GMT")


def _texts(article: StoredArticle) -> tuple[str, str, str, list[str]]:
    """Title, summary, author and category terms as both formats publish them."""
    title = strip_illegal_chars(article.title).strip() or UNTITLED
    summary = strip_illegal_chars(article.summary).strip()
    author = strip_illegal_chars(article.author).strip() or strip_illegal_chars(article.source)
    terms = [t for t in (strip_illegal_chars(c) for c in article.categories) if t]
    return title, summary, author, terms


def _source(article: StoredArticle, site: Site) -> tuple[str, str] | None:
    """(feed URL, name) of the source the article came from, when both are known."""
    url = site.source_urls.get(article.source)
    name = strip_illegal_chars(article.source).strip()
    return (strip_illegal_chars(url), name) if url and name else None


def rss_item(article: StoredArticle, site: Site) -> etree._Element:
    """The RSS ``<item>`` of one article. Raises ValueError (lxml) for text XML cannot hold."""
    title, summary, author, terms = _texts(article)
    item = _element("item")
    _child(item, "title").text = title
    link = strip_illegal_chars(article.link) if article.link else ""
    if link:
        _child(item, "link").text = link
    # The plain-text excerpt, HTML-escaped (readers treat it as HTML); the title stands in.
    _child(item, "description").text = html.escape(summary or title, quote=False)
    _child(item, _CONTENT_ENCODED).text = strip_illegal_chars(article.body_html)
    _child(item, "guid", isPermaLink="false").text = article.feed_id
    for term in terms:
        _child(item, "category").text = term
    _child(item, "pubDate").text = _rfc822(article.date)
    source = _source(article, site)
    if source:
        _child(item, "source", url=source[0]).text = source[1]
    if author:
        _child(item, _DC_CREATOR).text = author
    image = feed_image_url(article.image)
    if image:
        _child(item, _MEDIA_THUMBNAIL, url=image)
    return item


def atom_entry(article: StoredArticle, site: Site) -> etree._Element:
    """The Atom ``<entry>`` of one article (unqualified names: the root carries the Atom
    namespace). Raises ValueError (lxml) for text XML cannot hold."""
    title, summary, author, terms = _texts(article)
    entry = _element("entry")
    _child(entry, "id").text = article.feed_id
    _child(entry, "title").text = title
    _child(entry, "updated").text = _utc(article.updated).isoformat()
    if author:
        _child(_child(entry, "author"), "name").text = author
    content = _child(entry, "content")
    body = strip_illegal_chars(article.body_html)
    if body:
        content.text = body
    content.set("type", "html")
    if article.link:
        # a bare href, as feedgen 1.0.0 writes every entry link: ``FeedEntry.atom_entry()``
        # rebinds its loop variable to the new element and then reads ``rel``/``type`` from
        # it. The enclosure below is ours, with its rel and type (an image must not pass for
        # a second ``rel="alternate"``, which RFC 4287 §4.1.1 forbids).
        _child(entry, "link", href=strip_illegal_chars(article.link))
    if summary:
        _child(entry, "summary").text = summary
    for term in terms:
        _child(entry, "category", term=term)
    _child(entry, "published").text = _utc(article.date).isoformat()
    source = _source(article, site)
    if source:
        element = _child(entry, "source")
        _child(element, "title").text = source[1]
        if source[0]:
            _child(element, "link", href=source[0])
    image = feed_image_url(article.image)
    if image:
        _child(entry, "link", href=image, rel="enclosure", type=image_type(image))
        _child(entry, _MEDIA_THUMBNAIL, url=image)
    return entry


# --- one document from reused items -----------------------------------------------------
#
# A full rebuild puts every article into four or more pages (all, its category, source and
# channel feeds, archive pages), each in RSS and Atom. feedgen rebuilds and re-serialises
# every entry of a document each time it serialises it, so an article would be turned into
# XML once per page. Instead each article is serialised once per format and run (an
# ``_ItemTemplate``) and a page is its envelope -- the page rendered by feedgen without
# items -- with the item bytes in the place where feedgen puts items: after everything
# else in <channel> (RSS) or <feed> (Atom). lxml's pretty printer indents an element by its
# depth only, and every page of a format has the same root namespaces (every extension is
# loaded for every page), so the bytes are exactly those of feedgen rendering the page
# whole. tests/test_publish.py compares the two.

#: what follows the last item: feedgen's pretty-printed end of the container and the root
_TAILS = {True: b"  </channel>\n</rss>\n", False: b"</feed>\n"}
_PROBE_TAG = "aggregator-probe"
_PROBE = f"<{_PROBE_TAG}/>\n".encode()


def _pretty(root: etree._Element) -> bytes:
    # UTF-8 like feedgen's documents (without an encoding lxml writes character references)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=False, pretty_print=True)


class _ItemTemplate:
    """Serialises one entry as it appears inside any document of its format: in a copy of
    an empty document's root (same namespace declarations) and container (same depth),
    between the bytes that surround a probe element there."""

    def __init__(self, *, rss: bool) -> None:
        self.rss = rss
        fg = _feed_generator(rss=rss)
        fg.id("urn:aggregator:template")
        fg.title("template")
        fg.description("template")
        fg.link(href="https://template.invalid/", rel="alternate")
        fg.updated(EPOCH)
        empty = fg.rss_str() if rss else fg.atom_str()
        self.root = etree.fromstring(empty, etree.XMLParser(remove_blank_text=True, resolve_entities=False))
        self.container = self.root[0] if rss else self.root
        for child in list(self.container):
            self.container.remove(child)
        probe = etree.SubElement(self.container, _PROBE_TAG)
        text = _pretty(self.root)
        self.container.remove(probe)
        at = text.index(_PROBE)
        line = text.rindex(b"\n", 0, at) + 1
        self.prefix, self.suffix = text[:line], text[at + len(_PROBE):]

    def render(self, article: StoredArticle, site: Site) -> bytes | str:
        """The entry's bytes (indentation and final newline included), or why it cannot be
        published (the entry is then left out of every page)."""
        try:
            element = rss_item(article, site) if self.rss else atom_entry(article, site)
        except ValueError as e:  # UnicodeError included
            return str(e)
        self.container.append(element)
        try:
            text = _pretty(self.root)
        finally:
            self.container.remove(element)
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):  # lxml changed its printer?
            raise PublishError(f"article {article.id}: its entry does not serialise where items go")
        return text[len(self.prefix):len(text) - len(self.suffix)]


class EntryCache:
    """Per publish run (see ``site.py``): (article id, is RSS) -> the entry's bytes, or the
    reason it cannot be published. Valid while the articles do not change; a cache handed
    another site starts over (the entries name the sources' feed URLs)."""

    def __init__(self) -> None:
        self.items: dict[tuple[int, bool], bytes | str] = {}
        self.site: Site | None = None
        self.templates: dict[bool, _ItemTemplate] = {}

    def item(self, article: StoredArticle, site: Site, *, rss: bool) -> bytes | str:
        if self.site is not site and self.site != site:
            self.items.clear()
            self.site = site
        key = (article.id, rss)
        found = self.items.get(key)
        if found is None:
            template = self.templates.get(rss)
            if template is None:
                template = self.templates[rss] = _ItemTemplate(rss=rss)
            found = self.items[key] = template.render(article, site)
        return found


def _compose(page: Page, site: Site, *, rss: bool, cache: EntryCache | None) -> tuple[Composed, list[str]]:
    fmt = "rss" if rss else "atom"
    cache = cache if cache is not None else EntryCache()
    skipped: list[str] = []
    items: list[bytes] = []
    tail = _TAILS[rss]
    with _FEEDGEN_LOCK:
        fg = _new_feed(page, site, fmt)
        try:
            envelope = fg.rss_str(pretty=True) if rss else fg.atom_str(pretty=True)
        except ValueError as e:  # UnicodeError included
            raise PublishError(f"cannot render {page.path(fmt)}: {e}") from e
        for article in _newest_first(page.items):
            entry = cache.item(article, site, rss=rss)
            if isinstance(entry, str):
                message = f"{page.path(fmt)}: article {article.id} ({article.uid}) left out: {entry}"
                log.warning("%s", message)
                skipped.append(message)
            else:
                items.append(entry)
    if rss:
        # Every date here is UTC; feedgen writes RFC 822's numeric "+0000", the seed's
        # family of feeds (and RSS 2.0's examples) write "GMT". Same instant, one style.
        envelope = _RSS_UTC.sub(rb"\1 GMT</\2>", envelope)
    if not envelope.endswith(tail):
        raise PublishError(f"cannot render {page.path(fmt)}: the document does not end as expected")
    return Composed(head=envelope[:-len(tail)], items=tuple(items), tail=tail), skipped


_RSS_UTC = re.compile(rb"(\d\d:\d\d:\d\d) \+0000</(pubDate|lastBuildDate)>")


def render_rss(page: Page, site: Site) -> bytes:
    """RSS 2.0 of one page (its items, newest first: the plan applies the limit)."""
    return _compose(page, site, rss=True, cache=None)[0].data


def render_atom(page: Page, site: Site) -> bytes:
    """Atom 1.0 of one page (its items, newest first: the plan applies the limit)."""
    return _compose(page, site, rss=False, cache=None)[0].data


def render_page(page: Page, site: Site, fmt: str, cache: EntryCache | None = None) -> tuple[Composed, list[str]]:
    """RSS or Atom of ``page`` as parts, and one message per item left out. ``cache``: one
    per publish run, shared by every page of it (see ``EntryCache``)."""
    return _compose(page, site, rss=fmt == "rss", cache=cache)
