"""Item dates: reading what feeds write, and deciding which date an article gets.

Owns: reading naive and Chinese-style dates that feedparser gets wrong or cannot read
(``2020/1/10 14:33:00`` comes back from feedparser as 1 November 2020; ``2020年1月10日``
likewise; an RFC 822 date without a zone comes back as nothing), interpreting a date
without an offset in the source's configured ``timezone`` (the classic +8 h error of
Chinese feeds that write Beijing time without saying so), and the pure decision of which
date an article is given (``decide_date``): the item's own, or the time it was first seen
when the item's is missing, implausibly old, or too far in the future.
Must not: read the clock (``now`` is passed in) or do I/O.
"""

from __future__ import annotations

import email.utils
import re
from datetime import datetime, timedelta, timezone, tzinfo

# 2020-01-10, 2020/1/10, 2020.1.10, 2020年1月10日, optionally with a time and an offset.
_NUMERIC = re.compile(
    r"^\s*(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?"
    r"(?:(?:\s+|T|\s*日\s*)(\d{1,2})\s*[:时]\s*(\d{1,2})(?:\s*[:分]\s*(\d{1,2})(?:[.,]\d+)?\s*秒?)?)?"
    r"\s*(Z|UTC|GMT|[+-]\d{2}:?\d{2})?\s*$",
    re.I,
)
# An explicit zone at the end of an RFC 822 / ISO date: an offset or a zone name.
_HAS_ZONE = re.compile(r"(?:Z|[+-]\d{2}:?\d{2}|\b[A-Z]{1,5})\s*$")

EARLIEST = datetime(1990, 1, 1, tzinfo=timezone.utc)  # older dates in feeds are bugs, not history


def _offset(text: str) -> timezone:
    if text.upper() in ("Z", "UTC", "GMT"):
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def read_date(raw: str | None, parsed: datetime | None, tz: tzinfo | None = None) -> datetime | None:
    """The item's date in UTC. ``raw`` is the string in the feed, ``parsed`` what
    feedparser made of it (UTC, or None); ``tz`` is the source's ``timezone`` for dates
    written without an offset (UTC when not configured)."""
    local = tz or timezone.utc
    if raw:
        m = _NUMERIC.match(raw)
        if m:
            year, month, day, hour, minute, second, zone = m.groups()
            try:
                naive = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
            except ValueError:
                return None
            return naive.replace(tzinfo=_offset(zone) if zone else local).astimezone(timezone.utc)
        if tz is not None and not _HAS_ZONE.search(raw.strip()):
            # RFC 822 without a zone ("Wed, 10 Nov 2021 11:50:52") or ISO without an
            # offset: the wall-clock time is the source's local time.
            tup = email.utils.parsedate_tz(raw)  # (its offset reads 0 when the zone is missing)
            if tup is not None:
                try:
                    return datetime(*tup[:6]).replace(tzinfo=tz).astimezone(timezone.utc)
                except ValueError:
                    return None
            if parsed is not None:  # feedparser read it as UTC wall-clock time
                return parsed.replace(tzinfo=None).replace(tzinfo=tz).astimezone(timezone.utc)
        if parsed is None:
            tup = email.utils.parsedate_tz(raw)
            if tup is not None:
                try:
                    zoned = _HAS_ZONE.search(raw.strip()) and tup[9] is not None
                    offset = timezone(timedelta(seconds=tup[9])) if zoned else local
                    return datetime(*tup[:6]).replace(tzinfo=offset).astimezone(timezone.utc)
                except (ValueError, OverflowError):
                    return None
    return parsed


def decide_date(item_date: datetime | None, now: datetime, future_skew: timedelta) -> tuple[datetime | None, str]:
    """Which date the article gets, and why (kept with the article).

    ``None`` means "the time it was first seen", which the store supplies and keeps."""
    if item_date is None:
        return None, "first-seen: the item has no readable date"
    if item_date < EARLIEST:
        return None, f"first-seen: the item's date {item_date:%Y-%m-%d} is before 1990"
    if item_date > now + future_skew:
        return None, f"first-seen: the item's date {item_date:%Y-%m-%dT%H:%MZ} is in the future"
    return item_date, "item"
