"""Per-category RSS 2.0 and Atom 1.0 feeds (feedgen), plus the run that writes them all.

Owns: the name and URLs of each category's feeds (``feed_spec``), the bytes of each feed
(``render_rss`` / ``render_atom``) and ``publish``, which writes every feed and
``index.opml`` atomically and leaves unchanged files untouched.

Must not: query the database, read the clock, or clean HTML (bodies arrive cleaned).
Same articles in -> byte-identical files out: nothing here depends on "now".

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

import hashlib
import html
import logging
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlsplit

from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from feedgen.util import xml_elem

from aggregator import __version__
from aggregator.errors import PublishError
from aggregator.models import StoredArticle
from aggregator.publish.atomic import write_atomic
from aggregator.publish.posts import strip_illegal_chars

log = logging.getLogger(__name__)

#: ``updated`` of a feed with no items: fixed, so an empty feed is byte-stable too.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
GENERATOR = "aggregator"
UNTITLED = "(untitled)"
OPML_NAME = "index.opml"
_SLUG_MAX_BYTES = 80  # + ".atom.xml" stays far below NAME_MAX (255 bytes)

_FEEDGEN_LOCK = threading.RLock()


# --- names and URLs -------------------------------------------------------------------


@dataclass(frozen=True)
class FeedSpec:
    """Where one category's feeds live. Paths are relative to the output folder."""

    key: str  # the category name as configured
    title: str  # the category as displayed (illegal characters stripped)
    slug: str
    rss_path: str
    atom_path: str


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


def feed_spec(category: str) -> FeedSpec:
    """Deterministic, file-system and URL safe names for one category's feeds.

    A category that is already its own slug (``金融``, ``tech-news``) keeps it as is; any
    other (``Tech News``, ``C++``, ``../x``, ``🙂``) gets its readable part plus 8 hex of
    its SHA-256, so two categories never share a file even when they read alike
    (``C++`` / ``C#``, or ``Tech`` / ``tech`` on a case-insensitive file system), and a
    category's URL does not depend on which other categories exist.
    """
    title = strip_illegal_chars(category)
    readable = _readable_slug(title)
    if readable and readable == category:
        slug = readable
    else:
        digest = hashlib.sha256(category.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        slug = f"{readable}-{digest}" if readable else digest
    return FeedSpec(
        key=category,
        title=title,
        slug=slug,
        rss_path=f"category/{slug}.rss.xml",
        atom_path=f"category/{slug}.atom.xml",
    )


def site_url(base_url: str, rel_path: str = "") -> str:
    """``base_url`` is the URL of the output folder; ``rel_path`` is percent-encoded."""
    base = strip_illegal_chars(base_url)
    if not base.endswith("/"):
        base += "/"
    return base + quote(rel_path, safe="/")


def feed_title(spec: FeedSpec, site_title: str) -> str:
    return strip_illegal_chars(f"{site_title} · {spec.title}")


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


class _NoFeedExtension(BaseExtension):
    """Feed level of ``_AtomEnclosure``: nothing to add (no new namespace either)."""


class _AtomEnclosure(BaseEntryExtension):
    """Writes Atom ``<link rel="enclosure">`` elements, which feedgen 1.0.0 cannot:
    ``FeedEntry.atom_entry()`` rebinds its loop variable to the new element and then reads
    ``rel``/``type`` from it, so every entry link comes out as a bare ``<link href>`` --
    an image would become a second ``rel="alternate"`` (forbidden by RFC 4287 §4.1.1).
    ``FeedEntry.link(rel="enclosure")`` would also set the RSS ``<enclosure>``."""

    def __init__(self) -> None:
        self._links: list[tuple[str, str]] = []

    def add(self, href: str, mime_type: str) -> None:
        self._links.append((href, mime_type))

    def extend_atom(self, entry):
        for href, mime_type in self._links:
            # Unqualified like feedgen's own children: the root carries xmlns=Atom.
            xml_elem("link", entry, href=href, rel="enclosure", type=mime_type)
        return entry

    def extend_rss(self, item):
        return item


# --- rendering ------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # models promise aware UTC; a naive value is taken as UTC
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _newest_first(articles: Sequence[StoredArticle]) -> list[StoredArticle]:
    return sorted(articles, key=lambda a: (_utc(a.date), a.id), reverse=True)


def _feed_updated(items: Sequence[StoredArticle]) -> datetime:
    return max((_utc(a.updated) for a in items), default=EPOCH)


def _new_feed(spec: FeedSpec, items: Sequence[StoredArticle], *, base_url: str, site_title: str, self_path: str,
              self_type: str) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(site_url(base_url, spec.atom_path))
    fg.title(feed_title(spec, site_title))
    fg.description(strip_illegal_chars(f"Articles in {spec.title}, collected by {site_title}"))
    # RSS <channel><link> is the *last* link added: self first, alternate last.
    fg.link(href=site_url(base_url, self_path), rel="self", type=self_type)
    fg.link(href=site_url(base_url), rel="alternate")
    fg.generator(GENERATOR, version=__version__)
    fg.updated(_feed_updated(items))  # also lastBuildDate; feedgen's default is now()
    return fg


def _fill_entry(fe: FeedEntry, article: StoredArticle, *, rss: bool) -> None:
    title = strip_illegal_chars(article.title).strip() or UNTITLED
    summary = strip_illegal_chars(article.summary).strip()
    author = strip_illegal_chars(article.author).strip() or strip_illegal_chars(article.source)
    fe.id(article.feed_id)  # also the RSS guid, isPermaLink="false"
    fe.title(title)
    if article.link:
        fe.link(href=strip_illegal_chars(article.link), rel="alternate")
    # content() before summary(): description() / content-only would put the body into
    # Atom <content> or RSS <description> (HAZARDS.md); type="html", never "CDATA".
    fe.content(strip_illegal_chars(article.body_html), type="html")
    if rss:
        fe.summary(html.escape(summary or title, quote=False))
        if author:
            fe.dc.dc_creator(author)
    else:
        if summary:
            fe.summary(summary)
        if author:
            fe.author(name=author)
    fe.published(_utc(article.date))
    fe.updated(_utc(article.updated))
    terms = [strip_illegal_chars(c) for c in article.categories]
    if any(terms):
        fe.category([{"term": t} for t in terms if t])
    image = feed_image_url(article.image)
    if image:
        if not rss:
            fe.atom_enclosure.add(image, image_type(image))
        # group=None: feedgen's default group "default" wraps every thumbnail in a
        # <media:group>, which readers looking for item/media:thumbnail do not search.
        fe.media.thumbnail(url=image, group=None)


def _render(spec: FeedSpec, articles: Sequence[StoredArticle], *, base_url: str,
            site_title: str, rss: bool) -> tuple[bytes, list[str]]:
    items = _newest_first(articles)
    skipped: list[str] = []
    with _FEEDGEN_LOCK:
        if rss:
            fg = _new_feed(spec, items, base_url=base_url, site_title=site_title,
                           self_path=spec.rss_path, self_type="application/rss+xml")
            fg.load_extension("dc", atom=False, rss=True)
        else:
            fg = _new_feed(spec, items, base_url=base_url, site_title=site_title,
                           self_path=spec.atom_path, self_type="application/atom+xml")
            fg.author(name=strip_illegal_chars(site_title) or GENERATOR)
            fg.register_extension("atom_enclosure", _NoFeedExtension, _AtomEnclosure,
                                  atom=True, rss=False)
        # Loaded for every feed, images or not, so the root element never depends on
        # which items are present.
        fg.load_extension("media", atom=True, rss=True)
        for article in items:
            fe = fg.add_entry(order="append")
            try:
                _fill_entry(fe, article, rss=rss)
                # feedgen builds the XML only when serialising; build this entry alone
                # now so a bad one is dropped instead of failing the whole file.
                fe.rss_entry() if rss else fe.atom_entry()
            except ValueError as e:  # UnicodeError included
                fg.remove_entry(fe)
                message = f"{spec.key}: article {article.id} ({article.uid}) left out of feed: {e}"
                log.warning("%s", message)
                skipped.append(message)
        try:
            data = fg.rss_str(pretty=True) if rss else fg.atom_str(pretty=True)
        except ValueError as e:  # UnicodeError included
            kind = "RSS" if rss else "Atom"
            raise PublishError(f"cannot render the {kind} feed of {spec.key!r}: {e}") from e
    if rss:
        # Every date here is UTC; feedgen writes RFC 822's numeric "+0000", the seed's
        # family of feeds (and RSS 2.0's examples) write "GMT". Same instant, one style.
        data = _RSS_UTC.sub(rb"\1 GMT</\2>", data)
    return data, skipped


_RSS_UTC = re.compile(rb"(\d\d:\d\d:\d\d) \+0000</(pubDate|lastBuildDate)>")


def render_rss(spec: FeedSpec, articles: Sequence[StoredArticle], *, base_url: str,
               site_title: str) -> bytes:
    """RSS 2.0 of ``articles`` (all of them, newest first: ``publish`` applies the limit)."""
    return _render(spec, articles, base_url=base_url, site_title=site_title, rss=True)[0]


def render_atom(spec: FeedSpec, articles: Sequence[StoredArticle], *, base_url: str,
                site_title: str) -> bytes:
    """Atom 1.0 of ``articles`` (all of them, newest first: ``publish`` applies the limit)."""
    return _render(spec, articles, base_url=base_url, site_title=site_title, rss=False)[0]


# --- publishing -----------------------------------------------------------------------


@dataclass(frozen=True)
class PublishResult:
    """Paths are relative to the output folder, POSIX style (``category/金融.rss.xml``)."""

    written: tuple[str, ...]  # created or changed
    unchanged: tuple[str, ...]  # bytes identical: not rewritten, mtime kept
    skipped: tuple[str, ...] = ()  # one message per item or category left out


def publish(output_dir: Path, groups: Mapping[str, Sequence[StoredArticle]], *,
            base_url: str, site_title: str = "aggregator", limit: int = 50) -> PublishResult:
    """Write RSS + Atom for every category in ``groups`` and ``index.opml`` listing them.

    Only from one thread at a time (feedgen switches the process locale, see above).
    Feeds of categories no longer in ``groups`` are left where they are.
    Raises :class:`PublishError` when a file cannot be written.
    """
    # opml imports this module for FeedSpec and the URL rules.
    from aggregator.publish.opml import render_opml

    output_dir = Path(output_dir)
    written: list[str] = []
    unchanged: list[str] = []
    skipped: list[str] = []
    specs: list[FeedSpec] = []
    taken: dict[str, str] = {}

    def emit(rel_path: str, data: bytes) -> None:
        changed = write_atomic(output_dir / rel_path, data)
        (written if changed else unchanged).append(rel_path)

    for category in sorted(groups):
        spec = feed_spec(category)
        if spec.slug in taken:
            # Only a SHA-256 prefix collision or a category literally named like another's
            # hashed slug gets here; the first (in sorted order) keeps the file.
            message = f"{category!r}: feed name {spec.slug!r} already used by {taken[spec.slug]!r}"
            log.error("%s", message)
            skipped.append(message)
            continue
        taken[spec.slug] = category
        items = _newest_first(groups[category])[: max(limit, 0)]
        rss, rss_skipped = _render(spec, items, base_url=base_url, site_title=site_title, rss=True)
        atom, atom_skipped = _render(spec, items, base_url=base_url, site_title=site_title,
                                     rss=False)
        emit(spec.rss_path, rss)
        emit(spec.atom_path, atom)
        skipped += rss_skipped + atom_skipped
        specs.append(spec)

    emit(OPML_NAME, render_opml(specs, base_url, site_title))
    return PublishResult(tuple(written), tuple(unchanged), tuple(skipped))
