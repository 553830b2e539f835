"""Pure "when next?" decisions: after a poll attempt, when may this source be polled again?

Owns: reading the origin's hints (Retry-After, Cache-Control max-age, Expires, RSS <ttl>,
RSS 1.0 mod_syndication), exponential error backoff, the operator's caps, and a
deterministic jitter that spreads sources due together.

Must not: read the clock, touch the database or the network, or use randomness. Everything
is a function of its arguments and ``now``; the same inputs give the same answer, so the
pipeline can store the result in SQLite (HAZARDS.md, Scheduling: a restart during a 429
backoff must not hit the origin early) and tests can pin ``now``.

The rules, in order (``next_poll``):

    gone (410)              -> None: never poll again
    ok / not-modified       -> base = max(interval, min(cache_floor, max_cache_floor))
    error                   -> base = clamp(interval * 2**(errors-1), interval, max(max_backoff, interval))
    error 429/503 + Retry-After
                            -> base = max(that backoff, min(retry_after, max_retry_after))
    then jitter             -> base * (1 ± jitter), from a hash of (key, now)

Jitter is symmetric (±``jitter``) when the delay is our own choice (the interval, the
backoff): the mean poll rate stays at the configured rate, and a jittered delay may come
out up to ``jitter × delay`` *shorter than the interval*. It is only ever upward when
symmetric jitter could undercut a minimum the origin stated (a cache lifetime or a
Retry-After): the origin's number is a floor we never poll before.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = [
    "PollPolicy",
    "Outcome",
    "parse_http_date",
    "parse_retry_after",
    "cache_floor",
    "next_poll",
    "describe",
]

KINDS = ("ok", "not-modified", "error", "gone")

# RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2**31 (68 years).
# Applying it to every delta we parse keeps arithmetic (and timedelta) finite.
DELTA_SECONDS_MAX = 2**31

# RSS 1.0 mod_syndication (web.resource.org/rss/1.0/modules/syndication/): updatePeriod is
# one of these; updateFrequency is how many updates per period (a positive integer, default
# 1); a missing period means "daily". The spec gives no length for month/year: 30 / 365 days.
SY_PERIODS = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
    "yearly": 365 * 86400.0,
}

Headers = Iterable[tuple[str, str]] | Mapping[str, str]


@dataclass(frozen=True)
class PollPolicy:
    """Operator settings (seconds). Caps keep a hostile or confused origin from parking a
    source for months; the jitter fraction spreads sources that fall due together."""

    max_cache_floor: float = 24 * 3600  # cap on how far cache hints may push the next poll
    max_retry_after: float = 2 * 86400  # cap on honouring Retry-After
    max_backoff: float = 86400  # cap on exponential error backoff
    jitter: float = 0.1  # ± fraction of the delay

    def __post_init__(self) -> None:
        for name in ("max_cache_floor", "max_retry_after", "max_backoff"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"PollPolicy.{name} must be a finite number >= 0, not {value!r}")
        # Below 1 so that a symmetric jitter can never produce a zero or negative delay.
        if not (0 <= self.jitter < 1):
            raise ValueError(f"PollPolicy.jitter must be in [0, 1), not {self.jitter!r}")


@dataclass(frozen=True)
class Outcome:
    """What one poll attempt produced, as plain values (no httpx or feedparser objects)."""

    kind: str  # "ok" | "not-modified" | "error" | "gone"
    status: int | None = None  # HTTP status if any (429, 503, 500, 404, ...)
    error_count: int = 0  # consecutive failures INCLUDING this one (0 on success)
    headers: tuple[tuple[str, str], ...] = ()  # lower-case names, as in models.Fetched
    ttl_minutes: int | None = None  # RSS 2.0 <ttl>
    update_period: str | None = None  # sy:updatePeriod
    update_frequency: int | None = None  # sy:updateFrequency


# --- HTTP dates ------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_DAY = r"(?:mon|tue|wed|thu|fri|sat|sun)"
_DAY_L = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
_MON = r"(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"
_TIME = r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)"
# RFC 9110 §5.6.7 requires "GMT"; UTC and +0000 are the same instant and common enough in
# the wild to accept. Any other zone is refused rather than guessed.
_GMT = r"(?:gmt|utc|[+-]0000)"
_HTTP_DATE_FORMS = (
    # IMF-fixdate, the preferred form: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(rf"{_DAY},\s*(?P<d>\d\d?)\s+{_MON}\s+(?P<y>\d{{4}})\s+{_TIME}\s+{_GMT}", re.I),
    # obsolete RFC 850 form: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(rf"{_DAY_L},\s*(?P<d>\d\d?)-{_MON}-(?P<y>\d\d)\s+{_TIME}\s+{_GMT}", re.I),
    # obsolete asctime form: Sun Nov  6 08:49:37 1994
    re.compile(rf"{_DAY}\s+{_MON}\s+(?P<d>\d\d?)\s+{_TIME}\s+(?P<y>\d{{4}})", re.I),
)


def parse_http_date(value: str | None, now: datetime) -> datetime | None:
    """An HTTP-date (RFC 9110 §5.6.7) in any of its three forms, as aware UTC; else None.

    ``now`` resolves the two-digit year of the RFC 850 form: a date more than 50 years in
    the future means the most recent past year with those digits (§5.6.7).
    """
    if not value:
        return None
    text = value.strip()
    for form in _HTTP_DATE_FORMS:
        match = form.fullmatch(text)
        if match:
            break
    else:
        return None
    year = int(match["y"])
    if len(match["y"]) == 2:
        year += now.year - now.year % 100
        if year > now.year + 50:
            year -= 100
    # HTTP allows second 60 (a leap second); datetime does not.
    second = min(int(match["s"]), 59)
    try:
        return datetime(year, _MONTHS[match["mon"].lower()], int(match["d"]),
                        int(match["h"]), int(match["m"]), second, tzinfo=timezone.utc)
    except ValueError:  # 31 Feb, 25:00:00, ...
        return None


def _delta_seconds(text: str) -> float | None:
    """``1*DIGIT`` (RFC 9111 §1.2.2), capped at 2**31; anything else (a sign, a fraction,
    a unit) is not a delta-seconds."""
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    # Compare lengths first: int() refuses strings over 4300 digits.
    if len(text.lstrip("0")) > 10:
        return float(DELTA_SECONDS_MAX)
    return float(min(int(text), DELTA_SECONDS_MAX))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait according to a Retry-After value (RFC 9110 §10.2.3).

    Either delta-seconds or an HTTP-date; a date already past means 0. Garbage, negative
    numbers and fractions give None (the grammar has no sign and no decimal point).
    """
    if value is None:
        return None
    delta = _delta_seconds(value)
    if delta is not None:
        return delta
    when = parse_http_date(value, now)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


# --- cache hints -----------------------------------------------------------------------


def _header_values(headers: Headers, name: str) -> list[str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [value for key, value in pairs if key.lower() == name]


def _first(headers: Headers, name: str) -> str | None:
    values = _header_values(headers, name)
    return values[0] if values else None


# A Cache-Control member is a token, optionally "=" and a token or a quoted string
# (RFC 9111 §5.2); commas inside quotes (no-cache="a, b") do not split members.
_CC_MEMBER = re.compile(r'(?:[^,"]|"(?:[^"\\]|\\.)*"?)+')


def _cache_control(headers: Headers) -> dict[str, str | None]:
    """Directive -> argument (unquoted) or None; the first occurrence of a directive wins
    (RFC 9111 §4.2.1 allows "use the first"). Several header lines are one list."""
    directives: dict[str, str | None] = {}
    for line in _header_values(headers, "cache-control"):
        for member in _CC_MEMBER.findall(line):
            name, eq, arg = member.partition("=")
            name = name.strip().lower()
            if not name or name in directives:
                continue
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                # §5.2: recipients should accept the quoted form of a token argument too.
                arg = arg[1:-1]
            directives[name] = arg if eq else None
    return directives


def _http_freshness(headers: Headers, now: datetime) -> float | None:
    """Seconds the HTTP response stays fresh from ``now`` (RFC 9111 §4.2), or None."""
    cc = _cache_control(headers)
    # no-store: nothing may be kept; unqualified no-cache: stale at once, revalidate every
    # time. Either way the origin makes no freshness claim. A *qualified* no-cache
    # (no-cache="set-cookie") only concerns the named fields (§5.2.2.4), so it is ignored.
    if "no-store" in cc or ("no-cache" in cc and not cc["no-cache"]):
        return None
    lifetime = None
    # §4.2.1: max-age beats Expires. s-maxage is for shared caches only; we are a private
    # client. A malformed max-age is ignored as if absent.
    if "max-age" in cc and cc["max-age"] is not None:
        lifetime = _delta_seconds(cc["max-age"])
    if lifetime is None:
        expires = _first(headers, "expires")
        if expires is not None:
            expires_at = parse_http_date(expires, now)
            date_at = parse_http_date(_first(headers, "date"), now)
            if expires_at is None:
                # §5.3: an invalid Expires (notably "0") means "already expired".
                lifetime = 0.0
            else:
                # §4.2.1: Expires minus Date, so the origin's clock is the one used; with
                # no usable Date, our own clock stands in for it.
                lifetime = max(0.0, (expires_at - (date_at or now)).total_seconds())
    if lifetime is None:
        return None
    # §4.2.3: a copy already Age seconds old in an upstream cache has that much less left.
    age = _delta_seconds(_first(headers, "age") or "")
    return max(0.0, lifetime - (age or 0.0))


def _feed_hints(ttl_minutes: int | None, update_period: str | None,
                update_frequency: int | None) -> list[float]:
    hints = []
    # RSS 2.0 <ttl>: "number of minutes that indicates how long a channel can be cached
    # before refreshing from the source". Zero or negative says nothing.
    if ttl_minutes is not None and ttl_minutes > 0:
        hints.append(min(float(ttl_minutes) * 60, DELTA_SECONDS_MAX))
    # RSS 1.0 mod_syndication: updateFrequency updates per updatePeriod. An unknown period
    # is no hint; a frequency that is not a positive integer falls back to the default 1.
    if update_period is not None or update_frequency is not None:
        period = SY_PERIODS.get((update_period or "daily").strip().lower())
        if period is not None:
            frequency = update_frequency if update_frequency and update_frequency > 0 else 1
            hints.append(period / frequency)
    return hints


def cache_floor(headers: Headers, now: datetime, ttl_minutes: int | None = None,
                update_period: str | None = None, update_frequency: int | None = None,
                ) -> float | None:
    """Seconds the origin says its content stays fresh; None if it gives no hint.

    HTTP (RFC 9111): Cache-Control max-age, else Expires - Date (Expires - now without a
    Date), less the Age header; no-store / no-cache cancel the HTTP hint. Feed level: RSS
    2.0 <ttl> and RSS 1.0 sy:updatePeriod / sy:updateFrequency. These still count when
    HTTP says no-cache: many servers send no-cache by default, while the feed's author
    stated the update rate on purpose. The largest hint wins (the caller caps it).
    """
    hints = _feed_hints(ttl_minutes, update_period, update_frequency)
    http = _http_freshness(headers, now)
    if http is not None:
        hints.append(http)
    return max(hints, default=None)


# --- the decision ----------------------------------------------------------------------


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _unit(key: str, now: datetime) -> float:
    """A number in [0, 1) fixed by (key, instant): sha256 rather than hash(), which is
    salted per process. The instant is taken in UTC microseconds so that the same moment
    in another timezone gives the same value."""
    delta = now - _EPOCH
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    digest = hashlib.sha256(f"{key}\x00{micros}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _jittered(base: float, floor: float, fraction: float, u: float) -> float:
    if base * (1 - fraction) >= floor:
        return base * (1 + fraction * (2 * u - 1))  # symmetric: mean stays at base
    return base * (1 + fraction * u)  # upward only: base >= floor, so never below it


def _backoff(interval: float, error_count: int, policy: PollPolicy) -> float:
    # Error count 0 on an error is inconsistent input; it is treated as the first failure.
    doublings = max(error_count, 1) - 1
    cap = max(policy.max_backoff, interval)  # the cap never makes us poll faster than asked
    # 2**64 exceeds any cap worth having; stopping there keeps the float finite.
    return min(interval * 2.0 ** min(doublings, 64), cap)


def next_poll(now: datetime, interval: float, outcome: Outcome, *, key: str,
              policy: PollPolicy = PollPolicy()) -> datetime | None:
    """When to poll again after ``outcome``; None means never (410 Gone).

    ``key`` identifies the source (its name): it seeds the jitter together with ``now``.
    ``now`` must be timezone-aware; the result is in the same timezone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("next_poll needs an aware datetime for now")
    if not (math.isfinite(interval) and interval > 0):
        raise ValueError(f"interval must be a finite number of seconds > 0, not {interval!r}")
    kind = outcome.kind
    if kind == "gone":
        # RFC 9110 §15.5.11: 410 is "likely permanent"; the caller says so by the kind.
        return None
    floor = 0.0  # a minimum the origin stated, which jitter must not undercut
    if kind in ("ok", "not-modified"):
        hint = cache_floor(outcome.headers, now, outcome.ttl_minutes,
                           outcome.update_period, outcome.update_frequency)
        if hint is not None:
            floor = min(hint, policy.max_cache_floor)
        base = max(interval, floor)
    elif kind == "error":
        base = _backoff(interval, outcome.error_count, policy)
        if outcome.status in (429, 503):
            # RFC 9110 §10.2.3 / RFC 6585 §4: Retry-After on 503 and 429. Measured from our
            # clock and from the response's Date, taking the later, so an origin whose
            # clock is behind ours is not hit before it asked.
            value = _first(outcome.headers, "retry-after")
            waits = [parse_retry_after(value, now)]
            date_at = parse_http_date(_first(outcome.headers, "date"), now)
            if date_at is not None:
                waits.append(parse_retry_after(value, date_at))
            known = [w for w in waits if w is not None]
            if known:
                floor = min(max(known), policy.max_retry_after)
                base = max(base, floor)
    else:
        raise ValueError(f"unknown outcome kind {kind!r}; expected one of {KINDS}")
    delay = _jittered(base, floor, policy.jitter, _unit(key, now))
    return now + timedelta(seconds=delay)


def describe(next_at: datetime | None, now: datetime) -> str:
    """Short human text for a next poll time: "in 14m", "in 2h 5m", "never (gone)"."""
    if next_at is None:
        return "never (gone)"
    seconds = round((next_at - now).total_seconds())
    if seconds == 0:
        return "now"
    text = _span(abs(seconds))
    return f"in {text}" if seconds > 0 else f"overdue by {text}"


def _span(seconds: int) -> str:
    """The two largest non-zero units, truncated: 3725 -> "1h 2m"."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or parts:
            parts.append((count, unit))
    shown = [f"{count}{unit}" for count, unit in parts[:2] if count]
    return " ".join(shown)
