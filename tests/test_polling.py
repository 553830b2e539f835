"""Issue 3 end to end: a scripted loopback server drives the real fetcher and pipeline.

Each behaviour is one source in the same cycle; each case checks the recorded state, the
next poll time under a pinned clock, and that the other sources still succeed.
"""

from __future__ import annotations

import email.utils
import re
import gzip
import time
from datetime import datetime, timedelta, timezone

import pytest

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from aggregator.store import Store
from tests.conftest import write_config
from tests.server import FeedServer

INTERVAL = 900  # the default 15m
JITTER = 0.1


def rss(title: str, n: int = 2, extra: str = "") -> bytes:
    items = "".join(
        f"<item><title>{title} {i}</title><link>https://{title.lower()}.example/{i}</link><guid>{title}-{i}</guid>"
        f"<description>&lt;p&gt;{title} body {i}&lt;/p&gt;</description></item>"
        for i in range(n)
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title><link>https://{title.lower()}.example/</link><description>d</description>{extra}{items}</channel></rss>'.encode()


def within(actual: datetime | None, low: float, high: float, now: datetime) -> bool:
    assert actual is not None
    return now + timedelta(seconds=low) <= actual <= now + timedelta(seconds=high)


def trickle(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.end_headers()
    for _ in range(200):
        if handler.server.feed_server.stopping.is_set():
            return
        handler.wfile.write(b" ")
        handler.wfile.flush()
        time.sleep(0.25)


def endless(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "application/rss+xml")
    handler.end_headers()
    chunk = b"<!-- " + b"x" * 65536 + b" -->"
    try:
        for _ in range(10_000):
            if handler.server.feed_server.stopping.is_set():
                return
            handler.wfile.write(chunk)
    except OSError:
        return


@pytest.fixture
def second_host():
    """A second host (all of 127.0.0.0/8 is loopback on Linux) for per-host behaviour."""
    with FeedServer(host="127.0.0.2") as srv:
        yield srv


def test_scripted_behaviours_in_one_cycle(tmp_path, server, second_host):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    later = now + timedelta(hours=1)
    server.add("/ok.xml", rss("Ok"))
    server.add("/cached.xml", rss("Cached"), headers={"Cache-Control": "max-age=7200"})
    server.add("/ttl.xml", rss("Ttl", extra="<ttl>180</ttl>"))
    server.add("/new.xml", rss("Moved"))
    server.redirect("/old.xml", server.url("/new.xml"), status=301)
    server.add("/temp-target.xml", rss("Temp"))
    server.redirect("/temp.xml", server.url("/temp-target.xml"), status=302)
    server.add("/gone.xml", b"gone", status=410, content_type="text/plain")
    server.add("/503.xml", b"busy", status=503, content_type="text/plain")
    server.add_handler("/slow.xml", trickle)
    server.add_handler("/endless.xml", endless)
    server.add("/bomb.xml", gzip.compress(b"\0" * (8 * 1024 * 1024)), headers={"Content-Encoding": "gzip"})
    server.redirect("/loop-a.xml", server.url("/loop-b.xml"))
    server.redirect("/loop-b.xml", server.url("/loop-a.xml"))
    server.add("/mislabelled.xml", rss("Mislabelled"), content_type="text/plain")
    server.add("/page.html", b"<!doctype html><html><head><title>x</title></head><body>x</body></html>", content_type="text/html")
    # on a second host: a 429 with delta seconds, then that host's other route is held back
    second_host.add("/429.xml", b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "120"})
    second_host.add("/429-date.xml", b"slow down", status=429, content_type="text/plain",
                    headers={"Retry-After": email.utils.format_datetime(now + timedelta(hours=1), usegmt=True)})
    paths = {
        "ok": server.url("/ok.xml"), "cached": server.url("/cached.xml"), "ttl": server.url("/ttl.xml"),
        "moved": server.url("/old.xml"), "temp": server.url("/temp.xml"), "gone": server.url("/gone.xml"),
        "503": server.url("/503.xml"), "slow": server.url("/slow.xml"), "endless": server.url("/endless.xml"),
        "bomb": server.url("/bomb.xml"), "loop": server.url("/loop-a.xml"), "mislabelled": server.url("/mislabelled.xml"),
        "html": server.url("/page.html"),
    }
    sources = [{"name": k, "url": v, "category": "c"} for k, v in paths.items()]
    sources.append({"name": "429", "url": second_host.url("/429.xml"), "category": "c"})
    cfg = load_config(write_config(tmp_path / "config.toml", sources, timeout=3, max_body_mib=1, concurrency=16))
    # the 429-date source goes second in its own cycle, after the host asked us to wait
    with Pipeline(cfg, clock=lambda: now) as p:
        by = {r.source: r for r in p.poll().results}

    ok = ("ok", "cached", "ttl", "moved", "temp", "mislabelled")
    for name in ok:
        assert by[name].error is None and by[name].new == 2, (name, by[name])
    assert within(by["ok"].next_poll, INTERVAL * (1 - JITTER), INTERVAL * (1 + JITTER), now)
    assert within(by["cached"].next_poll, 7200, 7200 * (1 + JITTER), now)
    assert within(by["ttl"].next_poll, 3 * 3600, 3 * 3600 * (1 + JITTER), now)
    assert by["moved"].moved_to == server.url("/new.xml") and by["temp"].moved_to is None
    assert by["gone"].gone and by["gone"].next_poll is None
    # failures: kind, backoff from the interval, Retry-After honoured and never undercut
    kinds = {n: by[n].error_kind for n in ("503", "slow", "endless", "bomb", "loop", "html", "429")}
    assert kinds == {"503": "http-5xx", "slow": "timeout", "endless": "too-large", "bomb": "too-large",
                     "loop": "redirects", "html": "not-a-feed", "429": "http-4xx"}
    assert within(by["503"].next_poll, INTERVAL * (1 - JITTER), INTERVAL * (1 + JITTER), now)
    # Retry-After (120 s) is a floor; the error backoff (one interval at the first failure) is longer
    assert within(by["429"].next_poll, max(120, INTERVAL * (1 - JITTER)), INTERVAL * (1 + JITTER), now)
    for name in ("slow", "endless", "bomb", "loop", "html"):
        assert by[name].next_poll is not None and by[name].next_poll > now, name

    with Store(cfg.db_path) as store:
        states = store.source_states()
    assert {n: states[n].state for n in ok} == dict.fromkeys(ok, "ok")
    assert states["gone"].state == "gone"
    assert states["moved"].moved_to == server.url("/new.xml")
    for name in kinds:
        st = states[name]
        assert (st.state, st.error_count) == ("failing", 1) and st.last_error, name
        assert st.next_poll == by[name].next_poll
    assert "429" in states["429"].last_error and "Retry-After" in states["429"].last_error
    assert "410" in states["gone"].last_error

    # a second cycle an hour later: 304s, the moved source fetched at its new URL, the gone
    # one not contacted, consecutive failures counted and backed off further
    hits_before = dict(server.hits)
    with Pipeline(cfg, clock=lambda: later) as p:
        by2 = {r.source: r for r in p.poll().results}
    assert by2["ok"].not_modified and by2["moved"].not_modified
    assert server.hits["/old.xml"] == hits_before["/old.xml"]  # not asked again
    assert server.hits["/gone.xml"] == hits_before["/gone.xml"] and by2["gone"].skipped
    assert within(by2["503"].next_poll, 2 * INTERVAL * (1 - JITTER), 2 * INTERVAL * (1 + JITTER), later)
    with Store(cfg.db_path) as store:
        assert store.source_state("503").error_count == 2


def test_retry_after_date_and_host_penalty(tmp_path, second_host, server):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    retry_at = now + timedelta(hours=1)
    second_host.add("/429.xml", b"slow down", status=429, content_type="text/plain",
                    headers={"Retry-After": email.utils.format_datetime(retry_at, usegmt=True)})
    second_host.add("/other.xml", rss("Other"))
    server.add("/elsewhere.xml", rss("Elsewhere"))
    cfg = load_config(write_config(tmp_path / "config.toml", [
        {"name": "limited", "url": second_host.url("/429.xml"), "category": "c"},
        {"name": "same-host", "url": second_host.url("/other.xml"), "category": "c"},
        {"name": "other-host", "url": server.url("/elsewhere.xml"), "category": "c"},
    ], concurrency=1))  # one at a time, in config order: the 429 comes first
    with Pipeline(cfg, clock=lambda: now) as p:
        by = {r.source: r for r in p.poll().results}
    assert by["limited"].next_poll >= retry_at
    assert by["same-host"].error is not None and second_host.hits.get("/other.xml", 0) == 0
    assert by["same-host"].next_poll >= retry_at - timedelta(seconds=5)
    assert by["other-host"].new == 2


def test_restart_keeps_the_backoff(tmp_path, second_host):
    """The next poll time lives in SQLite: a new process (the daemon restarted) does not
    poll a source that is backing off."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    second_host.add("/429.xml", b"slow down", status=429, content_type="text/plain", headers={"Retry-After": "3600"})
    cfg = load_config(write_config(tmp_path / "config.toml", [{"name": "limited", "url": second_host.url("/429.xml"), "category": "c"}]))
    with Pipeline(cfg, clock=lambda: now) as p:
        p.poll()
    with Pipeline(cfg, clock=lambda: now + timedelta(minutes=20)) as p:  # "after the restart"
        r = p.poll(due_only=True).results[0]
    assert r.skipped == "not due yet" and second_host.hits["/429.xml"] == 1
    with Pipeline(cfg, clock=lambda: now + timedelta(hours=2)) as p:
        r = p.poll(due_only=True).results[0]
    assert r.skipped is None and second_host.hits["/429.xml"] == 2


def test_redirect_into_loopback_is_refused_with_the_guard_on(tmp_path, server):
    """The guard on, with 127.0.0.1 exempted so the test can reach its server: a redirect
    to 127.0.0.2 (loopback) is refused on the second hop, and nothing is stored."""
    from aggregator.fetch import Fetcher
    from aggregator.netguard import is_blocked_address

    with FeedServer(host="127.0.0.2") as inner:
        inner.add("/secret.xml", rss("Secret"))
        server.redirect("/hop.xml", inner.url("/secret.xml"))
        server.add("/fine.xml", rss("Fine"))
        cfg = load_config(write_config(tmp_path / "config.toml", [
            {"name": "hop", "url": server.url("/hop.xml"), "category": "c"},
            {"name": "fine", "url": server.url("/fine.xml"), "category": "c"},
        ], allow_private_networks=False))
        policy = lambda ip: None if str(ip) == "127.0.0.1" else is_blocked_address(ip)  # noqa: E731
        with Pipeline(cfg) as p:
            p._fetcher = Fetcher(cfg.fetch_limits(), address_policy=policy)
            by = {r.source: r for r in p.poll().results}
        assert by["hop"].error_kind == "blocked" and inner.hits.get("/secret.xml", 0) == 0
        assert by["fine"].new == 2


def test_update_moved_rewrites_config_and_keeps_validators(tmp_path, server):
    server.add("/new.xml", rss("Moved"))
    server.redirect("/old.xml", server.url("/new.xml"), status=308)
    path = write_config(tmp_path / "config.toml", [{"name": "m", "url": server.url("/old.xml"), "category": "c"}])
    with Pipeline(load_config(path)) as p:
        assert p.poll().results[0].moved_to == server.url("/new.xml")
    from aggregator.pipeline import update_moved_sources

    assert update_moved_sources(load_config(path)) == [("m", server.url("/new.xml"))]
    cfg = load_config(path)
    assert cfg.sources[0].url == server.url("/new.xml")
    with Pipeline(cfg) as p:
        r = p.poll().results[0]
    assert r.not_modified  # validators kept: no second download after the rewrite


def test_per_source_request_settings(tmp_path, server, monkeypatch):
    """user_agent and headers reach the origin; a secret comes from the environment and
    never shows in the config, the state or an error text."""
    secret = "Bearer s3cr3t-token"
    monkeypatch.setenv("FEED_TOKEN", secret)
    server.add("/private.xml", rss("Private"))
    server.add("/denied.xml", b"no", status=403, content_type="text/plain")
    path = tmp_path / "config.toml"
    path.write_text(
        'data_dir = "data"\noutput_dir = "out"\nallow_private_networks = true\n'
        "[[sources]]\nname = \"private\"\n"
        f'url = "{server.url("/private.xml")}"\ncategory = "c"\nuser_agent = "MyReader/1.0"\ntimeout = 5\n'
        'headers = { Authorization = "env:FEED_TOKEN", Referer = "https://site.example/" }\n'
        "[[sources]]\nname = \"denied\"\n"
        f'url = "{server.url("/denied.xml")}"\ncategory = "c"\n'
        'headers = { Authorization = "env:FEED_TOKEN" }\n',
        encoding="utf-8",
    )
    cfg = load_config(path)
    assert secret not in repr(cfg)
    with Pipeline(cfg) as p:
        by = {r.source: r for r in p.poll().results}
    sent = next(r for r in server.requests if r.path == "/private.xml").headers
    assert sent["authorization"] == secret and sent["referer"] == "https://site.example/"
    assert sent["user-agent"] == "MyReader/1.0"
    assert by["private"].new == 2
    assert by["denied"].error_kind == "http-4xx" and secret not in by["denied"].error
    with Store(cfg.db_path) as store:
        assert all(secret not in (st.last_error or "") for st in store.source_states().values())


@pytest.mark.parametrize("headers, needle", [
    ('{ Authorization = "env:NOT_SET_ANYWHERE" }', "environment variable $NOT_SET_ANYWHERE is not set"),
    ('{ Host = "evil.example" }', "set by the fetcher itself"),
    ('{ "Bad Name" = "x" }', "not a valid header name"),
    ('{ X = 1 }', "must be a string"),
])
def test_bad_header_settings_are_config_errors(tmp_path, headers, needle):
    from aggregator.errors import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(f'[[sources]]\nname = "a"\nurl = "https://a.example/"\ncategory = "c"\nheaders = {headers}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(path)
