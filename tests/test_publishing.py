"""Publishing through the real pipeline: incremental state kept in SQLite, WebSub pings
to a loopback hub, [[feeds]] from config.toml, pages removed with their source, refused
documents shown by ``list-sources`` — real servers, databases, files and CLI."""

from __future__ import annotations

import html
import json
import os
import pickle
import re
import sqlite3
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest
from lxml import etree

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.pipeline import Pipeline
from aggregator.publish import slug
from tests.conftest import write_config
from tests.helpers import mtimes, parse_output_feed

ROOT = Path(__file__).resolve().parents[1]
BASE = "https://feeds.example.org/"
ATOM = "{http://www.w3.org/2005/Atom}"

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>T</title><link>https://site.example/</link><description>d</description>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://site.example/{tag}/{n}</link><guid>{tag}-{n}</guid>
<pubDate>Tue, 24 Nov 2026 {n:02d}:00:00 GMT</pubDate><description><![CDATA[<p>{body}</p>]]></description></item>"""


def rss(tag: str, items: list[tuple[int, str, str]]) -> bytes:
    return RSS.format(items="\n".join(ITEM.format(tag=tag, n=n, title=t, body=b) for n, t, b in items)).encode()


class Hub:
    """A loopback WebSub hub that records publish pings."""

    def __init__(self, status: int = 204):
        self.pings: list[dict[str, list[str]]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                hub.pings.append(parse_qs(self.rfile.read(length).decode()))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hub"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def urls(self) -> list[str]:
        assert all(p["hub.mode"] == ["publish"] for p in self.pings)
        return sorted(u for p in self.pings for u in p["hub.url"])

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub():
    h = Hub()
    yield h
    h.close()


def sources(server) -> list[dict]:
    return [
        {"name": "Markets", "url": server.url("/m.xml"), "category": "金融", "channel": "深度"},
        {"name": "Dev Blog", "url": server.url("/d.xml"), "category": "编程"},
    ]


def test_changed_feeds_are_announced_to_the_hub_and_carry_its_link(tmp_path, server, hub):
    server.add("/m.xml", rss("m", [(1, "央行 one", "body one")]))
    server.add("/d.xml", rss("d", [(2, "Python two", "body two")]))
    cfg = load_config(write_config(tmp_path / "config.toml", sources(server), base_url=BASE, websub_hub=hub.url))
    with Pipeline(cfg) as p:
        p.poll()
    current = sorted(
        str(f.relative_to(cfg.output_dir)) for f in cfg.output_dir.rglob("*")
        if f.suffix in (".xml", ".json") and "archive" not in f.parts and "posts" not in f.parts
        and f.name != "index.opml"
    )
    assert [unquote(u[len(BASE):]) for u in hub.urls()] == current  # every new feed document, once
    for path in current:
        if path.endswith(".xml"):
            root = etree.parse(str(cfg.output_dir / path)).getroot()
            assert [link.get("href") for link in root.iter(f"{ATOM}link") if link.get("rel") == "hub"] == [hub.url]

    # nothing changed: nothing announced
    hub.pings.clear()
    with Pipeline(cfg) as p:
        p.poll()
    assert hub.pings == []

    # one source changed: only the feeds holding its articles
    server.set("/d.xml", rss("d", [(2, "Python two", "body two"), (3, "Python three", "body three")]))
    with Pipeline(cfg) as p:
        p.poll()
    stems = {"all", f"category/{slug('编程')}", f"source/{slug('Dev Blog')}"}
    assert {unquote(u[len(BASE):]).split(".")[0] for u in hub.urls()} == stems
    assert len(hub.urls()) == 3 * len(stems)


def test_a_hub_that_is_down_does_not_fail_the_cycle(tmp_path, server, caplog):
    server.add("/m.xml", rss("m", [(1, "one", "body")]))
    dead = Hub()
    url = dead.url
    dead.close()  # nothing listens there any more
    cfg = load_config(write_config(tmp_path / "config.toml", sources(server)[:1], base_url=BASE, websub_hub=url))
    with Pipeline(cfg) as p:
        cycle = p.poll()
    assert cycle.results[0].new == 1 and (cfg.output_dir / "all.rss.xml").is_file()
    assert any("WebSub" in r.getMessage() for r in caplog.records)


def test_publish_state_survives_restarts_and_settings_changes_republish(tmp_path, server):
    server.add("/m.xml", rss("m", [(1, "央行 one", "body one"), (2, "广告 two", "buy now")]))
    server.add("/d.xml", rss("d", [(3, "Python three", "body three")]))
    path = write_config(tmp_path / "config.toml", sources(server), base_url=BASE)
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
        first = p.last_publish
    assert first.rendered == len(first.done) and first.failed == ()
    before = mtimes(cfg.output_dir)

    # a new process, nothing changed: every page known, nothing rendered or written
    with Pipeline(load_config(path)) as p:
        p.publish()
        again = p.last_publish
    assert again.rendered == 0 and again.kept == len(first.done) and again.written == ()
    assert mtimes(cfg.output_dir) == before

    # a [[feeds]] rule added to config.toml: the next cycle publishes it although every
    # source answers 304
    path.write_text(path.read_text(encoding="utf-8") + (
        '\n[[feeds]]\nname = "finance-no-ads"\ncategories = ["金融"]\nexclude = "广告"\n'), encoding="utf-8")
    with Pipeline(load_config(path)) as p:
        cycle = p.poll()
        result = p.last_publish
    assert all(r.not_modified for r in cycle.results)
    assert result.rendered == 1  # only the new feed's page
    titles = [e.title for e in parse_output_feed(cfg.output_dir / "custom/finance-no-ads.rss.xml").entries]
    assert titles == ["央行 one"]


def test_purging_a_source_removes_its_feeds(tmp_path, server):
    server.add("/m.xml", rss("m", [(1, "one", "body one")]))
    server.add("/d.xml", rss("d", [(3, "three", "body three")]))
    path = write_config(tmp_path / "config.toml", sources(server), base_url=BASE)
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
    dev = [cfg.output_dir / f"{stem}{ext}" for stem in (f"source/{slug('Dev Blog')}", f"category/{slug('编程')}")
           for ext in (".rss.xml", ".atom.xml", ".json")]
    assert all(f.is_file() for f in dev)
    run_cli(path, "remove-source", "Dev Blog", "--purge")
    assert not any(f.exists() for f in dev)
    assert (cfg.output_dir / "category/金融.rss.xml").is_file()
    assert [e.title for e in parse_output_feed(cfg.output_dir / "all.rss.xml").entries] == ["one"]


def run_cli(config: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("AGGREGATOR_CONFIG", None)
    proc = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), *args],
                          check=False, capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_a_refused_page_keeps_the_last_good_file_and_is_reported(tmp_path, server):
    server.add("/m.xml", rss("m", [(1, "one", "body one")]))
    path = write_config(tmp_path / "config.toml", sources(server)[:1], base_url=BASE)
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
    good = (cfg.output_dir / "category/金融.rss.xml").read_bytes()
    # A date no reader accepts, as a damaged or hand-edited database could hold it.
    with sqlite3.connect(cfg.db_path) as db:
        db.execute("UPDATE articles SET date = '0001-01-01T00:00:00Z', updated = '0001-01-01T00:00:00Z'")
    proc = run_cli(path, "publish", check=1)
    assert "not published" in proc.stderr and "category/金融.rss.xml" in proc.stderr
    assert (cfg.output_dir / "category/金融.rss.xml").read_bytes() == good
    listing = run_cli(path, "list-sources").stdout
    assert "not published" in listing and "category/金融" in listing
    # repaired: published again, and the report is gone
    with sqlite3.connect(cfg.db_path) as db:
        db.execute("UPDATE articles SET date = '2026-11-24T01:00:00Z', updated = '2026-11-24T01:00:00Z'")
    run_cli(path, "publish")
    assert "not published" not in run_cli(path, "list-sources").stdout


@pytest.mark.parametrize("feeds, message", [
    ([{"name": "x", "include": "("}], "feeds[0] (x).include: invalid regular expression"),
    ([{"name": "x"}, {"name": "x"}], "duplicate feed name 'x'"),
    ([{"name": "../x"}], "feeds[0] (../x).name must be"),
    ([{"name": "x", "colour": "red"}], "unknown key 'colour'"),
    ([{"name": "x", "limit": 0}], "limit must be at least 1"),
    ([{"name": "x", "categories": "金融"}], "categories must be a list"),
])
def test_bad_feed_rules_are_refused_with_the_key(tmp_path, feeds, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write_config(tmp_path / "config.toml", [], feeds=feeds))


def test_every_link_of_the_published_index_resolves_to_a_published_file(tmp_path, server):
    from urllib.parse import urljoin, urlsplit

    import lxml.html

    server.add("/m.xml", rss("m", [(1, "one", "body one")]))
    server.add("/d.xml", rss("d", [(3, "three", "body three")]))
    path = write_config(tmp_path / "config.toml", sources(server), base_url=BASE)
    path.write_text(path.read_text(encoding="utf-8") + '\n[[feeds]]\nname = "picked"\nsources = ["Dev Blog"]\n',
                    encoding="utf-8")
    cfg = load_config(path)
    with Pipeline(cfg) as p:
        p.poll()
    page = lxml.html.fromstring((cfg.output_dir / "index.html").read_bytes())
    hrefs = [a.get("href") for a in page.iter("a") if a.get("href") and not a.get("href").startswith("#")]
    alternates = [link.get("href") for link in page.iter("link") if link.get("rel") == "alternate"]
    # 7 feeds (all, 2 categories, 2 sources, 1 channel, 1 custom) x 3 formats, and the OPML
    assert len(set(hrefs)) == 7 * 3 + 1 and len(alternates) == 7 * 3 + 1
    for href in hrefs + alternates:
        url = urljoin(BASE + "index.html", href)
        assert url.startswith(BASE)
        target = cfg.output_dir / unquote(urlsplit(url).path[len(urlsplit(BASE).path):])
        assert target.is_file(), href


def test_run_serve_serves_what_the_daemon_publishes_and_stops_on_sigterm(tmp_path, server):
    import http.client
    import signal
    import time

    server.add("/m.xml", rss("m", [(1, "one", "body one")]))
    path = write_config(tmp_path / "config.toml", sources(server)[:1], base_url=BASE)
    cfg = load_config(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AGGREGATOR_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(path), "run", "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            found = re.search(r"serving .* on http://127\.0\.0\.1:(\d+)/", line)
            port = int(found.group(1)) if found else None
        assert port, "the daemon did not say where it serves"
        while time.monotonic() < deadline and not (cfg.output_dir / "all.rss.xml").is_file():
            time.sleep(0.2)

        def get(target: str, headers: dict | None = None):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", target, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            conn.close()
            return response, body

        response, body = get("/all.rss.xml")
        assert response.status == 200 and body == (cfg.output_dir / "all.rss.xml").read_bytes()
        assert response.getheader("Content-Type") == "application/rss+xml; charset=utf-8"
        again, empty = get("/all.rss.xml", {"If-None-Match": response.getheader("ETag")})
        assert again.status == 304 and empty == b""
        deadline = time.monotonic() + 30
        while (health := get("/healthz")[0].status) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def test_serve_command_serves_the_output_folder_and_stops_on_sigterm(tmp_path, server):
    import http.client
    import signal
    import time

    server.add("/m.xml", rss("m", [(1, "one", "body one")]))
    path = write_config(tmp_path / "config.toml", sources(server)[:1], base_url=BASE)
    run_cli(path, "poll")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("AGGREGATOR_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "--config", str(path), "serve", "--port", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)/", proc.stderr.readline())
            port = int(found.group(1)) if found else None
        assert port, "serve did not say where it listens"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/", headers={"Accept-Encoding": "br"})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        assert response.status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
        assert response.getheader("Content-Encoding") == "br" and body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_an_article_about_markup_keeps_its_words_in_every_feeds_excerpt(tmp_path, server):
    # "&lt;b&gt;" in the body is the text "<b>": the excerpt keeps it (it once read it as a
    # tag again and lost it), and each format escapes it as its syntax needs
    body = "Use &lt;b&gt; for bold &amp; &lt;i&gt; for italics, write to &lt;ed@example.org&gt;."
    server.add("/d.xml", rss("d", [(1, "HTML tips", body)]))
    cfg = load_config(write_config(tmp_path / "config.toml", sources(server)[1:], base_url=BASE))
    with Pipeline(cfg) as p:
        assert p.poll().results[0].new == 1
    words = "Use <b> for bold & <i> for italics, write to <ed@example.org>."
    out = cfg.output_dir
    item = etree.parse(str(out / "all.rss.xml")).getroot().find("channel/item")
    assert item.findtext("description") == html.escape(words, quote=False)
    shown = parse_output_feed(out / "all.rss.xml").entries[0].summary  # HTML, as a reader gets it
    assert "<" not in shown and html.unescape(shown) == words
    assert next(etree.parse(str(out / "all.atom.xml")).getroot().iter(f"{ATOM}summary")).text == words
    assert json.loads((out / "all.json").read_text(encoding="utf-8"))["items"][0]["summary"] == words


def test_publish_workers_read_their_articles_from_the_database(tmp_path, server):
    """A publish of PARALLEL_PAGES pages or more renders RSS and Atom in the worker
    processes, which read the batch's articles from SQLite themselves (ArticleReader)
    instead of receiving them pickled: the files are byte for byte those one process
    renders alone from the same database."""
    from aggregator.publish import plan_site, publish_site
    from aggregator.publish.site import PARALLEL_PAGES
    from aggregator.store import ArticleReader, Store

    feeds = [{"name": f"S{k}", "url": server.url(f"/s{k}.xml"), "category": f"c{k % 2}", "channel": "ch"}
             for k in range(6)]
    for k in range(6):
        server.add(f"/s{k}.xml", rss(f"s{k}", [(n, f"story {k}-{n}", f"body {k} {n}") for n in range(1, 7)]))
    cfg = load_config(write_config(tmp_path / "config.toml", feeds, base_url=BASE, items_per_feed=2))
    with Pipeline(cfg) as p:
        p.poll()
        assert p.last_publish.rendered >= PARALLEL_PAGES and p.last_publish.failed == ()
        site = p.site()
    with Store(cfg.db_path) as store:
        plan = plan_site(store.article_refs(), cfg.sources, cfg.feeds, site=site, items_per_feed=cfg.items_per_feed,
                         default_interval=cfg.default_interval, bodies=store.article_bodies)
        alone = publish_site(tmp_path / "alone", plan, site, previous={},
                             load=lambda ids: store.articles_by_id(ids, sources=False))
        ids = [a.id for a in store.all_articles()]
        reader = pickle.loads(pickle.dumps(ArticleReader(cfg.db_path)))  # what a worker gets
        assert reader(ids) == store.articles_by_id(ids, sources=False) and len(ids) == 36
    assert alone.failed == () and len(alone.written) >= 3 * PARALLEL_PAGES

    def documents(folder: Path) -> dict[str, bytes]:
        return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
                if f.is_file() and "posts" not in f.relative_to(folder).parts}

    assert documents(cfg.output_dir) == documents(tmp_path / "alone")
