"""The HTTP server (aggregator/serve/) over a real socket, serving real published output.

The output comes from the real pipeline polling the demo feeds from a loopback
``FeedServer``; the server runs as a ``ServerThread`` on a free port; requests go through
``http.client`` (it sends the request target exactly as written — httpx would normalise
``/../`` away — and leaves compressed bodies alone). Numbers in /metrics are checked against
the database read with plain sqlite3.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import brotli
import feedparser
import pytest
from lxml import etree
from prometheus_client.parser import text_string_to_metric_families

from aggregator.config import config_from_dict, load_config
from aggregator.errors import AggregatorError
from aggregator.models import SourceStats, Stats
from aggregator.parse import parse_feed
from aggregator.pipeline import Pipeline
from aggregator.publish.atomic import write_atomic
from aggregator.serve import (
    ARCHIVE_MAX_AGE,
    MAX_CACHE_AGE,
    ServerThread,
    _bind,
    choose_coding,
    content_type,
    health,
    health_window,
    max_age,
    safe_relative_path,
)
from tests.conftest import ROOT, write_config
from tests.server import FeedServer

DEMO = ROOT / "aggregator" / "demo" / "feeds"
SECRET = b"TOP-SECRET-NOT-FOR-HTTP"
# Unicode, a quote and a backslash: label values the exposition must escape
ODD_NAME = 'Sample "Notes" \\ 笔记'


class Clock:
    """A clock the tests can move: None follows real time."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def __call__(self) -> datetime:
        return self.at or datetime.now(UTC)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


def fetch(port: int, target: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def demo_sources(srv: FeedServer) -> list[dict]:
    for name, kind in (("markets.rss.xml", "application/rss+xml"), ("devblog.atom.xml", "application/atom+xml"),
                       ("notes.json", "application/feed+json")):
        srv.add(f"/{name}", (DEMO / name).read_bytes(), content_type=kind)
    return [
        {"name": "样例财经", "url": srv.url("/markets.rss.xml"), "category": "金融", "channel": "深度", "interval": "5m"},
        {"name": "Sample Dev Blog", "url": srv.url("/devblog.atom.xml"), "category": "编程"},
        {"name": ODD_NAME, "url": srv.url("/notes.json"), "category": "编程", "channel": "notes", "interval": "20m"},
    ]


@dataclass
class Site:
    config: object
    port: int
    clock: Clock
    before: dict[str, Reply]  # /healthz and /metrics answered before the first poll


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    clock = Clock()
    with FeedServer() as srv:
        cfg = load_config(write_config(tmp / "config.toml", demo_sources(srv), items_per_feed=2,
                                       default_interval="15m"))
        with ServerThread(cfg, host="127.0.0.1", port=0, clock=clock) as server:
            before = {p: fetch(server.port, p) for p in ("/healthz", "/metrics")}
            with Pipeline(cfg) as pipeline:
                pipeline.poll()
            out = cfg.output_dir
            (out / ".x.tmp").write_bytes(SECRET)
            (out / ".hidden").mkdir()
            (out / ".hidden" / "feed.xml").write_bytes(SECRET)
            (tmp / "secret.xml").write_bytes(SECRET)
            (out / "link-out.xml").symlink_to(tmp / "secret.xml")
            (out / "link-dir").symlink_to(tmp)
            (out / "link-dot.xml").symlink_to(out / ".x.tmp")
            (out / "alias.rss.xml").symlink_to(out / "all.rss.xml")
            yield Site(cfg, server.port, clock, before)


def published(site: Site, pattern: str) -> list[Path]:
    return sorted(p for p in site.config.output_dir.glob(pattern) if p.is_file() and not p.is_symlink())


def url_path(path: Path, root: Path) -> str:
    from urllib.parse import quote

    return "/" + quote(path.relative_to(root).as_posix())


# -- static files: types, validators, compression ----------------------------------------


def test_content_types_per_extension(site):
    out = site.config.output_dir
    (out / "sitemap.xml").write_bytes(b"<?xml version='1.0'?><urlset/>")
    (out / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    (out / "notes.unknownext").write_bytes(b"x")
    expected = {
        "all.rss.xml": "application/rss+xml; charset=utf-8",
        "all.atom.xml": "application/atom+xml; charset=utf-8",
        "all.json": "application/feed+json; charset=utf-8",
        "index.opml": "text/x-opml; charset=utf-8",
        "index.html": "text/html; charset=utf-8",
        published(site, "posts/*.md")[0].relative_to(out).as_posix(): "text/markdown; charset=utf-8",
        "sitemap.xml": "application/xml; charset=utf-8",
        "logo.png": "image/png",
        "notes.unknownext": "application/octet-stream",
    }
    for rel, kind in expected.items():
        r = fetch(site.port, url_path(out / rel, out))
        assert r.status == 200, rel
        assert r.headers["content-type"] == kind, rel
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.body == (out / rel).read_bytes()
    assert "vary" not in fetch(site.port, "/logo.png", {"Accept-Encoding": "gzip"}).headers
    r = fetch(site.port, "/")
    assert (r.status, r.body) == (200, (out / "index.html").read_bytes())
    assert content_type("X.RSS.XML") == "application/rss+xml; charset=utf-8"


def test_every_feed_in_the_opml_is_served_and_parses(site):
    """The OPML's URLs (percent-encoded UTF-8 paths) work; feedparser reads every RSS and
    Atom document as served with no complaint (bozo false); feedparser 6.0 has no JSON
    Feed support, so the JSON twin goes through our own parser, headers and all."""
    r = fetch(site.port, "/index.opml")
    urls = [o.get("xmlUrl") for o in etree.fromstring(r.body).iter("outline") if o.get("xmlUrl")]
    assert len(urls) >= 5
    base = site.config.base_url
    for url in urls:
        stem = urlsplit(url).path.removesuffix(".rss.xml")
        assert url.startswith(base)
        for ext in (".rss.xml", ".atom.xml"):
            got = fetch(site.port, stem + ext)
            assert got.status == 200, stem + ext
            parsed = feedparser.parse(io.BytesIO(got.body), response_headers={"content-type": got.headers["content-type"]})
            assert not parsed.bozo, (stem + ext, parsed.get("bozo_exception"))
            assert parsed.entries and parsed.version == ("rss20" if ext == ".rss.xml" else "atom10"), stem + ext
        got = fetch(site.port, stem + ".json")
        parsed = parse_feed(got.body, tuple(got.headers.items()), base + stem[1:] + ".json")
        assert parsed.version.startswith("json1") and parsed.entries and not parsed.warnings, stem


def test_etag_last_modified_and_304s(site):
    out = site.config.output_dir
    plain = {"Accept-Encoding": "identity"}
    first = fetch(site.port, "/all.rss.xml", plain)
    assert first.status == 200 and first.body == (out / "all.rss.xml").read_bytes()
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')  # strong
    assert first.headers["last-modified"] == email.utils.formatdate((out / "all.rss.xml").stat().st_mtime, usegmt=True)
    assert first.headers["vary"] == "Accept-Encoding"

    for inm in (etag, "W/" + etag, f'"other", {etag}', "*"):
        again = fetch(site.port, "/all.rss.xml", {**plain, "If-None-Match": inm})
        assert (again.status, again.body) == (304, b""), inm
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
        assert "content-length" not in again.headers or again.headers["content-length"] == "0"
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-None-Match": '"other"'}).status == 200
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-None-Match": etag.strip('"')}).status == 200  # malformed

    lm = first.headers["last-modified"]
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-Modified-Since": lm}).status == 304
    older = email.utils.formatdate((out / "all.rss.xml").stat().st_mtime - 60, usegmt=True)
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-Modified-Since": older}).status == 200
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-Modified-Since": "yesterday"}).status == 200
    # If-None-Match decides when present (RFC 9110 §13.2.2)
    assert fetch(site.port, "/all.rss.xml", {**plain, "If-None-Match": '"other"', "If-Modified-Since": lm}).status == 200

    head = fetch(site.port, "/all.rss.xml", plain, method="HEAD")
    assert (head.status, head.body) == (200, b"")
    assert head.headers["etag"] == etag and head.headers["content-length"] == str(len(first.body))
    assert fetch(site.port, "/all.rss.xml", method="POST").status == 405


def test_list_fields_sent_on_several_lines(site):
    """If-None-Match and Accept-Encoding may be split over several header lines."""
    etag = fetch(site.port, "/all.rss.xml", {"Accept-Encoding": "gzip"}).headers["etag"]
    conn = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    try:
        conn.putrequest("GET", "/all.rss.xml", skip_accept_encoding=True)
        for name, value in (("Accept-Encoding", "br;q=0"), ("Accept-Encoding", "gzip"),
                            ("If-None-Match", '"other"'), ("If-None-Match", etag)):
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        assert (resp.status, resp.getheader("etag"), resp.read()) == (304, etag, b"")
    finally:
        conn.close()


def test_changed_file_gets_a_new_etag_and_touching_it_does_not(site):
    out = site.config.output_dir
    write_atomic(out / "changing.xml", b"<?xml version='1.0'?><a>one</a>")
    one = fetch(site.port, "/changing.xml")
    write_atomic(out / "changing.xml", b"<?xml version='1.0'?><a>two</a>")
    two = fetch(site.port, "/changing.xml", {"If-None-Match": one.headers["etag"]})
    assert two.status == 200 and two.body.endswith(b"<a>two</a>")
    assert two.headers["etag"] != one.headers["etag"]
    # same bytes, new mtime: the content hash stays, so readers keep getting 304s
    st = (out / "changing.xml").stat()
    os.utime(out / "changing.xml", (st.st_atime, st.st_mtime + 120))
    touched = fetch(site.port, "/changing.xml", {"If-None-Match": two.headers["etag"]})
    assert touched.status == 304 and touched.headers["etag"] == two.headers["etag"]
    assert touched.headers["last-modified"] != two.headers["last-modified"]


def test_gzip_and_brotli_bodies_decode_to_the_identity_bytes(site):
    out = site.config.output_dir
    path = "/all.atom.xml"
    raw = (out / "all.atom.xml").read_bytes()
    assert len(raw) > 256
    identity = fetch(site.port, path, {"Accept-Encoding": "identity"})
    gz = fetch(site.port, path, {"Accept-Encoding": "gzip"})
    br = fetch(site.port, path, {"Accept-Encoding": "gzip, deflate, br"})
    assert "content-encoding" not in identity.headers and identity.body == raw
    assert gz.headers["content-encoding"] == "gzip" and gzip.decompress(gz.body) == raw
    assert br.headers["content-encoding"] == "br" and brotli.decompress(br.body) == raw
    etags = {identity.headers["etag"], gz.headers["etag"], br.headers["etag"]}
    assert len(etags) == 3
    assert all(r.headers["vary"] == "Accept-Encoding" for r in (identity, gz, br))
    assert len(br.body) < len(raw) and len(gz.body) < len(raw)
    # the same representation again: the same bytes (cached or not) under the same tag
    assert fetch(site.port, path, {"Accept-Encoding": "br"}).body == br.body
    # a 304 is per representation
    assert fetch(site.port, path, {"Accept-Encoding": "gzip", "If-None-Match": gz.headers["etag"]}).status == 304
    assert fetch(site.port, path, {"Accept-Encoding": "identity", "If-None-Match": gz.headers["etag"]}).status == 200
    # q-values: refusals honoured, preferences followed
    cases = {
        "br;q=0, gzip": "gzip",
        "gzip;q=0": None,
        "br;q=0.5, gzip": "gzip",
        "gzip;q=0.5, br": "br",
        "*": "br",
        "*;q=0": None,
        "identity;q=1, gzip;q=0.5": None,
        "x-gzip": "gzip",
    }
    for header, coding in cases.items():
        got = fetch(site.port, path, {"Accept-Encoding": header})
        assert got.headers.get("content-encoding") == coding, header
    # tiny bodies and images are never compressed
    (out / "tiny.xml").write_bytes(b"<a/>")
    assert "content-encoding" not in fetch(site.port, "/tiny.xml", {"Accept-Encoding": "gzip, br"}).headers
    assert "content-encoding" not in fetch(site.port, "/logo.png", {"Accept-Encoding": "gzip, br"}).headers


def test_choose_coding_edges():
    assert choose_coding(None, True) == "identity"  # no header: no coding (conventional)
    assert choose_coding("", True) == "identity"
    assert choose_coding("gzip, br", False) == "identity"
    assert choose_coding("br;q=0.8, gzip;q=0.8", True) == "br"
    assert choose_coding("br;q=abc, gzip", True) == "gzip"  # unreadable q: element ignored
    assert choose_coding("BR", True) == "br"


@pytest.mark.parametrize("target", [
    "/../config.toml", "/%2e%2e/config.toml", "/%2E%2E/config.toml", "/..%2fconfig.toml", "/..%5cconfig.toml",
    "/%5c..%5cconfig.toml", "/posts/../../config.toml", "/posts/%2e%2e/%2e%2e/config.toml", "/%2fetc%2fpasswd",
    "//etc/passwd", "/index.html%00", "/%00", "/.x.tmp", "/.hidden/feed.xml", "/%2ex.tmp", "/link-out.xml",
    "/link-dir/secret.xml", "/link-dir/config.toml", "/link-dot.xml", "/category", "/category/", "/posts/",
    "/archive", "/%ff", "/nothing-here.xml",
])
def test_paths_outside_or_hidden_are_404(site, target):
    r = fetch(site.port, target)
    assert r.status == 404, target
    assert SECRET not in r.body and b"allow_private_networks" not in r.body
    assert r.body == b"not found\n"


def test_symlink_inside_the_folder_is_served(site):
    out = site.config.output_dir
    assert fetch(site.port, "/alias.rss.xml").body == (out / "all.rss.xml").read_bytes()


def test_safe_relative_path():
    assert safe_relative_path("/") == "index.html"
    assert safe_relative_path("/category/金融.rss.xml") == "category/金融.rss.xml"
    for bad in ("", "x", "/..", "/a/../b", "/a//b", "/a/", "/a\\b", "/a\x00", "/.git/config", "/a/.b"):
        assert safe_relative_path(bad) is None, bad


# -- caching headers ---------------------------------------------------------------------


def test_cache_control(site):
    # sources poll every 5m, 15m and 20m: feeds may be cached for the shortest
    assert fetch(site.port, "/all.rss.xml").headers["cache-control"] == "public, max-age=300"
    archives = published(site, "archive/**/*.rss.xml")
    assert archives, "items_per_feed = 2 should have produced archive pages"
    r = fetch(site.port, url_path(archives[0], site.config.output_dir))
    assert r.status == 200 and r.headers["cache-control"] == f"public, max-age={ARCHIVE_MAX_AGE}"
    for path in ("/healthz", "/metrics"):
        assert fetch(site.port, path).headers["cache-control"] == "no-store"


def _config(tmp_path, intervals: list[str], default: str = "15m"):
    sources = [{"name": f"s{i}", "url": f"http://127.0.0.1/{i}", "category": "c", "interval": v}
               for i, v in enumerate(intervals)]
    return config_from_dict({"default_interval": default, "sources": sources}, tmp_path / "config.toml")


def test_max_age_is_the_shortest_interval_capped(tmp_path):
    assert max_age(_config(tmp_path, ["10m", "2h"]), "all.rss.xml") == 600
    assert max_age(_config(tmp_path, ["2h", "1d"]), "all.rss.xml") == MAX_CACHE_AGE
    assert max_age(_config(tmp_path, [], default="30m"), "all.rss.xml") == 1800
    assert max_age(_config(tmp_path, ["10m"]), "archive/all/1.rss.xml") == ARCHIVE_MAX_AGE


# -- /healthz ------------------------------------------------------------------------------


def _stats(last_cycle_at: datetime | None, *sources: tuple[str, str, datetime | None]) -> Stats:
    """Stats with ``sources`` as (name, state, next_poll)."""
    rows = tuple(SourceStats(name=name, state=state, polls_total=1, errors_total=0, last_success=None,
                             last_attempt=None, next_poll=next_poll, last_error=None, articles=0)
                 for name, state, next_poll in sources)
    return Stats(sources=rows, articles_total=0, articles_by_category=(), articles_last_24h=0,
                 last_cycle_at=last_cycle_at, last_cycle_seconds=None, last_publish_at=None,
                 last_publish_seconds=None, published_pages=0, publish_errors=())


AT = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_health_edges(tmp_path):
    cfg = _config(tmp_path, ["10m", "1h"])  # sources s0 (10m) and s1 (1h)
    window = timedelta(seconds=2 * 600 + 60)
    assert health_window(cfg) == window.total_seconds()
    last = AT - timedelta(hours=2)

    def at(now: datetime, *sources) -> tuple[bool, str]:
        return health(_stats(last, *sources), cfg, now)

    assert health(None, cfg, AT)[0] is False
    assert health(_stats(None), cfg, AT) == (False, "no poll cycle yet")
    polled = [("s0", "ok", last + timedelta(minutes=10)), ("s1", "ok", last + timedelta(hours=1))]
    assert at(last + window, *polled) == (True, "ok")
    assert at(last - timedelta(minutes=5), *polled) == (True, "ok")  # another host's clock ahead
    # past the window, s0 due for exactly the window: still fine; one second more: stalled
    assert at(last + timedelta(minutes=10) + window, *polled) == (True, "ok")
    ok, why = at(last + timedelta(minutes=10) + window + timedelta(seconds=1), *polled)
    assert not ok and "\n" not in why
    assert why == ("last poll cycle ended 31m1s ago (2026-11-24T10:00:00Z), more than 21m;"
                   " s0 due since 2026-11-24T10:10:00Z")
    # a live daemon waiting for later poll times (an hourly sy:updatePeriod, a backoff) is healthy
    waiting = [("s0", "ok", last + timedelta(hours=1)), ("s1", "failing", last + timedelta(hours=4))]
    assert at(last + timedelta(minutes=50), *waiting) == (True, "ok")
    assert not at(last + timedelta(hours=1) + window + timedelta(seconds=1), *waiting)[0]
    # gone sources and sources no longer configured are not waited for; a configured source
    # the database does not know (never polled) was due when the last cycle ran
    assert at(AT, ("s0", "gone", None), ("s1", "gone", None), ("old", "ok", last))[0] is True
    assert at(last + window + timedelta(seconds=1), *polled[1:])[1].endswith("s0 due since 2026-11-24T10:00:00Z")
    no_sources = _config(tmp_path, [], default="30m")
    assert health_window(no_sources) == 2 * 1800 + 60
    assert health(_stats(None), no_sources, AT) == (False, "no poll cycle yet")


def test_healthz_over_http(site):
    before = site.before["/healthz"]
    assert (before.status, before.body) == (503, b"no database yet (no poll has run)\n")

    def iso(text: str) -> datetime:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    with sqlite3.connect(site.config.db_path) as db:
        last = iso(db.execute("SELECT value FROM meta WHERE key = 'last_cycle_at'").fetchone()[0])
        first_due = min(iso(v) for (v,) in db.execute("SELECT next_poll FROM sources"))
    window = timedelta(seconds=2 * 300 + 60)  # the shortest interval is 5m
    try:
        site.clock.at = last + window
        assert (fetch(site.port, "/healthz").status, fetch(site.port, "/healthz").body) == (200, b"ok\n")
        site.clock.at = max(last, first_due) + window + timedelta(seconds=1)
        late = fetch(site.port, "/healthz")
        assert late.status == 503 and late.body.startswith(b"last poll cycle ended ")
        assert late.body.count(b"\n") == 1 and late.headers["cache-control"] == "no-store"
        assert fetch(site.port, "/healthz", method="HEAD").status == 503
    finally:
        site.clock.at = None


def test_server_without_database(tmp_path):
    """Before the first poll: 503, metrics still served, and no database created."""
    cfg = load_config(write_config(tmp_path / "config.toml", [
        {"name": "only", "url": "http://127.0.0.1:9/feed.xml", "category": "c"}]))
    with ServerThread(cfg, port=0) as server:
        health_reply = fetch(server.port, "/healthz")
        metrics = fetch(server.port, "/metrics")
        missing = fetch(server.port, "/")
    assert health_reply.status == 503 and health_reply.body == b"no database yet (no poll has run)\n"
    assert metrics.status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics.body.decode())}
    assert families["aggregator_database_up"].samples[0].value == 0
    assert [(s.labels, s.value) for s in families["aggregator_polls"].samples] == [({"source": "only"}, 0)]
    assert missing.status == 404
    assert not cfg.db_path.exists() and not cfg.output_dir.exists()


# -- /metrics ------------------------------------------------------------------------------


def test_metrics_match_the_database(site):
    before = {f.name: f for f in text_string_to_metric_families(site.before["/metrics"].body.decode())}
    assert before["aggregator_database_up"].samples[0].value == 0
    r = fetch(site.port, "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(r.body.decode("utf-8"))}

    def samples(name: str) -> dict:
        return {tuple(sorted(s.labels.items())): s.value for s in families[name].samples}

    db = sqlite3.connect(site.config.db_path)
    try:
        sources = db.execute("SELECT name, polls_total, errors_total, state, last_success FROM sources").fetchall()
        by_category = db.execute("SELECT category, count(*) FROM articles GROUP BY category").fetchall()
        total = db.execute("SELECT count(*) FROM articles").fetchone()[0]
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        pages = db.execute("SELECT count(*) FROM outputs WHERE signature IS NOT NULL").fetchone()[0]
        refused = db.execute("SELECT count(*) FROM outputs WHERE error IS NOT NULL").fetchone()[0]
    finally:
        db.close()
    assert {name for name, *_ in sources} == {"样例财经", "Sample Dev Blog", ODD_NAME}
    assert samples("aggregator_polls") == {(("source", n),): float(p) for n, p, *_ in sources}
    assert samples("aggregator_poll_errors") == {(("source", n),): float(e) for n, _, e, *_ in sources}
    assert samples("aggregator_source_up") == {(("source", n),): float(s in ("ok", "new")) for n, _, _, s, _ in sources}

    def ts(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()

    assert samples("aggregator_source_last_success_timestamp_seconds") == {
        (("source", n),): ts(last) for n, *_, last in sources}
    assert samples("aggregator_articles") == {(("category", c),): float(n) for c, n in by_category}
    assert total > 0 and samples("aggregator_articles_total") == {(): float(total)}
    assert samples("aggregator_articles_last_24h") == {(): float(total)}  # all first seen just now
    assert samples("aggregator_last_cycle_timestamp_seconds") == {(): ts(meta["last_cycle_at"])}
    assert samples("aggregator_last_cycle_duration_seconds") == {(): float(meta["last_cycle_seconds"])}
    assert samples("aggregator_publish_duration_seconds") == {(): float(meta["last_publish_seconds"])}
    assert pages > 0 and samples("aggregator_published_pages") == {(): float(pages)}
    assert samples("aggregator_publish_errors") == {(): float(refused)}
    assert families["aggregator_polls"].type == "counter"
    assert families["aggregator_articles"].type == "gauge"


# -- running it ----------------------------------------------------------------------------


def test_server_thread_leaves_signals_alone_and_stops(tmp_path):
    cfg = load_config(write_config(tmp_path / "config.toml", []))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    server = ServerThread(cfg, port=0).start()
    port = server.port
    assert port > 0 and fetch(port, "/healthz").status == 503
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_busy_port_is_a_clear_error(tmp_path):
    cfg = load_config(write_config(tmp_path / "config.toml", []))
    with socket.create_server(("127.0.0.1", 0)) as taken, \
            pytest.raises(AggregatorError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
        ServerThread(cfg, port=taken.getsockname()[1]).start()


def test_listening_socket_says_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY on accepted connections only when the listening socket's
    ``proto`` is IPPROTO_TCP; a socket made with proto 0 left Nagle on, and every 200
    waited ~40 ms for a delayed ACK."""
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


SERVE_SCRIPT = """
import logging, sys
from aggregator.config import load_config
from aggregator.serve import serve
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
serve(load_config(sys.argv[1]), host="127.0.0.1", port=0)
print("returned normally", flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signals(tmp_path, sig):
    cfg_file = write_config(tmp_path / "config.toml", [])
    proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(cfg_file)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            found = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "".join(lines)
        assert fetch(port, "/healthz").status == 503
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + err
    assert "returned normally" in out
    # one access line, through logging (no colour codes), with the bytes sent
    size = len(b"no database yet (no poll has run)\n")
    access = [line for line in lines + err.splitlines() if line.startswith("aggregator.access")]
    assert access == [f'aggregator.access: 127.0.0.1 "GET /healthz HTTP/1.1" 503 {size} ""']


# -- interoperability: a real feed reader subscribes to what we serve ----------------------

GROWING = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Growing</title><link>https://growing.example/</link><description>d</description>
{items}
</channel></rss>"""
GROWING_ITEM = """<item><title>Growing story {n}</title><link>https://growing.example/{n}</link><guid>g-{n}</guid>
<pubDate>Tue, 24 Nov 2026 0{n}:00:00 GMT</pubDate><description><![CDATA[<p>Story number {n}.</p>]]></description></item>"""


def _growing(n: int) -> bytes:
    return GROWING.format(items="\n".join(GROWING_ITEM.format(n=i) for i in range(1, n + 1))).encode()


def _served_ids(port: int, url: str) -> list[str]:
    body = fetch(port, urlsplit(url).path).body
    return [g.text for g in etree.fromstring(body).iter("guid")]


def test_reader_library_subscribes_to_every_feed_and_sees_each_article_once(tmp_path, monkeypatch):
    from reader import make_reader

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FeedServer() as srv:
        sources = demo_sources(srv)
        srv.add("/growing.xml", _growing(2))
        sources.append({"name": "Growing", "url": srv.url("/growing.xml"), "category": "growing"})
        placeholder = load_config(write_config(tmp_path / "config.toml", sources))
        with ServerThread(placeholder, port=0) as server:
            # the published self links and OPML must point at this server
            cfg = load_config(write_config(tmp_path / "config.toml", sources,
                                           base_url=f"http://127.0.0.1:{server.port}/"))
            with Pipeline(cfg) as pipeline:
                pipeline.poll()
                urls = [o.get("xmlUrl") for o in etree.fromstring(fetch(server.port, "/index.opml").body).iter("outline")
                        if o.get("xmlUrl")]
                assert len(urls) >= 6
                first = {url: _served_ids(server.port, url) for url in urls}

                reader = make_reader(str(tmp_path / "reader.sqlite"))
                try:
                    for url in urls:
                        reader.add_feed(url)
                    reader.update_feeds()
                    _check_reader(reader, first)

                    srv.set("/growing.xml", _growing(3))
                    cycle = pipeline.poll()
                    assert sum(r.new for r in cycle.results) == 1
                    second = {url: _served_ids(server.port, url) for url in urls}
                    changed = {url for url in urls if second[url] != first[url]}
                    assert changed and len(changed) < len(urls)
                    results = {r.url: r for r in reader.update_feeds_iter(scheduled=False)}
                    assert all(not isinstance(r.value, Exception) for r in results.values())
                    # unchanged feeds answered 304 (reader's value None: "not modified")
                    assert {url for url, r in results.items() if r.value is None} == set(urls) - changed
                    _check_reader(reader, second)
                finally:
                    reader.close()


def _check_reader(reader, expected: dict[str, list[str]]) -> None:
    for url, ids in expected.items():
        feed = reader.get_feed(url)
        assert feed.last_exception is None, (url, feed.last_exception)
        entries = list(reader.get_entries(feed=url))
        got = [e.id for e in entries]
        assert len(got) == len(set(got)), url  # no duplicate ids
        assert len({e.link for e in entries}) == len(entries), url  # nor the same story twice under two ids
        assert set(got) == set(ids), url
