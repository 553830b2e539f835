"""End to end through the real stages: loopback HTTP server -> SQLite -> posts and feeds."""

from __future__ import annotations

import re
from pathlib import Path

import frontmatter
import pytest
from bs4 import BeautifulSoup

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from aggregator.publish import slug
from tests.conftest import corpus_dir, fixture_file, write_config
from tests.helpers import feed_files, load_post, mtimes, parse_output_feed

BASE = "https://feeds.example.org/"
SEED_KEYS = ["title", "categories", "headimg", "author", "comments", "date", "thumbnail"]
PLACEHOLDER = re.compile(r"^https://picsum\.photos/400/300\?random=([1-9]\d{0,3}|10000)$")


def _poll(tmp_path, sources, **settings):
    cfg = load_config(write_config(tmp_path / "config.toml", sources, **settings))
    with Pipeline(cfg) as p:
        return cfg, p.poll()


def _structure(html: str) -> list[str]:
    soup = BeautifulSoup(html, "html.parser")
    return [t.name for t in soup.find_all(True)]


def _text(html: str) -> str:
    return re.sub(r"\s+", "", BeautifulSoup(html, "html.parser").get_text())


# -- the seed ---------------------------------------------------------------------------


def test_seed_article_golden(tmp_path, server):
    feed = fixture_file("cls-depth.rss.xml")
    seed = frontmatter.loads(fixture_file("seed-article.md").read_text(encoding="utf-8"))
    server.add("/cls/depth/1000", feed.read_bytes())
    cfg, cycle = _poll(tmp_path, [{"name": "财联社", "url": server.url("/cls/depth/1000"), "category": "金融", "channel": "深度"}])
    assert [r.new for r in cycle.results] == [1]
    posts = list(cfg.posts_dir.glob("*.md"))
    assert len(posts) == 1
    post = load_post(posts[0])
    keys = list(post.metadata)
    assert keys[: len(SEED_KEYS)] == SEED_KEYS == list(seed.metadata)
    assert keys[len(SEED_KEYS)] == "link"
    for key in SEED_KEYS:
        if key in ("headimg", "thumbnail"):
            assert PLACEHOLDER.match(post[key]), post[key]
        else:
            assert post[key] == seed[key], key
    assert post["headimg"] == post["thumbnail"]
    assert post["link"] == "https://www.cls.cn/detail/889356"
    # the body: the same text and the same element structure as the seed's
    assert _text(post.content) == _text(seed.content)
    assert _structure(post.content) == _structure(seed.content)
    assert "\n\n" not in post.content.strip()


def test_placeholder_number_is_stable_across_databases(tmp_path, server):
    server.add("/f", fixture_file("cls-depth.rss.xml").read_bytes())
    src = [{"name": "财联社", "url": server.url("/f"), "category": "金融", "channel": "深度"}]
    heads = []
    for run in ("one", "two"):
        (tmp_path / run).mkdir()
        cfg, _ = _poll(tmp_path / run, src)
        heads.append(load_post(next(cfg.posts_dir.glob("*.md")))["headimg"])
    assert heads[0] == heads[1]


# -- dedup, edits, no churn -------------------------------------------------------------

RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>Edits</title><link>https://edits.example/</link><description>d</description>
{items}
</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://edits.example/{n}?utm_source=rss</link><guid>id-{n}</guid>
<pubDate>Tue, 24 Nov 2026 0{n}:00:00 GMT</pubDate><description><![CDATA[{body}]]></description></item>"""


def _rss(items):
    return RSS.format(items="\n".join(ITEM.format(n=n, title=t, body=b) for n, t, b in items)).encode()


def test_second_poll_writes_nothing_and_edits_update_in_place(tmp_path, server):
    items = [(1, "First story", "<p>One body.</p>"), (2, "Second story", "<p>Two body.</p>")]
    server.add("/edits.xml", _rss(items))
    server.add("/noetag.xml", _rss([(3, "Third", "<p>Three.</p>")]), etag=False, last_modified=None)
    sources = [
        {"name": "Edits", "url": server.url("/edits.xml"), "category": "news"},
        {"name": "NoValidators", "url": server.url("/noetag.xml"), "category": "news"},
    ]
    cfg, cycle = _poll(tmp_path, sources)
    assert [r.new for r in cycle.results] == [2, 1]
    before = mtimes(cfg.output_dir)
    db_before = cfg.db_path.stat().st_size

    with Pipeline(cfg) as p:
        cycle = p.poll()
    assert [r.not_modified for r in cycle.results] == [True, True]
    assert cycle.posts_written == () and cycle.published == ()
    assert mtimes(cfg.output_dir) == before
    assert cfg.db_path.stat().st_size == db_before

    # an edited item: one updated article, not two; its post rewritten, its feed entry moved
    server.set("/edits.xml", _rss([(1, "First story", "<p>One body, corrected.</p>"), items[1]]))
    with Pipeline(cfg) as p:
        cycle = p.poll(["Edits"])
    r = cycle.results[0]
    assert (r.new, r.updated, r.unchanged) == (0, 1, 1)
    posts = sorted(cfg.posts_dir.glob("*.md"))
    assert len(posts) == 3
    assert sum("One body, corrected." in p.read_text(encoding="utf-8") for p in posts) == 1
    assert not any("One body.<" in p.read_text(encoding="utf-8") for p in posts)
    news_rss = [f for f in feed_files(cfg.output_dir, BASE) if f.name.endswith(".rss.xml")]
    parsed = parse_output_feed(news_rss[0])
    bodies = [e.content[0].value for e in parsed.entries]
    assert sum("One body, corrected." in b for b in bodies) == 1 and len(parsed.entries) == 3


def test_tracking_parameters_do_not_make_duplicates_across_sources(tmp_path, server):
    server.add("/a.xml", _rss([(1, "Shared story", "<p>Wire copy.</p>")]))
    server.add("/b.xml", _rss([(1, "Shared story (mirror)", "<p>Mirror copy with other words.</p>")]).replace(b"id-1", b"mirror-1"))
    cfg, cycle = _poll(tmp_path, [
        {"name": "A", "url": server.url("/a.xml"), "category": "news"},
        {"name": "B", "url": server.url("/b.xml"), "category": "news"},
    ])
    assert sum(r.new for r in cycle.results) == 1
    assert sum(r.duplicates for r in cycle.results) == 1
    assert len(list(cfg.posts_dir.glob("*.md"))) == 1



def test_a_story_carried_by_many_sources_is_written_once_per_cycle_not_once_per_copy(tmp_path, server):
    """Every merged copy adds a source to the post's front matter; the post is written at
    the end of the cycle with all of them, not rewritten per copy (at 10,000 sources a
    story may arrive 40 times in one cycle)."""
    mirrors = 6
    sources = []
    for i in range(mirrors):
        item = _rss([(1, "Shared story", "<p>Wire copy.</p>")])  # the same text: each copy only adds its source
        server.add(f"/m{i}.xml", item.replace(b"id-1", f"m{i}-1".encode()))
        sources.append({"name": f"M{i}", "url": server.url(f"/m{i}.xml"), "category": "news"})
    cfg, cycle = _poll(tmp_path, sources)
    assert sum(r.new for r in cycle.results) == 1 and sum(r.duplicates for r in cycle.results) == mirrors - 1
    (post,) = cfg.posts_dir.glob("*.md")
    assert cycle.posts_written.count(post.name) <= 2  # new at once, then once with every merge
    assert sorted(s["name"] for s in load_post(post)["sources"]) == [f"M{i}" for i in range(mirrors)]


# -- failures stay local ------------------------------------------------------------------


def test_bad_sources_are_recorded_and_do_not_stop_the_others(tmp_path, server):
    from aggregator.store import Store

    server.add("/good.xml", _rss([(1, "Fine", "<p>Fine.</p>")]))
    server.add("/500.xml", b"oops", status=500)
    server.add("/page.html", b"<html><head><title>x</title></head><body>hello</body></html>", content_type="text/html")
    server.add("/junk.xml", b"this is not a feed at all", content_type="application/xml")
    server.add("/entity.xml", b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss version="2.0"><channel><title>&a;</title></channel></rss>')
    sources = [{"name": n, "url": server.url(p), "category": "news"} for n, p in [
        ("Good", "/good.xml"), ("Err500", "/500.xml"), ("Page", "/page.html"), ("Junk", "/junk.xml"),
        ("Entity", "/entity.xml"), ("Gone", "/missing.xml")]]
    cfg, cycle = _poll(tmp_path, sources)
    by = {r.source: r for r in cycle.results}
    assert by["Good"].new == 1 and by["Good"].error is None
    assert by["Err500"].error_kind == "http-5xx" and "500" in by["Err500"].error
    assert by["Page"].error_kind == "not-a-feed" and "HTML" in by["Page"].error
    assert by["Junk"].error is not None
    assert by["Entity"].error is not None and "ENTITY" in by["Entity"].error.upper()
    assert by["Gone"].error_kind == "http-4xx" and "404" in by["Gone"].error
    with Store(cfg.db_path) as store:
        states = store.source_states()
    for name in ("Err500", "Page", "Junk", "Entity", "Gone"):
        assert states[name].state == "failing" and states[name].last_error

    # the good source's articles survive a later failure of its own
    server.set("/good.xml", b"<rss broken")
    with Pipeline(cfg) as p:
        cycle = p.poll(["Good"])
    assert cycle.results[0].error is not None
    assert len(list(cfg.posts_dir.glob("*.md"))) == 1


def test_private_addresses_are_refused_unless_allowed(tmp_path, server):
    server.add("/f.xml", _rss([(1, "x", "<p>x</p>")]))
    cfg, cycle = _poll(tmp_path, [{"name": "Local", "url": server.url("/f.xml"), "category": "news"}], allow_private_networks=False)
    assert cycle.results[0].error_kind == "blocked"
    assert server.hits.get("/f.xml", 0) == 0


# -- published feeds ----------------------------------------------------------------------


def test_published_feeds_reparse_and_carry_full_html(tmp_path, server):
    server.add("/cls", fixture_file("cls-depth.rss.xml").read_bytes())
    server.add("/e.xml", _rss([(1, "A {{ brace }} story", "<p>Body with <b>bold</b> and <a href='/rel'>a link</a>.</p>")]))
    cfg, _ = _poll(tmp_path, [
        {"name": "财联社", "url": server.url("/cls"), "category": "金融", "channel": "深度"},
        {"name": "E", "url": server.url("/e.xml"), "category": "编程"},
    ])
    files = feed_files(cfg.output_dir, BASE)
    # (all, 2 categories, 2 sources, 1 channel) x (RSS, Atom)
    stems = sorted(str(f.relative_to(cfg.output_dir)).split(".")[0] for f in files)
    assert stems == sorted(2 * ["all", "category/金融", "category/编程", "source/财联社", f"source/{slug('E')}", "channel/深度"])
    posts = {load_post(p)["title"]: p for p in cfg.posts_dir.glob("*.md")}
    for f in files:
        parsed = parse_output_feed(f)
        assert parsed.bozo == 0, (f, parsed.get("bozo_exception"))
        assert parsed.version in ("rss20", "atom10")
        assert parsed.entries
        for entry in parsed.entries:
            html = entry.content[0].value
            assert entry.title in posts
            post_body = load_post(posts[entry.title]).content
            assert _text(html) == _text(post_body)  # the full body, not an excerpt
            assert entry.id.startswith("urn:uuid:")
    cls_rss = next(f for f in files if "金融" in str(f) and f.name.endswith(".rss.xml"))
    parsed = parse_output_feed(cls_rss)
    assert "汪文斌：我此前已经回答过相关问题" in parsed.entries[0].content[0].value


def test_publish_is_deterministic(tmp_path, server):
    server.add("/cls", fixture_file("cls-depth.rss.xml").read_bytes())
    cfg, _ = _poll(tmp_path, [{"name": "财联社", "url": server.url("/cls"), "category": "金融", "channel": "深度"}])
    first = {p: p.read_bytes() for p in cfg.output_dir.rglob("*") if p.is_file()}
    for p in first:
        p.unlink()
    with Pipeline(cfg) as p:
        p.publish()
    second = {p: p.read_bytes() for p in cfg.output_dir.rglob("*") if p.is_file()}
    assert second == first


# -- the shared corpus ------------------------------------------------------------------


def _has_items(path: Path) -> bool:
    """Independent of our parser: does the file hold at least one item element / JSON item?"""
    raw = path.read_bytes()
    if path.suffix == ".json" or raw.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"{"):
        import json

        try:
            return bool(json.loads(raw.decode("utf-8-sig")).get("items"))
        except Exception:  # noqa: BLE001
            return False
    return re.search(rb"<(?:\w+:)?(item|entry)[\s>]", raw) is not None


@pytest.mark.corpus
def test_whole_corpus_through_the_pipeline(tmp_path, server):
    from aggregator.store import Store

    corpus = corpus_dir()
    files = sorted((corpus / "real").iterdir()) + sorted((corpus / "illformed").iterdir())
    files = [f for f in files if f.is_file()]
    sources = []
    for i, f in enumerate(files):
        server.add(f"/{f.parent.name}/{i}", f.read_bytes(), content_type="application/octet-stream")
        sources.append({"name": f"{f.parent.name}/{f.name}", "url": server.url(f"/{f.parent.name}/{i}"), "category": f"cat{i % 10}"})
    cfg, cycle = _poll(tmp_path, sources, concurrency=8)
    by = {r.source: r for r in cycle.results}
    assert len(by) == len(files)
    with Store(cfg.db_path) as store:
        states = store.source_states()
    missing, unexplained = [], []
    for f in files:
        name = f"{f.parent.name}/{f.name}"
        r = by[name]
        got_items = r.new + r.updated + r.unchanged + r.duplicates
        if f.parent.name == "real":
            if _has_items(f) and (r.error or got_items == 0):
                missing.append(f"{name}: {r.error or 'no articles'}")
        elif not got_items and not (r.error and states[name].last_error):
            # an ill-formed file that holds no item at all may pass as an empty feed;
            # one that holds items must give articles or an error naming the problem
            if _has_items(f):
                unexplained.append(name)
    assert missing == [], "\n".join(missing)
    assert unexplained == [], unexplained
    # every post file is a loadable article; every feed re-parses cleanly
    for p in cfg.posts_dir.glob("*.md"):
        post = load_post(p)
        assert post["title"] and post["date"]
    for f in feed_files(cfg.output_dir, BASE):
        assert parse_output_feed(f).bozo == 0, f


def test_a_cycle_that_fails_midway_stops_fetching(tmp_path, server):
    """When the cycle's own loop fails (here: the caller's result callback raises), the
    fetch threads stop after the source in hand, also those waiting for a body slot
    nobody will free any more, instead of fetching every remaining source (or waiting
    for ever), and the error reaches the caller."""
    import threading

    from aggregator.pipeline import MIN_BODIES_IN_FLIGHT

    sources = []
    for i in range(60):
        server.add(f"/f{i}.xml", _rss([(i, f"title {i}", f"<p>body {i}</p>")]))
        sources.append({"name": f"s{i:02d}", "url": server.url(f"/f{i}.xml"), "category": "c"})
    cfg = load_config(write_config(tmp_path / "config.toml", sources, concurrency=2))
    raised: list[BaseException] = []

    def explode(result):
        raise RuntimeError("the caller gave up")

    def cycle():
        with Pipeline(cfg) as p:
            try:
                p.poll(on_result=explode)
            except RuntimeError as e:
                raised.append(e)

    runner = threading.Thread(target=cycle, daemon=True)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive(), "the cycle did not end"
    assert [str(e) for e in raised] == ["the caller gave up"]
    fetched = sum(server.hits[f"/f{i}.xml"] for i in range(60))
    assert 1 <= fetched <= MIN_BODIES_IN_FLIGHT + 2, fetched  # the bodies in flight, one per thread more
