"""RSSHub routes as sources (issue 9), end to end: two loopback "RSSHub instances" (real
HTTP servers), the first failing in each way an instance fails; the articles still arrive,
from the second, within one cycle; instance health is remembered (SQLite) and shown by
``list-sources``; a sick instance is retried after its backoff; ``add-source rsshub://``
checks the route like any other source. The clock is pinned where backoff matters.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from tests.conftest import write_config
from tests.server import FeedServer
from tests.test_cli import run

T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
ROUTE = "/cls/depth/1000"


def feed(n: int = 3, title: str = "财联社 - 深度") -> bytes:
    items = "".join(
        f"<item><title>深度报道 {i}</title><link>https://www.cls.cn/detail/{1000 + i}</link>"
        f"<guid>https://www.cls.cn/detail/{1000 + i}</guid><pubDate>Wed, 25 Nov 2026 0{i}:00:00 GMT</pubDate>"
        f"<description>&lt;p&gt;第 {i} 篇的正文，足够长的一段文字，讲述市场的变化。&lt;/p&gt;</description></item>"
        for i in range(n)
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>https://www.cls.cn/</link><description>RSSHub</description>{items}</channel></rss>").encode()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def slow(handler) -> None:
    time.sleep(3)
    handler.send_body(feed(), status=200, content_type="application/rss+xml")


FAILURES = {
    "503": lambda a: a.add(ROUTE, b"<h1>Service Unavailable</h1>", status=503, content_type="text/html"),
    "429": lambda a: a.add(ROUTE, b"rate limited", status=429, headers={"Retry-After": "120"}, content_type="text/plain"),
    "timeout": lambda a: a.add_handler(ROUTE, slow),
    "truncated feed": lambda a: a.add(ROUTE, feed()[:300]),
    "HTML error page with 200": lambda a: a.add(ROUTE, b"<!doctype html><html><body><h1>Error</h1><p>Looks like something"
                                                       b" went wrong</p></body></html>", content_type="text/html"),
}


@pytest.fixture
def instances():
    with FeedServer() as a, FeedServer() as b:
        b.add(ROUTE, feed())
        yield a, b


def config_for(tmp_path, urls: list[str], **source):
    return write_config(tmp_path / "config.toml", [
        {"name": "财联社深度", "url": "rsshub://cls/depth/1000", "category": "金融", "timeout": 1.5, **source}],
        rsshub_instances=urls)


def poll(path, when=T0):
    with Pipeline(load_config(path), clock=lambda: when) as p:
        return p.poll()


def listed(path) -> dict:
    return json.loads(run(path, "list-sources", "--json", check=0).stdout)[0]


def route_hits(server) -> list:
    return [r for r in server.requests if urlsplit(r.path).path == ROUTE]


@pytest.mark.parametrize("failure", list(FAILURES))
def test_the_second_instance_serves_when_the_first_fails(tmp_path, instances, failure):
    a, b = instances
    FAILURES[failure](a)
    path = config_for(tmp_path, [a.url("/").rstrip("/"), b.url("/").rstrip("/")],
                      rsshub={"limit": 5, "filter": "深度|市场", "filterout": "广告", "mode": "fulltext"})
    cycle = poll(path)
    (result,) = cycle.results
    assert result.error is None and result.new == 3, result
    assert len(route_hits(a)) == 1 and len(route_hits(b)) == 1
    query = parse_qs(urlsplit(route_hits(b)[0].path).query)
    assert query == {"limit": ["5"], "filter": ["深度|市场"], "filterout": ["广告"], "mode": ["fulltext"]}
    row = listed(path)
    assert row["state"] == "ok" and row["served_by"] == b.url("/").rstrip("/")
    health = {i["url"]: i for i in row["rsshub_instances"]}
    sick, well = health[a.url("/").rstrip("/")], health[b.url("/").rstrip("/")]
    assert sick["failures"] == 1 and sick["last_error"] and sick["next_try"] and not sick["last_success"]
    assert well["failures"] == 0 and well["last_success"]
    text = run(path, "list-sources", check=0).stdout
    assert "RSSHub instances" in text and "1" in text


def test_an_instance_that_is_down_and_one_without_the_route(tmp_path, instances):
    """Connection refused counts against the instance; a 404 (an older RSSHub without the
    route) sends us on without marking the instance sick."""
    a, b = instances  # a has no route: 404
    down = dead_url()
    path = config_for(tmp_path, [down, a.url("/").rstrip("/"), b.url("/").rstrip("/")])
    (result,) = poll(path).results
    assert result.new == 3
    health = {i["url"]: i for i in listed(path)["rsshub_instances"]}
    assert health[down]["failures"] == 1 and "connect" in health[down]["last_error"]
    assert health[a.url("/").rstrip("/")]["failures"] == 0


def test_validators_stay_with_their_instance_and_a_sick_one_is_retried_after_its_backoff(tmp_path, instances):
    a, b = instances
    FAILURES["503"](a)
    a_url, b_url = a.url("/").rstrip("/"), b.url("/").rstrip("/")
    path = config_for(tmp_path, [a_url, b_url])
    assert poll(path).results[0].new == 3
    # a minute later: a is backing off, so b is asked first, with b's validators: 304
    cycle = poll(path, T0 + timedelta(seconds=30))
    assert cycle.results[0].not_modified and len(route_hits(a)) == 1
    assert "if-none-match" in route_hits(b)[-1].headers
    # two hours later a has recovered: its backoff is over, it is asked first again (the
    # operator's order), without b's validators, and is healthy again
    a.add(ROUTE, feed(4))
    cycle = poll(path, T0 + timedelta(hours=2))
    assert cycle.results[0].new == 1 and len(route_hits(a)) == 2
    assert "if-none-match" not in route_hits(a)[-1].headers
    health = {i["url"]: i for i in listed(path)["rsshub_instances"]}
    assert health[a_url]["failures"] == 0 and health[a_url]["last_success"]


def test_every_instance_failing_fails_the_source_naming_each_and_keeps_its_articles(tmp_path, instances):
    a, b = instances
    path = config_for(tmp_path, [a.url("/").rstrip("/"), b.url("/").rstrip("/")])
    assert poll(path).results[0].new == 3
    FAILURES["503"](a)
    FAILURES["503"](b)
    (result,) = poll(path, T0 + timedelta(hours=1)).results
    assert result.error and "every RSSHub instance failed" in result.error
    assert result.error.count("HTTP 503") == 2 and result.error_kind == "http-5xx"
    row = listed(path)
    assert row["state"] == "failing" and row["articles"] == 3


def test_add_source_checks_a_route_on_the_instances_and_the_first_poll_is_conditional(tmp_path, instances):
    a, b = instances
    FAILURES["503"](a)
    path = write_config(tmp_path / "config.toml", [], rsshub_instances=[a.url("/").rstrip("/"), b.url("/").rstrip("/")])
    out = run(path, "add-source", "rsshub://cls/depth/1000", "--name", "财联社深度", "--category", "金融",
              "--rsshub", "limit=10", check=0)
    assert "from " + b.url("/").rstrip("/") in out.stdout and "Stored 3 new articles" in out.stdout
    source = load_config(path).sources[0]
    assert source.url == "rsshub://cls/depth/1000" and dict(source.rsshub) == {"limit": 10}
    run(path, "poll", check=0)
    assert len(route_hits(b)) == 2 and "if-none-match" in route_hits(b)[-1].headers
    assert parse_qs(urlsplit(route_hits(b)[-1].path).query) == {"limit": ["10"]}
    # a route no instance serves is refused with the reason, and not added
    out = run(path, "add-source", "rsshub://nowhere/route", "--name", "Nowhere", "--category", "x", check=1)
    assert "every RSSHub instance failed" in out.stderr and "404" in out.stderr
    assert len(load_config(path).sources) == 1


@pytest.mark.parametrize(("url", "settings", "problem"), [
    ("rsshub://", {}, "rsshub"),
    ("rsshub://cls/../admin", {}, ".."),
    ("rsshub://cls/depth", {"rsshub": {"limit": 0}}, "limit"),
    ("rsshub://cls/depth", {"rsshub": {"format": "atom"}}, "format"),
    ("https://example.org/feed.xml", {"rsshub": {"limit": 5}}, "only for an rsshub:// source"),
])
def test_bad_routes_and_parameters_are_config_errors(tmp_path, url, settings, problem):
    path = write_config(tmp_path / "config.toml", [{"name": "S", "url": url, "category": "x", **settings}])
    out = run(path, "list-sources", check=2)
    assert problem in out.stderr and "sources[0]" in out.stderr


def test_published_feeds_name_a_route_by_a_url_readers_can_open(tmp_path, instances):
    from tests.helpers import parse_output_feed

    a, b = instances
    path = config_for(tmp_path, [b.url("/").rstrip("/"), a.url("/").rstrip("/")], rsshub={"limit": 5})
    poll(path)
    out = load_config(path).output_dir
    parsed = parse_output_feed(next(out.glob("*.rss.xml")))
    assert {e.source.href for e in parsed.entries} == {b.url("/cls/depth/1000?limit=5")}
