"""ParsedEntry -> ArticleDraft: the article format's decisions, as pure functions.

Owns: upstream identity (guid, else link, else a content hash; a guid repeated inside one
feed is disambiguated by link, as Miniflux does ``guid|url``), the title fallback chain,
which HTML becomes the body (through ``clean.clean_html``, always), the item's own image,
the date, dedup keys and the content hash that tells an edit from a re-fetch.
Must not: read the clock (``now`` is passed in to judge dates; an undated item gets
``date=None`` and the store supplies the first-seen time, which it keeps), touch files or the database, or format for Hexo (that is
``publish.posts``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo
from urllib.parse import urljoin, urlsplit

from .clean import DEFAULT_IFRAME_HOSTS, clean_html
from .dates import decide_date, read_date
from .similarity import fingerprint
from .text import canonical_url, clean_title, first_image, html_to_text, strip_tracking, text_excerpt
from .models import ArticleDraft, ParsedEntry, Source

# XML 1.0 Char production (https://www.w3.org/TR/xml/#charsets) minus what it allows, plus
# lone surrogates: one of these makes feedgen/lxml refuse the whole file and sqlite refuse
# the row (HAZARDS.md), so they are removed at the first stage that builds our own values.
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_WS = re.compile(r"\s+")
TITLE_FALLBACK_CHARS = 80


def xml_safe(text: str | None) -> str:
    return _ILLEGAL_XML.sub("", text) if text else ""


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()


def _http_url(url: str | None, base: str | None) -> str | None:
    """An absolute http(s) URL, or None: relative links resolve against the entry's base."""
    if not url:
        return None
    url = xml_safe(url).strip()
    if base:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def normalize_text(text: str) -> str:
    """What "the same text" means for dedup: case-folded, whitespace removed (CJK text has
    no spaces, and feeds differ in how they wrap lines)."""
    return _WS.sub("", text).casefold()


def _normalized_plain_text(text: str) -> str:
    """``normalize_text`` of a text ``html_to_text`` made, by str.replace (about 4x faster
    than the regex): its only whitespace characters are single spaces between words and
    ideographic spaces (U+3000), which html_to_text keeps."""
    text = text.replace(" ", "")
    return (text.replace("\u3000", "") if "\u3000" in text else text).casefold()


def dedup_keys(source: Source, guid: str, link: str | None, title: str, text: str) -> tuple[str, ...]:
    """Identity keys, strongest first. Hashed so very long guids stay small (HAZARDS.md).

    g: same source + same upstream guid
    l: same link once tracking parameters and fragment are removed (any source)
    t: same normalized title + text within one category (any source)
    """
    return _dedup_keys(source, guid, link, title, normalize_text(text))


def _dedup_keys(source: Source, guid: str, link: str | None, title: str, body: str) -> tuple[str, ...]:
    """``dedup_keys`` with the text already normalized (``normalize_entry`` needs it twice)."""
    keys = ["g:" + _sha(source.name, guid)]
    if link:
        keys.append("l:" + _sha(canonical_url(link)))
    if body:  # title alone is too weak: "Daily notes" items would all merge
        keys.append("t:" + _sha(source.category, normalize_text(title), body))
    return tuple(keys)


def _title(entry: ParsedEntry, text: str) -> str:
    title = xml_safe(clean_title(entry.title))
    if title:
        return title
    first_line = text.strip().split("\n", 1)[0].strip()
    if first_line:
        return first_line[:TITLE_FALLBACK_CHARS].rstrip() + ("…" if len(first_line) > TITLE_FALLBACK_CHARS else "")
    date = item_date(entry)
    if date:
        return date.strftime("%Y-%m-%d %H:%M")
    return "Untitled"


def upstream_guids(entries: Sequence[ParsedEntry]) -> list[str]:
    """Each entry's identity inside its feed; unique within the feed."""
    raw: list[str] = []
    for e in entries:
        guid = xml_safe(e.guid).strip()
        if not guid:
            guid = xml_safe(e.link).strip()
        if not guid:
            guid = "sha256:" + _sha(e.title or "", e.content or e.summary or "")
        raw.append(guid)
    counts = Counter(raw)
    seen: Counter[str] = Counter()
    out = []
    for guid, e in zip(raw, entries):
        if counts[guid] > 1:
            # Several items share one guid (a known feed bug): tell them apart by link, then
            # by position among the clashing ones.
            alt = guid + "|" + xml_safe(e.link).strip()
            seen[alt] += 1
            guid = alt if seen[alt] == 1 else f"{alt}#{seen[alt]}"
        out.append(guid)
    return out


@lru_cache(maxsize=64)
def _zone(name: str | None) -> ZoneInfo | None:
    return ZoneInfo(name) if name else None


def item_date(entry: ParsedEntry, timezone: str | None = None) -> datetime | None:
    """Published, else updated — each read in ``timezone`` (the source's) when naive."""
    tz = _zone(timezone)
    return read_date(entry.published_raw, entry.published, tz) or read_date(entry.updated_raw, entry.updated, tz)


def normalize_entry(
    entry: ParsedEntry, source: Source, guid: str, now: datetime, future_skew: timedelta,
    iframe_hosts: frozenset[str] = DEFAULT_IFRAME_HOSTS,
) -> ArticleDraft:
    base = entry.base_url
    link = _http_url(entry.link, base)
    if link:
        link = strip_tracking(link)  # the article's link too, not only the body's (utm_*, spm, ...)
    raw_body = entry.content or entry.summary or ""
    body = xml_safe(clean_html(xml_safe(raw_body), base or link, iframe_hosts=iframe_hosts))
    text = html_to_text(body)
    normalized = _normalized_plain_text(text)
    title = _title(entry, text)
    image = _http_url(entry.image, base or link) or first_image(body)
    summary_src = html_to_text(xml_safe(clean_html(xml_safe(entry.summary), base or link, iframe_hosts=frozenset()))) if entry.summary else text
    summary = text_excerpt(summary_src or text)
    date, date_note = decide_date(item_date(entry, source.timezone), now, future_skew)
    author = source.name  # the seed's author is the source's display name
    content_hash = _sha(title, link or "", date.isoformat() if date else "", image or "", body)
    return ArticleDraft(
        source=source.name,
        category=source.category,
        channel=source.channel,
        guid=guid,
        link=link,
        title=title,
        author=author,
        date=date,
        image=image,
        body_html=body,
        summary=summary,
        dedup_keys=_dedup_keys(source, guid, link, title, normalized),
        content_hash=content_hash,
        date_note=date_note,
        text_len=len(normalized),
        fingerprint=fingerprint(title, text),
    )


def normalize_entries(
    entries: Sequence[ParsedEntry], source: Source, *, now: datetime, future_skew: timedelta = timedelta(hours=1),
    iframe_hosts: frozenset[str] = DEFAULT_IFRAME_HOSTS,
) -> tuple[list[ArticleDraft], list[str]]:
    """All entries of one feed. A bad entry is reported and skipped, never the feed.
    ``now`` only judges dates (an item dated beyond ``now + future_skew`` gets its
    first-seen time); it is passed in, never read here."""
    drafts: list[ArticleDraft] = []
    problems: list[str] = []
    for i, (entry, guid) in enumerate(zip(entries, upstream_guids(entries))):
        try:
            drafts.append(normalize_entry(entry, source, guid, now, future_skew, iframe_hosts))
        except Exception as e:  # noqa: BLE001 - one entry must not fail its feed (STYLE habit 5)
            problems.append(f"{source.name}: entry {i + 1} ({(entry.title or entry.link or guid)[:60]!r}) skipped: {type(e).__name__}: {e}")
    return drafts, problems
