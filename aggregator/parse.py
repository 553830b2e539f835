"""Parse stage: response bytes -> ParsedFeed (RSS 0.9x/1.0/2.0, Atom 0.3/1.0, JSON Feed).

Owns: refusing hazardous documents (DTD entity declarations, HTML pages), defusing numeric
character references feedparser cannot survive, running feedparser safely, mapping its
output into ParsedFeed/ParsedEntry, and HTML feed autodiscovery (``find_feed_links``).
The character encoding is chosen by ``aggregator.encoding``.
Must not: do I/O of any kind, read the clock, clean or trust HTML (every string is raw and
goes to ``clean`` later), or decide identity/dates for articles (``normalize`` does).
Pure functions of their arguments with picklable results, so they can run in a worker
process under memory and time limits (HAZARDS.md, "Parsing").

    bytes --empty/gzip/JSON sniff--> jsonfeed.parse_json_feed
          --encoding.decode_feed_bytes (BOM > HTTP charset > XML declaration > UTF-8;
            superset fallbacks; a guess for undeclared legacy bytes)-->
          --refuse <!ENTITY / internal DTD subset; refuse HTML pages-->
          --invalid numeric character references -> U+FFFD-->
          --fastparse.fast_parse (well-formed RSS 0.90-2.0 / Atom 0.3, 1.0 only; equal results)--> ParsedFeed
          --else feedparser(io.BytesIO(utf-8), sanitize_html=False, ...)--> ParsedFeed
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import urljoin

import feedparser

from aggregator.encoding import codec_name, decode_feed_bytes, sniff_text
from aggregator.errors import NotAFeedError, ParseError
from aggregator.jsonfeed import parse_json_feed, text_to_html
from aggregator import fastparse
from aggregator.models import FeedLink, ParsedEntry, ParsedFeed

Headers = Mapping[str, str] | Sequence[tuple[str, str]]

JSON_TYPES = frozenset({"application/feed+json", "application/json"})
FEED_LINK_TYPES = JSON_TYPES | {"application/rss+xml", "application/atom+xml"}
_FEED_ROOTS = frozenset({"rss", "feed", "rdf", "channel"})  # local names; "rdf:RDF" -> "rdf"
# Document elements that only an HTML page (or an HTML error page) starts with.
_HTML_ROOTS = frozenset("html head body title meta link base script style div p a h1 h2 h3 "
                        "h4 h5 h6 br center table pre span noscript iframe form".split())
_HTML_TYPES = ("text/html", "application/xhtml+xml")
# rel=alternate is not "body-ok" (HTML Living Standard, the link element), so feed links sit
# in <head>; reading the first 2 MiB bounds the work on a huge page.
_HEAD_LIMIT = 2 * 1024 * 1024
_IMAGE_EXT = re.compile(r"\.(?:jpe?g|png|gif|webp|avif|svg)(?:[?#]|$)", re.I)

# Billion laughs (HAZARDS.md): feedparser's loose parser expands internal entities without
# limit. Any entity declaration or internal DTD subset is refused, in the bytes and again
# after decoding (a UTF-16 body hides "<!ENTITY" from the bytes check).
_ENTITY_TEXT = re.compile(r"<!ENTITY|<!DOCTYPE[^>\[]*\[", re.I)
_ENTITY_BYTES = re.compile(_ENTITY_TEXT.pattern.encode(), re.I)
_ENTITY_MESSAGE = ("feed refused: it has a DTD internal subset, and this parser refuses DTD "
                   "entity declarations (billion-laughs protection)")

_XML_DECL_TEXT = re.compile(r"^(\s*(?:<!--.*?-->\s*)*)<\?xml\s[^>]*?\?>", re.S)
_PROLOG_ITEM = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", re.S | re.I)
_ROOT = re.compile(r"<([A-Za-z_][\w.:-]*)")
_FEED_ROOT_ANYWHERE = re.compile(r"<(?:rss|feed|rdf:RDF)[\s>]")
# A numeric reference to a code point that is not an XML 1.0 Char (§2.2: surrogates, beyond
# U+10FFFF, C0 controls but tab/LF/CR, U+FFFE/U+FFFF) makes the document ill-formed, and
# feedparser's loose parser then raises from chr() instead of reporting bozo (HAZARDS.md).
# Such references become U+FFFD, as HTML parsers make of most of them (HTML Living
# Standard, "numeric character reference end state"), so one bad item cannot fail its feed.
_CHAR_REF = re.compile(r"&#(?:[xX]([0-9A-Fa-f]+)|([0-9]+));")


def parse_feed(body: bytes, headers: Headers, url: str, *,
               source: str | None = None) -> ParsedFeed:
    """Parse one fetched body. Raises ParseError (NotAFeedError for things that are not
    feeds at all); never another exception type for any input bytes."""
    if not isinstance(body, (bytes, bytearray)):
        raise TypeError(f"body must be bytes, not {type(body).__name__}")  # caller bug
    body = bytes(body)
    if not body.strip():
        raise NotAFeedError("empty response body", source=source)
    if body[:2] == b"\x1f\x8b":
        raise NotAFeedError("body is gzip data (compressed without Content-Encoding?)",
                            source=source)
    fields = _header_dict(headers)
    content_type, charset = _content_type(fields.get("content-type"))
    first = sniff_text(body).lstrip("\ufeff \t\r\n")[:1]
    if first == "{" or (first != "<" and content_type in JSON_TYPES):
        return parse_json_feed(body, url, charset=codec_name(charset), source=source)
    if _ENTITY_BYTES.search(body):
        raise ParseError(_ENTITY_MESSAGE, source=source)
    decoded = decode_feed_bytes(body, charset)
    text, warnings = decoded.text, list(decoded.warnings)
    if _ENTITY_TEXT.search(text):
        raise ParseError(_ENTITY_MESSAGE, source=source)
    if "<" not in text:
        raise NotAFeedError(f"not a feed: no markup in the body ({text[:40].strip()!r}…)",
                            source=source)
    root = _root_name(text)
    if _is_html(text, root, content_type):
        links = find_feed_links(body, headers, url)
        message = "HTML page, not a feed"
        if links:
            message = f"HTML page; it advertises a feed at {links[0].url}"
            if len(links) > 1:
                message += f" (and {len(links) - 1} more)"
        raise NotAFeedError(message, source=source)

    text, replaced = _replace_invalid_char_refs(text)
    if replaced:
        warnings.append(f"replaced {replaced} invalid character reference"
                        f"{'s' if replaced > 1 else ''} with U+FFFD")
    # Well-formed RSS 0.90-2.0 (RDF included) / Atom 0.3, 1.0: lxml and feedparser's own rules replayed,
    # equal to what feedparser gives (tests/test_fastparse.py, over the whole corpus), at
    # about a third of the CPU; None for anything it is not sure of.
    fast = fastparse.fast_parse(text, url, warnings)
    if fast is not None:
        return fast
    # We decoded; feedparser gets UTF-8 with the old declaration removed (it writes its own).
    utf8 = _XML_DECL_TEXT.sub(r"\1", text.lstrip("\ufeff"), count=1).encode("utf-8")
    # No Content-Location: feedparser would resolve guids/ids against it (even with
    # resolve_relative_uris=False), so an item's identity would change with the URL it
    # was fetched from (a port, a 301, http->https). Links are resolved below instead.
    response_headers = {"content-type": "application/xml; charset=utf-8"}
    if fields.get("content-language"):
        response_headers["content-language"] = fields["content-language"]
    try:
        # Never a str/bytes argument: feedparser would open it as a path or URL (HAZARDS.md).
        # Its sanitizer is not trusted and our cleaner resolves URLs, so both are off.
        result = feedparser.parse(io.BytesIO(utf8), response_headers=response_headers,
                                  sanitize_html=False, resolve_relative_uris=False)
    except MemoryError as e:  # under the worker's RLIMIT_AS (HAZARDS.md)
        raise ParseError("feed too large to parse within the memory limit", source=source) \
            from e
    except Exception as e:  # it raises on some input despite promising bozo (HAZARDS.md)
        raise ParseError(f"feed could not be parsed: {type(e).__name__}: {e}", source=source) \
            from e
    return _to_parsed_feed(result, url, root, warnings, source)


def looks_like_html(body: bytes, content_type: str | None) -> bool:
    """True when the body is an HTML page (or an HTML error page) rather than a feed."""
    text = sniff_text(body, 65536)
    return _is_html(text, _root_name(text), _content_type(content_type)[0])


def find_feed_links(body: bytes, headers: Headers, page_url: str) -> list[FeedLink]:
    """Feeds an HTML page advertises with ``<link rel="alternate" type=...>`` (RSS
    autodiscovery), as absolute http(s) URLs, in page order, without duplicates."""
    # bs4 only here (pages are rare): importing it costs every parse worker ~40 ms
    from bs4 import BeautifulSoup, ParserRejectedMarkup, SoupStrainer

    charset = _content_type(_header_dict(headers).get("content-type"))[1]
    text = decode_feed_bytes(body, charset).text
    try:
        soup = BeautifulSoup(text[:_HEAD_LIMIT], "lxml", parse_only=SoupStrainer(["link", "base"]))
    except ParserRejectedMarkup:
        return []  # autodiscovery is a courtesy; a page its parser rejects advertises nothing
    base = page_url
    base_tag = soup.find("base", href=True)
    if base_tag is not None:
        base = _join(page_url, str(base_tag["href"]).strip()) or page_url
    found: dict[str, FeedLink] = {}
    for tag in soup.find_all("link", href=True):
        rel = tag.get("rel") or []
        rels = rel.split() if isinstance(rel, str) else rel
        kind = str(tag.get("type") or "").split(";")[0].strip().lower()
        if "alternate" not in [r.lower() for r in rels] or kind not in FEED_LINK_TYPES:
            continue
        href = _join(base, str(tag["href"]).strip())
        if href and href.lower().startswith(("http://", "https://")) and href not in found:
            title = str(tag.get("title") or "").strip() or None
            found[href] = FeedLink(url=href, type=kind, title=title)
    return list(found.values())


# --- feedparser result -> ParsedFeed -------------------------------------------------


def _to_parsed_feed(result, url: str, root: str | None, warnings: list[str],
                    source: str | None) -> ParsedFeed:
    version = result.get("version") or ""
    entries = result.get("entries") or []
    reason = _bozo_reason(result)
    if not version and not entries and root not in _FEED_ROOTS:
        what = f"the document element is <{root}>" if root else "there is no document element"
        raise NotAFeedError(f"not a feed: {what}" + (f" ({reason})" if reason else ""),
                            source=source)
    if not entries and (reason or not version):
        # A well-formed feed may be empty; a broken one that yields nothing is an error.
        raise ParseError(f"<{root}> feed could not be read: {reason or 'unknown format'}",
                         source=source)
    if reason:
        warnings.append(reason)
    feed = result.get("feed") or {}
    feed_link = _str(feed.get("link"))
    feed_link = _join(url, feed_link) if feed_link else None
    # RFC 4287 §4.2.1: an Atom entry without authors takes the feed's.
    feed_author = _str(feed.get("author")) if version.startswith("atom") else None
    return ParsedFeed(
        title=_str(feed.get("title")),
        link=feed_link,
        version=version or "unknown",
        entries=tuple(_entry(e, url, feed_link, feed_author) for e in entries),
        warnings=tuple(warnings),
        ttl_minutes=_ttl(feed.get("ttl")),
        update_period=(_str(feed.get("sy_updateperiod")) or "").strip().lower() or None,
        update_frequency=_ttl(feed.get("sy_updatefrequency")),
    )


def _entry(e, url: str, feed_link: str | None, feed_author: str | None) -> ParsedEntry:
    link = _entry_link(e)
    link = _join(url, link) if link else None  # RFC 3986: the document's own URL is the base
    content, detail = _fullest_body(e)
    summary_detail = e.get("summary_detail") or {}
    summary = _as_html(summary_detail.get("type"), e.get("summary"))
    if content is None or (summary is not None and _text_len(summary) > _text_len(content)
                           and not _is_html_type(detail.get("type"))):
        # No HTML body, or the HTML description is fuller than a plain-text body.
        content, summary, detail = summary, None, summary_detail
    elif summary is not None and " ".join(summary.split()) == " ".join(content.split()):
        summary = None  # feedparser copies content into summary when there is none
    base = _xml_base(detail.get("base"), url) or link or feed_link or url
    tags = (_str(t.get("term")) or _str(t.get("label")) for t in e.get("tags") or ())
    return ParsedEntry(
        guid=_str(e.get("id")),
        link=link,
        title=_str(e.get("title")),
        content=content,
        summary=summary,
        base_url=base,
        # dict.get: FeedParserDict maps a missing "updated" onto "published" (issue 310).
        published=_datetime(dict.get(e, "published_parsed")),
        updated=_datetime(dict.get(e, "updated_parsed")),
        published_raw=_str(dict.get(e, "published")),
        updated_raw=_str(dict.get(e, "updated")),
        author=_author(e) or feed_author,
        image=_image(e, base),
        tags=tuple(dict.fromkeys(t.strip() for t in tags if t)),
    )


def _fullest_body(e) -> tuple[str | None, dict]:
    """The longest HTML/XHTML ``content`` (content:encoded, atom:content); else the longest
    text/* one, escaped into HTML. Other media types (e.g. application/pdf) are no body."""
    html = [c for c in e.get("content") or () if _is_html_type(c.get("type")) and c.get("value")]
    text = [c for c in e.get("content") or ()
            if str(c.get("type") or "").startswith("text/") and c.get("value")]
    chosen = max(html or text, key=lambda c: len(c["value"]), default=None)
    if chosen is None:
        return None, {}
    return _as_html(chosen.get("type"), chosen["value"]), chosen


def _as_html(kind: str | None, value) -> str | None:
    value = _str(value)
    if value is None or _is_html_type(kind) or kind is None:
        return value
    return text_to_html(value)  # text/plain: its "<" is a character, not markup


def _is_html_type(kind) -> bool:
    return kind in _HTML_TYPES or kind in ("html", "xhtml")


def _entry_link(e) -> str | None:
    """The rel=alternate link, an HTML one first (Atom allows several, e.g. a PDF)."""
    links = [link for link in e.get("links") or ()
             if link.get("rel") == "alternate" and _str(link.get("href"))]
    links.sort(key=lambda link: str(link.get("type") or "text/html") not in _HTML_TYPES)
    return links[0]["href"].strip() if links else _str(e.get("link"))


def _xml_base(base, url: str) -> str | None:
    """The content's xml:base, or None when feedparser only reports the document URL."""
    base = _str(base)
    if not base or base.split("#")[0] == url.split("#")[0]:
        return None
    return _join(url, base)


def _author(e) -> str | None:
    names = (_str(d.get("name")) for d in e.get("authors") or () if isinstance(d, dict))
    return _str(e.get("author")) or next((name for name in names if name), None)


def _image(e, base: str) -> str | None:
    """media:thumbnail, media:content of an image, an image enclosure, itunes:image.
    Audio/video enclosures are never an image."""
    def is_image(kind, href) -> bool:  # by type; by file name only when untyped
        return kind.startswith("image/") or (not kind and _IMAGE_EXT.search(href) is not None)

    candidates = [m.get("url") for m in e.get("media_thumbnail") or () if isinstance(m, dict)]
    for m in e.get("media_content") or ():
        if isinstance(m, dict) and (m.get("medium") == "image" or (not m.get("medium") and
                                    is_image(str(m.get("type") or ""), str(m.get("url"))))):
            candidates.append(m.get("url"))
    for link in e.get("links") or ():
        if link.get("rel") == "enclosure" and is_image(str(link.get("type") or ""),
                                                       str(link.get("href"))):
            candidates.append(link.get("href"))
    itunes = dict.get(e, "image")
    if isinstance(itunes, dict):
        candidates.append(itunes.get("href"))
    for candidate in candidates:
        if _str(candidate):
            return _join(base, candidate.strip())
    return None


def _datetime(parsed) -> datetime | None:
    """feedparser's UTC struct_time -> aware datetime; anything odd -> None, never raises."""
    if parsed is None:
        return None
    try:
        seconds = min(parsed.tm_sec, 59)  # a leap second ("23:59:60") is valid RFC 3339
        return datetime(parsed.tm_year, parsed.tm_mon, parsed.tm_mday, parsed.tm_hour,
                        parsed.tm_min, seconds, tzinfo=timezone.utc)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None


def _ttl(value) -> int | None:
    value = str(value or "").strip()
    return int(value) if re.fullmatch(r"\d{1,7}", value) else None


def _bozo_reason(result) -> str | None:
    if not result.get("bozo"):
        return None
    error = result.get("bozo_exception")
    return f"{type(error).__name__}: {error}" if error is not None else "ill-formed feed"


# --- sniffing and defusing -----------------------------------------------------------


def _replace_invalid_char_refs(text: str) -> tuple[str, int]:
    """Numeric character references to non-Chars (_CHAR_REF) -> "&#xFFFD;", and how many."""
    replaced = 0

    def fix(m: re.Match) -> str:
        nonlocal replaced
        hex_digits, decimal = m.groups()
        digits = (hex_digits or decimal).lstrip("0") or "0"
        # 0x10FFFF has 6 hex / 7 decimal digits; the cap also keeps int() off huge strings.
        if len(digits) <= 7 and _is_xml_char(int(digits, 16 if hex_digits else 10)):
            return m.group(0)
        replaced += 1
        return "&#xFFFD;"

    if "&#" in text:
        text = _CHAR_REF.sub(fix, text)
    return text, replaced


def _is_xml_char(code: int) -> bool:
    """XML 1.0 §2.2 Char."""
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def _root_name(text: str) -> str | None:
    """Local name of the document element, lower-cased, after the prolog."""
    pos, head = 0, text[:65536]
    while (m := _PROLOG_ITEM.match(head, pos)) is not None and m.end() > pos:
        pos = m.end()
    m = _ROOT.search(head, pos)
    return m.group(1).split(":")[-1].lower() if m else None


def _is_html(text: str, root: str | None, content_type: str) -> bool:
    if root in _FEED_ROOTS or text.lstrip("\ufeff \t\r\n")[:1] in ("{", "["):
        return False
    head = text[:65536]
    doctype_html = re.search(r"<!DOCTYPE\s+html", head, re.I) is not None
    if root in _HTML_ROOTS or (root is None and doctype_html) or content_type in _HTML_TYPES:
        # An HTML wrapper around a real feed (seen in the wild) is left to feedparser.
        return _FEED_ROOT_ANYWHERE.search(text) is None
    return False


def _header_dict(headers: Headers) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    fields: dict[str, str] = {}
    for name, value in items:
        fields.setdefault(str(name).lower(), str(value))
    return fields


def _content_type(value: str | None) -> tuple[str, str | None]:
    """'Text/XML; charset="UTF-8"' -> ('text/xml', 'UTF-8')."""
    if not value:
        return "", None
    media = value.split(";")[0].strip().lower()
    m = re.search(r";\s*charset\s*=\s*[\"']?([^\"';\s]+)", value, re.I)
    return media, (m.group(1) if m else None)


def _join(base: str, href: str) -> str | None:
    try:
        return urljoin(base, href)
    except ValueError:  # e.g. "http://[broken" is not a URL at all
        return None


def _str(value) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    return None


def _text_len(html: str) -> int:
    return len(re.sub(r"<[^>]*>|\s+", "", html))
