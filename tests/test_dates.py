"""Item dates: naive and Chinese-style dates, per-source time zones, implausible dates."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.config import load_config
from aggregator.dates import EARLIEST, decide_date, read_date
from aggregator.pipeline import Pipeline
from tests.conftest import write_config
from tests.helpers import load_post

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("raw, tz, expected", [
    # naive dates in the source's zone: Beijing is UTC+8, so 14:33 there is 06:33 UTC
    ("2020/1/10 14:33:00", SH, utc(2020, 1, 10, 6, 33)),
    ("2020-01-10 14:33", SH, utc(2020, 1, 10, 6, 33)),
    ("2020-01-10T14:33:00", SH, utc(2020, 1, 10, 6, 33)),
    ("2020年1月10日 14:33", SH, utc(2020, 1, 10, 6, 33)),
    ("2020.1.10", SH, utc(2020, 1, 9, 16, 0)),
    ("Wed, 10 Nov 2021 11:50:52", SH, utc(2021, 11, 10, 3, 50, 52)),
    # without a configured zone, naive means UTC
    ("2020/1/10 14:33:00", None, utc(2020, 1, 10, 14, 33)),
    ("Wed, 10 Nov 2021 11:50:52", None, utc(2021, 11, 10, 11, 50, 52)),
    # an explicit offset always wins over the configured zone
    ("2020-01-10T14:33:00+08:00", None, utc(2020, 1, 10, 6, 33)),
    ("2020-01-10T14:33:00Z", SH, utc(2020, 1, 10, 14, 33)),
    ("2020/1/10 14:33:00 +0000", SH, utc(2020, 1, 10, 14, 33)),
    ("Wed, 10 Nov 2021 11:50:52 GMT", SH, utc(2021, 11, 10, 11, 50, 52)),
    ("Wed, 10 Nov 2021 11:50:52 +0800", None, utc(2021, 11, 10, 3, 50, 52)),
    # nonsense
    ("2020/13/40 10:00", SH, None),
])
def test_read_date(raw, tz, expected):
    assert read_date(raw, None, tz) == expected


def test_feedparsers_misreading_is_corrected():
    """feedparser reads 2020/1/10 as 1 November 2020; ours wins for this shape."""
    import feedparser.datetimes

    wrong = feedparser.datetimes._parse_date("2020/1/10 14:33:00")
    assert wrong is not None and wrong.tm_mon == 11  # the premise
    assert read_date("2020/1/10 14:33:00", datetime(*wrong[:6], tzinfo=UTC), None) == utc(2020, 1, 10, 14, 33)


def test_feedparsers_value_is_kept_when_the_date_has_a_zone():
    parsed = utc(2021, 11, 10, 11, 50, 52)
    assert read_date("Wed, 10 Nov 2021 11:50:52 GMT", parsed, SH) == parsed
    assert read_date(None, parsed, SH) == parsed


NOW = utc(2026, 11, 26, 12)


@pytest.mark.parametrize("item, expected_date, note", [
    (utc(2026, 11, 26, 8), utc(2026, 11, 26, 8), "item"),
    (NOW + timedelta(minutes=59), NOW + timedelta(minutes=59), "item"),
    (NOW + timedelta(hours=2), None, "in the future"),
    (utc(1970, 1, 1), None, "before 1990"),
    (None, None, "no readable date"),
])
def test_decide_date(item, expected_date, note):
    date, why = decide_date(item, NOW, timedelta(hours=1))
    assert date == expected_date and note in why


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)))
def test_decided_dates_are_plausible(item):
    date, why = decide_date(item, NOW, timedelta(hours=1))
    assert (date is None) != (why == "item")
    if date is not None:
        assert EARLIEST <= date <= NOW + timedelta(hours=1)


def test_naive_dates_through_the_pipeline(tmp_path, server):
    """A Chinese feed writing Beijing time without an offset, with the source's timezone;
    and an item dated next year: it gets its first-seen time and the reason is kept."""
    from aggregator.store import Store

    now = utc(2026, 11, 26, 12)
    body = """<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>北京时间</title>
<link>https://bj.example/</link><description>d</description>
<item><title>午间快讯</title><link>https://bj.example/1</link><guid>1</guid><pubDate>2026/11/26 14:33:00</pubDate>
<description>正文一</description></item>
<item><title>未来的新闻</title><link>https://bj.example/2</link><guid>2</guid><pubDate>2027-11-26T10:00:00+08:00</pubDate>
<description>正文二</description></item></channel></rss>""".encode()
    server.add("/bj.xml", body)
    cfg = load_config(write_config(tmp_path / "config.toml", [
        {"name": "北京", "url": server.url("/bj.xml"), "category": "新闻", "timezone": "Asia/Shanghai"},
    ]))
    with Pipeline(cfg, clock=lambda: now) as p:
        p.poll()
    posts = {load_post(f)["title"]: load_post(f) for f in cfg.posts_dir.glob("*.md")}
    assert posts["午间快讯"]["date"] == "Thu, 26 Nov 2026 06:33:00 GMT"
    assert posts["未来的新闻"]["date"] == "Thu, 26 Nov 2026 12:00:00 GMT"  # first seen
    with Store(cfg.db_path) as store:
        notes = {a.title: a.date_note for a in store.all_articles()}
    assert notes["午间快讯"] == "item" and "future" in notes["未来的新闻"]


def test_unknown_timezone_is_a_config_error(tmp_path):
    from aggregator.errors import ConfigError

    path = write_config(tmp_path / "config.toml", [{"name": "a", "url": "https://a.example/", "category": "c", "timezone": "Mars/Olympus"}])
    with pytest.raises(ConfigError, match="sources\\[0\\] \\(a\\).timezone: unknown time zone 'Mars/Olympus'"):
        load_config(path)
