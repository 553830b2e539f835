"""Tests for the "when next?" decisions (aggregator.schedule).

Expected values come from the rules written in the brief and the RFCs (a max-age of 600 is
600 s; the third consecutive failure at a 900 s interval waits 900 * 2**2), computed here,
not copied from the module's output. Exact values use ``jitter=0``; with jitter the tests
check bounds. HTTP dates are written by the standard library (``email.utils``,
``time.asctime``), an independent formatter, and parsed back by the module.
"""

from __future__ import annotations

import email.utils
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.schedule import (
    Outcome,
    PollPolicy,
    cache_floor,
    describe,
    next_poll,
    parse_http_date,
    parse_retry_after,
)

UTC = timezone.utc
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # a Sunday
P0 = PollPolicy(jitter=0)  # exact values: no jitter
DAY = 86400


def imf(dt: datetime) -> str:
    """IMF-fixdate, the preferred HTTP-date form (RFC 9110 §5.6.7)."""
    return email.utils.format_datetime(dt.astimezone(UTC), usegmt=True)


def rfc850(dt: datetime) -> str:
    days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
    return f"{days[dt.weekday()]}, {dt:%d}-{imf(dt)[8:11]}-{dt:%y %H:%M:%S} GMT"


def asctime(dt: datetime) -> str:
    return time.asctime(dt.timetuple())


def delay(next_at: datetime | None, now: datetime = NOW) -> float:
    assert next_at is not None
    return (next_at - now).total_seconds()


# --- parse_retry_after / parse_http_date -------------------------------------------------

FIVE_MIN_LATER = NOW + timedelta(minutes=5)

RETRY_AFTER_TABLE = [
    ("120", 120.0),
    ("0", 0.0),
    (" 30 ", 30.0),  # optional whitespace around a field value
    ("007", 7.0),
    ("9" * 5000, 2.0**31),  # RFC 9111 §1.2.2: too large -> 2**31, no crash
    (imf(FIVE_MIN_LATER), 300.0),
    ("Sun, 01 Nov 2026 12:05:00 GMT", 300.0),
    ("Sun, 01 Nov 2026 12:05:00 UTC", 300.0),
    (rfc850(FIVE_MIN_LATER), 300.0),
    ("Sunday, 01-Nov-26 12:05:00 GMT", 300.0),
    (asctime(FIVE_MIN_LATER), 300.0),
    ("Sun Nov  1 12:05:00 2026", 300.0),
    (imf(NOW - timedelta(hours=3)), 0.0),  # a date already past: retry now
    (imf(NOW), 0.0),
    ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
    # garbage
    (None, None),
    ("", None),
    ("   ", None),
    ("-5", None),  # the grammar has no sign
    ("+5", None),
    ("1.5", None),  # nor a fraction
    ("5s", None),
    ("soon", None),
    ("120, 60", None),
    ("١٢٠", None),  # Arabic-Indic digits are digits to str.isdigit, not to HTTP
    ("Sun, 31 Feb 2026 12:05:00 GMT", None),  # no such day
    ("Sun, 01 Nov 2026 25:05:00 GMT", None),
    ("Sun, 01 Nov 2026 12:05:00 +0100", None),  # HTTP dates are GMT; other zones refused
    ("2026-11-01T12:05:00Z", None),  # ISO 8601 is not an HTTP-date
    ("Sun, 01 Nov 2026", None),
]


@pytest.mark.parametrize("value,expected", RETRY_AFTER_TABLE)
def test_parse_retry_after_table(value, expected):
    assert parse_retry_after(value, NOW) == expected


def test_rfc850_two_digit_year_fifty_year_rule():
    # RFC 9110 §5.6.7: more than 50 years in the future means the most recent past year
    # with the same last two digits. Now is 2026: '76 is 2076 (exactly 50), '77 is 1977.
    assert parse_http_date("Sunday, 01-Nov-76 00:00:00 GMT", NOW).year == 2076
    assert parse_http_date("Monday, 01-Nov-77 00:00:00 GMT", NOW).year == 1977
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", NOW) == datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)


def test_http_date_examples_from_rfc9110():
    # The three forms of the same instant, as RFC 9110 §5.6.7 prints them.
    expected = datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)
    for text in ("Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"):
        assert parse_http_date(text, NOW) == expected, text
    assert parse_http_date("Sun, 06 Nov 1994 08:49:60 GMT", NOW) == expected.replace(second=59)  # leap second


second_precision = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=200, deadline=None)
@given(second_precision)
def test_http_date_round_trips_through_stdlib_formatters(dt):
    assert parse_http_date(imf(dt), NOW) == dt
    assert parse_http_date(asctime(dt), NOW) == dt
    # RFC 850 carries two digits of year: it round-trips inside the 100-year window.
    if NOW.year - 49 <= dt.year <= NOW.year + 50:
        assert parse_http_date(rfc850(dt), NOW) == dt


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=3 * DAY))
def test_retry_after_delta_and_date_agree(seconds, date_offset):
    assert parse_retry_after(str(seconds), NOW) == min(seconds, 2**31)
    # The same wait written as a date (whole seconds) means the same number of seconds.
    assert parse_retry_after(imf(NOW + timedelta(seconds=date_offset)), NOW) == date_offset


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_retry_after_never_raises_and_is_never_negative(text):
    got = parse_retry_after(text, NOW)
    assert got is None or got >= 0


# --- cache_floor -----------------------------------------------------------------------

HOUR_LATER = imf(NOW + timedelta(hours=1))

CACHE_TABLE = [
    # (headers, ttl, period, frequency, expected seconds)
    ((), None, None, None, None),
    ((("cache-control", "max-age=600"),), None, None, None, 600.0),
    ((("cache-control", 'max-age="600"'),), None, None, None, 600.0),  # quoted form, RFC 9111 §5.2
    ((("cache-control", "public, Max-Age=600 , must-revalidate"),), None, None, None, 600.0),
    ((("Cache-Control", "max-age=600"),), None, None, None, 600.0),  # defensive about name case
    ((("cache-control", "public, max-age=600, s-maxage=9000"),), None, None, None, 600.0),
    ((("cache-control", "s-maxage=9000"),), None, None, None, None),  # shared caches only
    ((("cache-control", "max-age=60, max-age=6000"),), None, None, None, 60.0),  # first wins
    ((("cache-control", "public"), ("cache-control", "max-age=60")), None, None, None, 60.0),  # lines join
    # max-age beats Expires (RFC 9111 §4.2.1)
    ((("cache-control", "max-age=600"), ("expires", imf(NOW + timedelta(days=3)))), None, None, None, 600.0),
    # Expires - Date
    ((("date", imf(NOW)), ("expires", HOUR_LATER)), None, None, None, 3600.0),
    # the origin's clock is 10 min behind ours: Expires - Date still gives its lifetime
    ((("date", imf(NOW - timedelta(minutes=10))), ("expires", imf(NOW + timedelta(minutes=50)))), None, None, None, 3600.0),
    # no Date: Expires - now
    ((("expires", HOUR_LATER),), None, None, None, 3600.0),
    ((("expires", HOUR_LATER), ("date", "yesterday")), None, None, None, 3600.0),
    # invalid Expires, notably "0", means already expired (RFC 9111 §5.3)
    ((("expires", "0"),), None, None, None, 0.0),
    ((("expires", "-1"),), None, None, None, 0.0),
    ((("expires", imf(NOW - timedelta(hours=1))),), None, None, None, 0.0),
    # a malformed max-age is ignored: Expires decides
    ((("cache-control", "max-age=abc"), ("expires", HOUR_LATER)), None, None, None, 3600.0),
    ((("cache-control", "max-age=-1"),), None, None, None, None),
    ((("cache-control", "max-age"),), None, None, None, None),
    ((("cache-control", ",,,=,\"\","),), None, None, None, None),
    # Age: an upstream cache already held it that long (RFC 9111 §4.2.3)
    ((("cache-control", "max-age=600"), ("age", "100")), None, None, None, 500.0),
    ((("cache-control", "max-age=600"), ("age", "1000")), None, None, None, 0.0),
    ((("cache-control", "max-age=600"), ("age", "junk")), None, None, None, 600.0),
    # no-store / no-cache: no HTTP freshness claim
    ((("cache-control", "no-store, max-age=600"),), None, None, None, None),
    ((("cache-control", "max-age=600, NO-CACHE"),), None, None, None, None),
    ((("cache-control", "no-cache"), ("expires", HOUR_LATER)), None, None, None, None),
    # a qualified no-cache concerns only the named fields (RFC 9111 §5.2.2.4)
    ((("cache-control", 'no-cache="set-cookie", max-age=600'),), None, None, None, 600.0),
    ((("cache-control", 'no-cache="set-cookie, x-foo", max-age=600'),), None, None, None, 600.0),
    # RSS 2.0 <ttl> (minutes)
    ((), 30, None, None, 1800.0),
    ((), 0, None, None, None),
    ((), -5, None, None, None),
    # RSS 1.0 mod_syndication: period / frequency; period defaults to daily, frequency to 1
    ((), None, "hourly", None, 3600.0),
    ((), None, "hourly", 2, 1800.0),
    ((), None, "daily", 1, 86400.0),
    ((), None, " Weekly\n", None, 7 * 86400.0),
    ((), None, "monthly", 30, 86400.0),
    ((), None, "yearly", 365, 86400.0),
    ((), None, None, 4, 86400.0 / 4),
    ((), None, "hourly", 0, 3600.0),  # not a positive integer: the default 1
    ((), None, "fortnightly", 2, None),  # not a period the module defines
    # the largest hint wins
    ((("cache-control", "max-age=600"),), 60, "hourly", 2, 3600.0),
    ((("cache-control", "max-age=7200"),), 60, "hourly", 2, 7200.0),
    # no-cache drops only the HTTP hint; the feed author's own statement still counts
    ((("cache-control", "no-store"),), 30, None, None, 1800.0),
]


@pytest.mark.parametrize("headers,ttl,period,frequency,expected", CACHE_TABLE)
def test_cache_floor_table(headers, ttl, period, frequency, expected):
    assert cache_floor(headers, NOW, ttl, period, frequency) == expected


def test_cache_floor_accepts_a_mapping():
    assert cache_floor({"cache-control": "max-age=60"}, NOW) == 60.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["cache-control", "expires", "date", "age", "x"]),
                          st.text(max_size=40)), max_size=5),
       st.one_of(st.none(), st.integers(-10**6, 10**12)),
       st.one_of(st.none(), st.text(max_size=10), st.sampled_from(["hourly", "daily", "yearly"])),
       st.one_of(st.none(), st.integers(-5, 10**6)))
def test_cache_floor_never_raises_on_junk(headers, ttl, period, frequency):
    got = cache_floor(tuple(headers), NOW, ttl, period, frequency)
    assert got is None or got >= 0


def test_cache_floor_on_the_corpus_feed_hints():
    """Every channel-level <ttl> / sy:updatePeriod / sy:updateFrequency in the real corpus,
    as lxml reads it, gives a hint between one minute and a week: real spellings (case,
    whitespace) are understood and real values are sane."""
    lxml_etree = pytest.importorskip("lxml.etree")
    corpus = Path(os.environ.get("AGGREGATOR_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus"))
    if not (corpus / "real").is_dir():
        pytest.skip(f"shared corpus not found at {corpus}; set AGGREGATOR_CORPUS")
    sy = "{http://purl.org/rss/1.0/modules/syndication/}"
    # recover: a few "real" files carry bytes invalid in their declared encoding.
    parser = lxml_etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    seen = 0
    for path in sorted((corpus / "real").iterdir()):
        if path.suffix == ".json":
            continue
        try:
            root = lxml_etree.fromstring(path.read_bytes(), parser)
        except lxml_etree.XMLSyntaxError:
            continue
        if root is None:
            continue
        channel = root.find("channel")
        ttl_el = channel.find("ttl") if channel is not None else None
        period_el = root.find(f".//{sy}updatePeriod")
        freq_el = root.find(f".//{sy}updateFrequency")
        if ttl_el is None and period_el is None and freq_el is None:
            continue
        ttl = int(ttl_el.text.strip()) if ttl_el is not None else None
        freq = int(freq_el.text.strip()) if freq_el is not None else None
        period = period_el.text if period_el is not None else None
        hint = cache_floor((), NOW, ttl, period, freq)
        assert hint is not None and 60 <= hint <= 7 * DAY, (path.name, ttl, period, freq, hint)
        seen += 1
    assert seen >= 20  # the corpus holds ~50 such feeds; a parse regression shows here


# --- next_poll: exact values (jitter 0) -------------------------------------------------


def ok(**kw):
    return Outcome(kind="ok", **kw)


def err(count, status=None, headers=()):
    return Outcome(kind="error", status=status, error_count=count, headers=headers)


EXACT_TABLE = [
    # (interval, outcome, expected delay in seconds, why)
    (900, ok(), 900, "no hint: the interval"),
    (900, ok(headers=(("cache-control", "max-age=3600"),)), 3600, "hint above interval wins"),
    (900, ok(headers=(("cache-control", "max-age=60"),)), 900, "hint below interval: interval"),
    (900, ok(headers=(("cache-control", "max-age=864000"),)), DAY, "10-day hint capped at 24 h"),
    (900, ok(ttl_minutes=60), 3600, "RSS ttl"),
    (900, ok(update_period="hourly", update_frequency=1), 3600, "sy: hourly"),
    (2 * DAY, ok(headers=(("cache-control", "max-age=864000"),)), 2 * DAY, "interval above the cap stays"),
    (900, Outcome(kind="not-modified", ttl_minutes=120), 7200, "304 with feed ttl"),
    (900, Outcome(kind="not-modified", headers=(("expires", HOUR_LATER),)), 3600, "304 with Expires"),
    (900, err(1), 900, "first failure: the interval"),
    (900, err(2), 1800, "second: doubled"),
    (900, err(3), 3600, "third: 900 * 2**2"),
    (900, err(7), min(900 * 2**6, DAY), "seventh: capped"),
    (900, err(10_000), DAY, "huge count: capped, no overflow"),
    (900, err(0), 900, "inconsistent count 0: first failure"),
    (100_000, err(3), 100_000, "interval above max_backoff: never below interval"),
    (900, err(1, 429, (("retry-after", "7200"),)), 7200, "429 Retry-After above backoff"),
    (900, err(3, 429, (("retry-after", "60"),)), 3600, "429 Retry-After below backoff"),
    (900, err(1, 503, (("retry-after", str(10 * DAY)),)), 2 * DAY, "503 Retry-After capped at 2 days"),
    (900, err(1, 503, (("retry-after", imf(NOW + timedelta(hours=2))),)), 7200, "503 Retry-After as a date"),
    (900, err(2, 429), 1800, "429 without Retry-After: the backoff"),
    (900, err(2, 429, (("retry-after", "soon"),)), 1800, "unparseable Retry-After: the backoff"),
    (900, err(1, 500, (("retry-after", "7200"),)), 900, "Retry-After only on 429/503"),
    (900, err(1, 503, (("retry-after", "7200"), ("cache-control", "max-age=99999"))), 7200, "no cache floor on errors"),
    # The origin's clock is an hour behind ours; it asks for 10 minutes as a date. By our
    # clock that date is past, by its Date header it is 600 s away: we wait the 600 s.
    (900, err(1, 429, (("date", imf(NOW - timedelta(hours=1))),
                       ("retry-after", imf(NOW - timedelta(minutes=50))))), 900, "skewed origin: backoff above"),
    (60, err(1, 429, (("date", imf(NOW - timedelta(hours=1))),
                      ("retry-after", imf(NOW - timedelta(minutes=50))))), 600, "skewed origin clock"),
]


@pytest.mark.parametrize("interval,outcome,expected,why", EXACT_TABLE, ids=[r[3] for r in EXACT_TABLE])
def test_next_poll_exact(interval, outcome, expected, why):
    assert delay(next_poll(NOW, interval, outcome, key="src", policy=P0)) == expected


def test_gone_is_never():
    assert next_poll(NOW, 900, Outcome(kind="gone", status=410), key="src") is None
    assert describe(None, NOW) == "never (gone)"


@pytest.mark.parametrize("call", [
    lambda: next_poll(NOW, 900, Outcome(kind="bogus"), key="k"),
    lambda: next_poll(NOW.replace(tzinfo=None), 900, ok(), key="k"),
    lambda: next_poll(NOW, 0, ok(), key="k"),
    lambda: next_poll(NOW, -5, ok(), key="k"),
    lambda: next_poll(NOW, float("nan"), ok(), key="k"),
    lambda: PollPolicy(jitter=1.0),
    lambda: PollPolicy(jitter=-0.1),
    lambda: PollPolicy(max_backoff=-1),
    lambda: PollPolicy(max_retry_after=float("inf")),
])
def test_bad_input_is_refused(call):
    with pytest.raises(ValueError):
        call()


def test_same_instant_in_another_timezone_gives_the_same_time():
    other = NOW.astimezone(timezone(timedelta(hours=9)))
    a = next_poll(NOW, 900, ok(), key="src")
    b = next_poll(other, 900, ok(), key="src")
    assert a == b and b.utcoffset() == timedelta(hours=9)


# --- jitter: which way it goes ----------------------------------------------------------

KEYS = [f"source-{i}" for i in range(200)]


def test_plain_interval_jitters_both_ways():
    # Documented choice: our own interval is a target rate, so jitter spreads both ways
    # and may come out shorter than the interval (by at most 10 %).
    delays = [delay(next_poll(NOW, 900, ok(), key=k)) for k in KEYS]
    assert min(delays) < 900 < max(delays)
    assert 810 <= min(delays) and max(delays) <= 990


def test_jitter_never_undercuts_a_cache_hint_just_below_the_interval():
    # max-age 850 < interval 900, but 900 - 10 % = 810 would poll before it: upward only.
    hinted = ok(headers=(("cache-control", "max-age=850"),))
    delays = [delay(next_poll(NOW, 900, hinted, key=k)) for k in KEYS]
    assert min(delays) >= 900 and max(delays) <= 990
    # A hint far below the interval cannot be undercut: jitter stays symmetric.
    low = ok(headers=(("cache-control", "max-age=60"),))
    assert min(delay(next_poll(NOW, 900, low, key=k)) for k in KEYS) < 900


def test_jitter_never_undercuts_retry_after():
    outcome = err(1, 429, (("retry-after", "7200"),))
    delays = [delay(next_poll(NOW, 900, outcome, key=k)) for k in KEYS]
    assert min(delays) >= 7200 and max(delays) <= 7200 * 1.1
    assert len(set(delays)) >= 150  # still spread, only upward
    # Retry-After just under a backoff: symmetric jitter of the backoff could dip below it.
    close = err(3, 503, (("retry-after", "3500"),))  # backoff 3600, 3600 * 0.9 < 3500
    assert min(delay(next_poll(NOW, 900, close, key=k)) for k in KEYS) >= 3600


# --- properties -------------------------------------------------------------------------

intervals = st.integers(min_value=1, max_value=30 * DAY)
jitters = st.floats(min_value=0, max_value=0.9)
keys = st.text(max_size=30)
nows = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
policies = st.builds(PollPolicy, max_cache_floor=st.integers(0, 10 * DAY), max_retry_after=st.integers(0, 10 * DAY),
                     max_backoff=st.integers(0, 10 * DAY), jitter=jitters)
EPS = 1e-6  # timedelta keeps microseconds


@settings(max_examples=300, deadline=None)
@given(nows, intervals, st.one_of(st.none(), st.integers(0, 100 * DAY)), st.one_of(st.none(), st.integers(0, 10**5)),
       policies, keys, st.booleans())
def test_ok_delay_within_jitter_of_base_and_never_below_the_hint(now, interval, max_age, ttl, policy, key, modified):
    headers = () if max_age is None else (("cache-control", f"max-age={max_age}"),)
    outcome = Outcome(kind="ok" if modified else "not-modified", headers=headers, ttl_minutes=ttl)
    hints = [h for h in (max_age, ttl * 60 if ttl else None) if h is not None]
    floor = min(max(hints), policy.max_cache_floor) if hints else 0
    base = max(interval, floor)
    d = delay(next_poll(now, interval, outcome, key=key, policy=policy), now)
    j = policy.jitter
    assert base * (1 - j) - EPS <= d <= base * (1 + j) + EPS
    assert d >= floor


@settings(max_examples=300, deadline=None)
@given(nows, intervals, st.integers(1, 80), st.sampled_from([429, 503]),
       st.one_of(st.integers(0, 10 * DAY).map(str),
                 st.integers(-DAY, 10 * DAY).map(lambda s: ("date", s))),
       policies, keys)
def test_never_before_retry_after(now, interval, count, status, retry, policy, key):
    now = now.replace(microsecond=0)
    if isinstance(retry, tuple):  # a date, possibly past
        value = imf(now + timedelta(seconds=retry[1]))
        wanted = max(0, retry[1])
    else:
        value, wanted = retry, int(retry)
    outcome = err(count, status, (("retry-after", value),))
    d = delay(next_poll(now, interval, outcome, key=key, policy=policy), now)
    assert d >= min(wanted, policy.max_retry_after)
    backoff = min(interval * 2 ** (count - 1), max(policy.max_backoff, interval))
    assert d >= backoff * (1 - policy.jitter) - EPS
    assert d <= max(backoff, min(wanted, policy.max_retry_after)) * (1 + policy.jitter) + EPS


@settings(max_examples=200, deadline=None)
@given(nows, intervals, policies, keys, st.sampled_from([None, 500, 502, 404, 429]))
def test_backoff_is_monotone_up_to_the_cap(now, interval, policy, key, status):
    delays = [delay(next_poll(now, interval, err(n, status), key=key, policy=policy), now) for n in range(1, 70)]
    assert all(a <= b for a, b in zip(delays, delays[1:]))
    cap = max(policy.max_backoff, interval)
    j = policy.jitter
    assert cap * (1 - j) - EPS <= delays[-1] <= cap * (1 + j) + EPS
    assert interval * (1 - j) - EPS <= delays[0] <= interval * (1 + j) + EPS
    # Without jitter the base is the rule itself: interval * 2**(n-1), capped.
    exact = PollPolicy(max_backoff=policy.max_backoff, jitter=0)
    for n in (1, 2, 5, 20):
        want = min(interval * 2 ** (n - 1), cap)
        assert delay(next_poll(now, interval, err(n, status), key=key, policy=exact), now) == pytest.approx(want, abs=EPS)


@settings(max_examples=200, deadline=None)
@given(nows, intervals, st.integers(0, 40), keys, st.sampled_from(["ok", "not-modified", "error"]),
       st.sampled_from([(), (("retry-after", "3600"),), (("cache-control", "max-age=7200"),)]))
def test_deterministic_for_equal_inputs(now, interval, count, key, kind, headers):
    a = next_poll(now, interval, Outcome(kind=kind, status=429, error_count=count, headers=headers), key=key)
    b = next_poll(now, interval, Outcome(kind=kind, status=429, error_count=count, headers=tuple(headers)),
                  key=str(key), policy=PollPolicy())
    assert a == b


def test_different_keys_spread():
    times = {next_poll(NOW, 900, ok(), key=f"feed-{i}") for i in range(100)}
    assert len(times) >= 50
    # ... and spread across the window, not bunched at one end
    offsets = sorted(delay(t) for t in times)
    assert offsets[0] < 900 * 0.95 and offsets[-1] > 900 * 1.05
    # The same source polled at different moments does not keep one fixed offset either.
    again = {delay(next_poll(NOW + timedelta(seconds=s), 900, ok(), key="feed-0"), NOW + timedelta(seconds=s))
             for s in range(100)}
    assert len(again) >= 50


# --- describe ---------------------------------------------------------------------------


@pytest.mark.parametrize("seconds,text", [
    (0, "now"),
    (0.4, "now"),
    (45, "in 45s"),
    (14 * 60, "in 14m"),
    (14 * 60 + 30, "in 14m 30s"),
    (2 * 3600, "in 2h"),
    (2 * 3600 + 5 * 60, "in 2h 5m"),
    (2 * 3600 + 7, "in 2h"),  # two largest units: the hour and the (zero) minutes
    (DAY + 3 * 3600 + 59, "in 1d 3h"),
    (2 * DAY, "in 2d"),
    (-300, "overdue by 5m"),
])
def test_describe(seconds, text):
    assert describe(NOW + timedelta(seconds=seconds), NOW) == text


def test_describe_of_a_real_decision():
    assert describe(next_poll(NOW, 900, err(3), key="k", policy=P0), NOW) == "in 1h"


@settings(max_examples=500, deadline=None)
@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-9, minutes=-30)),
                                               timezone(timedelta(hours=14))])),
       st.text(max_size=20))
def test_jitter_unit_is_the_sha256_of_key_and_utc_microseconds(now, key):
    """The jitter draw is pinned to its definition (sha256 of the key and the instant in
    UTC microseconds), whatever arithmetic computes the microseconds."""
    import hashlib

    from aggregator.schedule import _unit

    micros = (now - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    digest = hashlib.sha256(f"{key}\x00{micros}".encode("utf-8", "surrogatepass")).digest()
    assert _unit(key, now) == int.from_bytes(digest[:8], "big") / 2**64
