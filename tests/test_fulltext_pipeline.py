"""Full text through the whole pipeline (issue 9): a loopback feed whose items carry one-line
summaries, their article pages served from the same loopback server (the hand-written
realistic pages of tests/pages/: GBK, UTF-8 and English news pages, a WeChat-like page, a
login wall, a 404), real SQLite, real post files, and ``explain`` as a subprocess.

What must be kept and what must not comes from tests/pages/pages.json, read with
BeautifulSoup selectors over the page itself, never from our extractor.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from html import escape
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from tests.conftest import write_config
from tests.helpers import load_post
from tests.server import FeedServer
from tests.test_cli import run

PAGES = Path(__file__).parent / "pages"
TRUTH = {k: v for k, v in json.loads((PAGES / "pages.json").read_text("utf-8")).items() if not k.startswith("_")}
T0 = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
# (the WeChat-like page is read by its site rule, which needs its real host: test_fulltext.py)
GOOD = ["news-zh-gbk.html", "news-zh-utf8.html", "news-en.html", "blog-code.html"]


def squeeze(text: str) -> str:
    return "".join(text.split())


def page_soup(name: str) -> BeautifulSoup:
    raw = (PAGES / name).read_bytes()
    return BeautifulSoup(raw.decode("gbk" if "gbk" in name else "utf-8"), "lxml")


def body_blocks(name: str) -> list[str]:
    return [s for e in page_soup(name).select(TRUTH[name]["body"]) if (s := squeeze(e.get_text()))]


def chrome_strings(name: str) -> list[str]:
    body = "".join(body_blocks(name))
    found = {squeeze(s) for e in page_soup(name).select(TRUTH[name]["junk"]) for s in e.find_all(string=True)
             if s.parent.name not in ("script", "style")}
    return sorted(s for s in found if len(s) >= 4 and s not in body)


def summary_of(name: str) -> str:
    """What a truncating feed carries: the article's opening, cut (the login wall's is its
    teaser paragraph)."""
    soup = page_soup(name)
    first = soup.select(TRUTH[name]["body"] if name in TRUTH else "p")[0].get_text().strip()
    return first[:60] + "…"


def title_of(name: str) -> str:
    soup = page_soup(name)
    h1 = soup.find("h1")
    return (h1.get_text() if h1 else soup.title.get_text()).strip()


def rss(items: list[tuple[str, str, str, str]]) -> bytes:
    """items: (guid, title, link, summary)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>Short</title>'
           "<link>https://short.example/</link><description>d</description>"]
    for n, (guid, title, link, summary) in enumerate(items):
        out.append(f"<item><title>{escape(title)}</title><link>{escape(link)}</link><guid>{guid}</guid>"
                   f"<pubDate>Wed, 25 Nov 2026 0{n % 10}:00:00 GMT</pubDate>"
                   f"<description>{escape('<p>' + escape(summary) + '</p>')}</description></item>")
    out.append("</channel></rss>")
    return "".join(out).encode()


@pytest.fixture
def site(server):
    """The article pages on loopback: real bytes, each with its real Content-Type (the GBK
    page's header names no charset: its <meta> or the bytes must tell)."""
    for name in GOOD:
        server.add(f"/a/{name}", (PAGES / name).read_bytes(), content_type=TRUTH[name]["content_type"])
    server.add("/a/login-wall.html", (PAGES / "login-wall.html").read_bytes(), content_type="text/html; charset=utf-8")
    server.add("/a/gone.html", (PAGES / "not-found.html").read_bytes(), content_type="text/html; charset=utf-8",
               status=404)
    return server


def items_for(server, names: list[str]) -> list[tuple[str, str, str, str]]:
    return [(f"id-{name}", title_of(name), server.url(f"/a/{name}"), summary_of(name)) for name in names]


def poll(config_path: Path, when: datetime = T0):
    with Pipeline(load_config(config_path), clock=lambda: when) as p:
        return p.poll()


def article_rows(config_path: Path) -> dict[str, tuple[str, str, str]]:
    cfg = load_config(config_path)
    with sqlite3.connect(cfg.db_path) as db:
        return {guid: (body, fulltext, post) for guid, body, fulltext, post
                in db.execute("SELECT guid, body_html, fulltext, post_name FROM articles")}


def page_requests(server) -> list[str]:
    return [r.path for r in server.requests if r.path.startswith("/a/")]


def test_short_items_get_their_article_and_walls_keep_the_summary_with_the_reason(tmp_path, site):
    names = [*GOOD, "login-wall.html"]
    items = items_for(site, names) + [("id-gone", "A story that was deleted", site.url("/a/gone.html"),
                                       "A story that was deleted, its opening line…")]
    site.add("/feed.xml", rss(items))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto"}])
    cycle = poll(cfg_path)
    assert cycle.results[0].new == len(items), cycle.results[0]
    rows = article_rows(cfg_path)
    cfg = load_config(cfg_path)
    for name in GOOD:
        body, note, post = rows[f"id-{name}"]
        assert note and note.startswith("kept:"), (name, note)
        text = squeeze(BeautifulSoup(load_post(cfg.posts_dir / post).content, "lxml").get_text())
        missing = [b[:40] for b in body_blocks(name) if b not in text]
        assert not missing, (name, missing)
        leaked = [c for c in chrome_strings(name) if c in text]
        assert not leaked, (name, leaked)
        # relative URLs resolved against the page's URL (where it was really fetched)
        srcs = [img["src"] for img in BeautifulSoup(body, "lxml").find_all("img")]
        assert all(s.startswith("http") for s in srcs) and bool(srcs) == bool(TRUTH[name].get("image")), (name, srcs)
    body, note, _ = rows["id-login-wall.html"]
    assert "login wall" in note and squeeze(summary_of("login-wall.html")) in squeeze(BeautifulSoup(body, "lxml").get_text())
    body, note, _ = rows["id-gone"]
    assert note == "HTTP 404" and "its opening line" in body
    # explain, as a user runs it, says why
    out = run(cfg_path, "explain", site.url("/a/login-wall.html"), check=0).stdout
    assert "full text: login wall" in out


def test_pages_are_fetched_once_for_new_items_only_and_cached_by_url(tmp_path, site):
    first = items_for(site, ["news-en.html"])
    site.add("/feed.xml", rss(first))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto"}])
    poll(cfg_path)
    assert page_requests(site) == ["/a/news-en.html"]
    # the feed changes (a new item): only the new item's page is fetched
    site.set("/feed.xml", rss(items_for(site, ["news-zh-utf8.html"]) + first))
    poll(cfg_path, T0 + timedelta(hours=1))
    assert page_requests(site) == ["/a/news-en.html", "/a/news-zh-utf8.html"]
    # another source carrying a link already extracted: the cached page, no request
    site.add("/other.xml", rss([("other-1", title_of("news-en.html"), site.url("/a/news-en.html"),
                                 summary_of("news-en.html"))]))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto"},
        {"name": "Other", "url": site.url("/other.xml"), "category": "world", "fulltext": "always"}])
    cycle = poll(cfg_path, T0 + timedelta(hours=2))
    assert page_requests(site) == ["/a/news-en.html", "/a/news-zh-utf8.html"]
    # (same link: the copy merges into the first source's article, which keeps its text)
    assert [(r.new, r.duplicates) for r in cycle.results] == [(0, 0), (0, 1)]


def test_never_fetches_no_page_and_long_items_are_left_alone_in_auto(tmp_path, site):
    long_text = " ".join(f"Sentence {i} of an item that carries its whole text in the feed." for i in range(20))
    site.add("/never.xml", rss(items_for(site, ["news-en.html"])))
    site.add("/long.xml", rss([("long-1", "A complete item", site.url("/a/news-zh-utf8.html"), long_text)]))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Never", "url": site.url("/never.xml"), "category": "news"},
        {"name": "Long", "url": site.url("/long.xml"), "category": "news", "fulltext": "auto"}])
    cycle = poll(cfg_path)
    assert [r.new for r in cycle.results] == [1, 1]
    assert page_requests(site) == []
    assert {note for _, note, _ in article_rows(cfg_path).values()} == {None}


def test_a_content_selector_takes_exactly_what_it_names(tmp_path, site):
    name = "news-en.html"
    site.add("/feed.xml", rss(items_for(site, [name])))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "always",
         "content_selector": TRUTH[name]["container"], "remove_selectors": ["figure", ".pic-desc"]}])
    poll(cfg_path)
    body, note, _ = article_rows(cfg_path)[f"id-{name}"]
    assert note.startswith("kept:") and note.endswith("(selector)"), note
    text = squeeze(BeautifulSoup(body, "lxml").get_text())
    assert all(b in text for b in body_blocks(name))
    assert "<figure" not in body


def test_an_unreachable_page_keeps_the_item_and_is_tried_for_no_other_source(tmp_path, site):
    """A page on a host that refuses connections: the item is stored with its own
    content and the reason; the source itself succeeded."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/story.html"
    site.add("/feed.xml", rss([("dead-1", "A story on a dead host", dead, "Its opening line only…")]))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto"}])
    cycle = poll(cfg_path)
    assert cycle.results[0].new == 1 and not cycle.results[0].error
    body, note, _ = article_rows(cfg_path)["dead-1"]
    assert note.startswith("page not fetched: cannot connect") and "Its opening line only" in body


@pytest.mark.parametrize(("settings", "problem"), [
    ({"fulltext": "sometimes"}, "fulltext must be one of"),
    ({"fulltext": "auto", "content_selector": "div[[["}, "invalid CSS selector"),
    ({"fulltext": "auto", "remove_selectors": ["ok", 3]}, "remove_selectors must be a list"),
    ({"content_selector": "#main"}, 'need fulltext = "always" or "auto"'),
])
def test_bad_fulltext_settings_are_config_errors_naming_the_key(tmp_path, settings, problem):
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "S", "url": "https://example.org/feed.xml", "category": "news", **settings}])
    out = run(cfg_path, "list-sources", check=2)
    assert problem in out.stderr and "sources[0]" in out.stderr


def test_pages_go_through_the_guarded_fetcher_with_the_sources_headers_on_its_own_origin_only(tmp_path, site):
    """The source's User-Agent everywhere; its Cookie only on its own origin (a feed linking
    to another host must not collect it)."""
    with FeedServer() as elsewhere:
        elsewhere.add("/story.html", (PAGES / "news-en.html").read_bytes(), content_type="text/html; charset=utf-8")
        items = items_for(site, ["news-zh-utf8.html"]) + [
            ("far-1", title_of("news-en.html"), elsewhere.url("/story.html"), summary_of("news-en.html"))]
        site.add("/feed.xml", rss(items))
        cfg_path = write_config(tmp_path / "config.toml", [
            {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto",
             "user_agent": "PageBot/1.0", "headers": {"Cookie": "session=s3cret"}}])
        poll(cfg_path)
        (near,) = [r for r in site.requests if r.path.startswith("/a/")]
        (far,) = elsewhere.requests
    assert near.headers.get("cookie") == "session=s3cret" and near.headers["user-agent"] == "PageBot/1.0"
    assert "cookie" not in far.headers and far.headers["user-agent"] == "PageBot/1.0"
    assert all(note.startswith("kept:") for _, note, _ in article_rows(cfg_path).values())


def test_the_ssrf_guard_applies_to_article_pages(tmp_path, site):
    """With the guard on (allow_private_networks = false), an item linking to a loopback
    page does not get it fetched: the item keeps its own text, with the reason, and the
    refusal is cached (it is not transient)."""
    from aggregator.models import ArticleDraft, Source
    from aggregator.work import Processed

    cfg = load_config(write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": "https://short.example/feed.xml", "category": "news", "fulltext": "always"}],
        allow_private_networks=False))
    src: Source = cfg.sources[0]
    draft = ArticleDraft(source="Short", category="news", channel=None, guid="g", link=site.url("/a/news-en.html"),
                         title="t", author="Short", date=None, image=None, body_html="<p>Short.</p>", summary="Short.",
                         dedup_keys=("g:x",), content_hash="h")
    with Pipeline(cfg, clock=lambda: T0) as p:
        processed, pages = p._full_text(src, Processed(source="Short", drafts=(draft,)), [0], {})
    assert processed.drafts[0].fulltext.startswith("page not fetched: refusing to fetch")
    assert processed.drafts[0].body_html == "<p>Short.</p>" and page_requests(site) == []
    assert [p["error"] for p in pages] == [processed.drafts[0].fulltext.removeprefix("page not fetched: ")]


def test_real_wechat_style_feeds_get_every_item_fetched_and_a_wrong_page_is_refused(tmp_path, server):
    """The corpus's WeChat-style feeds (wechatfeeds__*) carry no content at all: in "auto"
    every item needs its page. Served from loopback with each item's link pointing at a
    page about something else (a site answering every URL with the same unrelated
    article), the gate keeps none of them: the items keep their own content, with the
    reason. Each page is fetched exactly once."""
    import itertools
    import re

    from tests.conftest import corpus_dir

    feeds = sorted((corpus_dir() / "real").glob("wechatfeeds__*"))
    assert feeds, "no wechatfeeds__* files in the corpus"
    page = (PAGES / "news-en.html").read_bytes()
    numbers = itertools.count()
    links: dict[bytes, str] = {}

    def local(m: re.Match) -> bytes:  # the same WeChat URL -> the same loopback URL; never the internet
        if m.group(0) not in links:
            links[m.group(0)] = server.add(f"/wx/{next(numbers)}.html", page, content_type="text/html; charset=utf-8")
        return links[m.group(0)].encode()

    server.add("/wechat.xml", re.sub(rb"https?://mp\.weixin\.qq\.com/[^<\"\s]*", local, feeds[0].read_bytes()))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "WeChat", "url": server.url("/wechat.xml"), "category": "news", "fulltext": "auto"}])
    (result,) = poll(cfg_path).results
    rows = article_rows(cfg_path)
    assert result.new == len(rows) > 1
    notes = [note for _, note, _ in rows.values()]
    assert all(note and note.startswith("does not match") for note in notes), notes
    fetched = [r.path for r in server.requests if r.path.startswith("/wx/")]
    assert len(fetched) == len(set(fetched)) == len(links)


def test_items_of_one_feed_sharing_a_link_fetch_it_once(tmp_path, site):
    name = "news-en.html"
    link, title, summary = site.url(f"/a/{name}"), title_of(name), summary_of(name)
    site.add("/feed.xml", rss([("one", title, link, summary), ("two", title + " (update)", link, summary)]))
    cfg_path = write_config(tmp_path / "config.toml", [
        {"name": "Short", "url": site.url("/feed.xml"), "category": "news", "fulltext": "auto"}])
    poll(cfg_path)
    assert page_requests(site) == [f"/a/{name}"]
