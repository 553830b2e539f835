"""JSON Feed 1.0 / 1.1 adapter: JSON bytes -> ParsedFeed.

Owns: reading a JSON Feed (https://jsonfeed.org/version/1.1) into the same ParsedFeed /
ParsedEntry values the XML path produces, tolerating the wrong field types real feeds carry
(``"summary": null``, numeric ids, an ``author`` that is a string).
Must not: fetch anything, clean HTML or decide identity; strings stay raw (HTML untrusted).
Called by ``aggregator.parse.parse_feed``; use that as the entry point.
"""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin

from aggregator.encoding import BOMS
from aggregator.errors import NotAFeedError, ParseError
from aggregator.models import ParsedEntry, ParsedFeed

# Real feeds also write the version URL with http:// (e.g. WordPress' JSON Feed plugin).
_VERSION_URL = re.compile(r"https?://(?:www\.)?jsonfeed\.org/version/([^?#]*)", re.I)
# jsonfeed.org publishes both spellings of the 1.0 URL ("/version/1" is the official one).
_KNOWN_VERSIONS = {"1": "json10", "1.0": "json10", "1.1": "json11"}


def parse_json_feed(
    body: bytes, url: str, *, charset: str | None = None, source: str | None = None
) -> ParsedFeed:
    """Read a JSON Feed. Invalid JSON -> ParseError; valid JSON that is not a JSON Feed
    -> NotAFeedError. Never raises anything else."""
    text = _decode(body, charset, source)
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ParseError(f"invalid JSON: {_short(e)}", source=source) from e
    if not isinstance(doc, dict):
        raise NotAFeedError(
            f"JSON document is a {type(doc).__name__}, not a JSON Feed object", source=source
        )
    version_url = doc.get("version")
    match = _VERSION_URL.fullmatch(version_url.strip()) if isinstance(version_url, str) else None
    if match is None:
        raise NotAFeedError(
            "JSON document is not a JSON Feed (no 'https://jsonfeed.org/version/…' version)",
            source=source,
        )
    warnings: list[str] = []
    version = _KNOWN_VERSIONS.get(match.group(1).strip("/"))
    if version is None:
        # Read an unknown version with the 1.1 fields (a superset of 1.0's) rather than
        # fail the source; the warning says so.
        version = "json"
        warnings.append(f"unknown JSON Feed version {version_url!r}; read as 1.1")
    items = doc.get("items")
    if not isinstance(items, list):
        raise NotAFeedError("JSON Feed has no 'items' list", source=source)

    feed_link = _url(doc.get("home_page_url"), url)
    feed_authors = _authors(doc)
    entries = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            warnings.append(f"item {index} is a {type(item).__name__}, not an object; skipped")
            continue
        entries.append(_entry(item, url, feed_link, feed_authors))
    return ParsedFeed(
        title=_str(doc.get("title")),
        link=feed_link,
        version=version,
        entries=tuple(entries),
        warnings=tuple(warnings),
    )


def text_to_html(text: str) -> str:
    """Plain text -> HTML: escaped, blank-line-separated paragraphs as <p>, single line
    breaks as <br>. Used for JSON ``content_text`` and for text/plain RSS/Atom bodies."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    return "".join(
        "<p>" + html.escape(p, quote=False).replace("\n", "<br>") + "</p>" for p in paragraphs if p
    )


def parse_rfc3339(value: Any) -> datetime | None:
    """RFC 3339 timestamp -> aware UTC datetime; anything unreadable -> None (never raises).
    A missing offset is read as UTC, as feedparser does for RSS dates without a zone."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None


# --- items ---------------------------------------------------------------------------


def _entry(item: dict, url: str, feed_link: str | None, feed_authors: list[str]) -> ParsedEntry:
    link = _url(item.get("url"), url) or _url(item.get("external_url"), url)
    content_html = _str(item.get("content_html"))
    content_text = _str(item.get("content_text"))
    content = content_html or (text_to_html(content_text) if content_text else None)
    # JSON Feed's summary is plain text (spec: "a plain text sentence or two").
    summary_text = _str(item.get("summary"))
    summary = text_to_html(summary_text) if summary_text else None
    if content is None:
        content, summary = summary, None
    elif summary is not None and summary == content:
        summary = None
    authors = _authors(item) or feed_authors  # 1.1: item inherits the top-level authors
    tags = item.get("tags")
    return ParsedEntry(
        guid=_id(item.get("id")),
        link=link,
        title=_str(item.get("title")),
        content=content,
        summary=summary,
        base_url=link or feed_link or url,
        published=parse_rfc3339(item.get("date_published")),
        updated=parse_rfc3339(item.get("date_modified")),
        published_raw=item.get("date_published") if isinstance(item.get("date_published"), str) else None,
        updated_raw=item.get("date_modified") if isinstance(item.get("date_modified"), str) else None,
        author=", ".join(authors) if authors else None,
        image=_url(item.get("image"), url) or _url(item.get("banner_image"), url),
        tags=tuple(dict.fromkeys(t.strip() for t in tags if isinstance(t, str) and t.strip()))
        if isinstance(tags, list)
        else (),
    )


def _authors(obj: dict) -> list[str]:
    """1.1 ``authors`` (list of objects), else 1.0 ``author`` (one object); names only."""
    found = obj.get("authors")
    if not isinstance(found, list):
        found = [obj.get("author")]
    names = []
    for author in found:
        name = _str(author.get("name")) if isinstance(author, dict) else _str(author)
        if name and name not in names:
            names.append(name)
    return names


def _id(value: Any) -> str | None:
    # Spec 1.1: "If an id is presented as a number, readers should coerce it to a string."
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return _str(value)


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value
    return None


def _url(value: Any, base: str) -> str | None:
    """A URL field resolved against the feed's URL (relative ones occur in the wild)."""
    value = _str(value)
    if not value:
        return None
    try:
        return urljoin(base, value.strip())
    except ValueError:  # e.g. an invalid IPv6 literal "http://[x/"
        return value.strip()


def _decode(body: bytes, charset: str | None, source: str | None) -> str:
    # RFC 8259 §8.1: JSON exchanged between systems MUST be UTF-8; a BOM is tolerated.
    # A declared charset is only a fallback for bodies that are not UTF-8 after all.
    candidates: tuple[str | None, ...] = ("utf-8", charset)
    for bom, encoding in BOMS:
        if body.startswith(bom):
            body, candidates = body[len(bom):], (encoding,)
            break
    for encoding in dict.fromkeys(e for e in candidates if e):
        try:
            return body.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    raise ParseError("JSON feed is not valid UTF-8", source=source)


def _short(error: Exception, limit: int = 200) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "…"
