"""Issue 5 through the whole pipeline: the same story from several sources becomes one
article (exact keys and near-duplicates), different stories never do."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html import escape

import frontmatter
import pytest

from aggregator.config import load_config
from aggregator.pipeline import Pipeline
from tests.conftest import fixture_file, write_config
from tests.helpers import load_post
from tests.test_cli import run

NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def seed_paragraphs() -> list[str]:
    body = frontmatter.loads(fixture_file("seed-article.md").read_text(encoding="utf-8")).content
    return [p for p in re.findall(r"<p>(.*?)</p>", body, re.S) if len(p) > 20]


def seed_and_rewrite(ending: str) -> tuple[str, str]:
    """The seed's body, and a copy whose last paragraph is replaced by ``ending``."""
    paras = seed_paragraphs()
    original = "".join(f"<p>{p}</p>" for p in paras)
    return original, "".join(f"<p>{p}</p>" for p in paras[:-1]) + f"<p>{ending}</p>"


def rss(items: list[tuple[str, str, str, str]]) -> bytes:
    """items: (guid, title, html body, pubDate)."""
    out = "".join(
        f"<item><title>{escape(t)}</title><link>https://news.example/{g}</link><guid>{g}</guid>"
        f"<pubDate>{d}</pubDate><description>{escape(b)}</description></item>"
        for g, t, b, d in items
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>t</title><link>https://news.example/</link><description>d</description>{out}</channel></rss>'.encode()


def _poll(tmp_path, server, feeds: dict[str, bytes], **settings):
    sources = []
    for name, body in feeds.items():
        server.add(f"/{name}.xml", body)
        sources.append({"name": name, "url": server.url(f"/{name}.xml"), "category": "金融"})
    path = write_config(tmp_path / "config.toml", sources, **settings)
    cfg = load_config(path)
    with Pipeline(cfg, clock=lambda: NOW) as p:
        return cfg, path, p.poll()


def test_rewritten_wire_copy_from_two_sources_is_one_article(tmp_path, server):
    original, rewritten = seed_and_rewrite("（完）本文另有补充一句话。")
    cfg, path, cycle = _poll(tmp_path, server, {
        "财联社": rss([("cls-1", "外交部：中美双方正就元首会晤有关具体安排保持密切沟通", original, "Wed, 10 Nov 2021 11:50:52 GMT")]),
        "转载网": rss([("portal-9", "【财联社】外交部：中美双方正就元首会晤有关具体安排保持密切沟通", rewritten, "Wed, 10 Nov 2021 12:30:00 GMT")]),
    })
    assert sum(r.new for r in cycle.results) == 1 and sum(r.duplicates for r in cycle.results) == 1
    posts = list(cfg.posts_dir.glob("*.md"))
    assert len(posts) == 1
    post = load_post(posts[0])
    # both sources recorded (which came first depends on which fetch finished first)
    assert sorted(s["name"] for s in post["sources"]) == ["财联社", "转载网"]
    assert post["date"] == "Wed, 10 Nov 2021 11:50:52 GMT"  # the earliest publication
    out = run(path, "explain", "https://news.example/portal-9", check=0).stdout
    assert "near-duplicate, similarity 0." in out and "财联社" in out and "转载网" in out


def test_different_stories_with_the_same_prefix_and_a_recurring_column_stay_apart(tmp_path, server):
    paras = seed_paragraphs()
    half = len(paras) // 2
    a = "".join(f"<p>{p}</p>" for p in paras[:half])
    b = "".join(f"<p>{p}</p>" for p in paras[half:])
    cfg, _, cycle = _poll(tmp_path, server, {
        "财联社": rss([
            ("c1", "【财联社】每日早报", a, "Mon, 23 Nov 2026 08:00:00 GMT"),
            ("c2", "【财联社】每日早报", b, "Tue, 24 Nov 2026 08:00:00 GMT"),
        ]),
    })
    assert cycle.results[0].new == 2
    assert len(list(cfg.posts_dir.glob("*.md"))) == 2


def test_near_duplicates_can_be_switched_off_per_category(tmp_path, server):
    original, rewritten = seed_and_rewrite("补充一句。")
    cfg, _, cycle = _poll(tmp_path, server, {
        "A": rss([("a", "标题一", original, "Wed, 10 Nov 2021 11:50:52 GMT")]),
        "B": rss([("b", "标题二", rewritten, "Wed, 10 Nov 2021 12:50:52 GMT")]),
    }, categories={"金融": {"near_duplicates": False}})
    assert sum(r.new for r in cycle.results) == 2


def test_near_duplicates_outside_the_window_stay_apart(tmp_path, server):
    original, _ = seed_and_rewrite("")
    cfg, _, cycle = _poll(tmp_path, server, {
        "A": rss([("a", "标题一", original, "Wed, 10 Nov 2021 11:50:52 GMT")]),
        "B": rss([("b", "标题二", original + "<p>又及。</p>", "Mon, 15 Nov 2021 11:50:52 GMT")]),
    }, near_duplicate_window="72h")
    assert sum(r.new for r in cycle.results) == 2


def test_retention_removes_posts_and_rows_but_an_expired_story_is_not_republished(tmp_path, server):
    from aggregator.store import Store

    items = [(f"n{i}", f"Story {i}", f"<p>Body number {i} of a daily story.</p>", f"Mon, 2{i} Nov 2026 08:00:00 GMT")
             for i in range(1, 6)]
    server.add("/a.xml", rss(items))
    path = write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "金融"}],
                        categories={"金融": {"retention": 3}})
    cfg = load_config(path)
    with Pipeline(cfg, clock=lambda: NOW) as p:
        p.poll()
    titles = sorted(load_post(f)["title"] for f in cfg.posts_dir.glob("*.md"))
    assert titles == ["Story 3", "Story 4", "Story 5"]  # the newest three
    with Store(cfg.db_path) as store:
        assert store.article_count() == 3
    # the feed still lists the expired items: they are not stored or published again
    server.set("/a.xml", rss(items + [("n6", "Story 6", "<p>Body number 6, new.</p>", "Thu, 26 Nov 2026 08:00:00 GMT")]))
    with Pipeline(cfg, clock=lambda: NOW) as p:
        r = p.poll().results[0]
    assert r.new == 1
    titles = sorted(load_post(f)["title"] for f in cfg.posts_dir.glob("*.md"))
    assert titles == ["Story 4", "Story 5", "Story 6"]


def test_retention_by_age(tmp_path, server):
    items = [("old", "Old", "<p>Old body text.</p>", "Sun, 01 Nov 2026 08:00:00 GMT"),
             ("new", "New", "<p>New body text.</p>", "Wed, 25 Nov 2026 08:00:00 GMT")]
    server.add("/a.xml", rss(items))
    cfg = load_config(write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "c"}],
                                   retention="7d"))
    with Pipeline(cfg, clock=lambda: NOW) as p:
        p.poll()
    assert [load_post(f)["title"] for f in cfg.posts_dir.glob("*.md")] == ["New"]


@pytest.mark.parametrize("settings, needle", [
    ({"retention": "soon"}, "'retention'"),
    ({"retention": 0}, "keep at least 1"),
    ({"categories": {"c": {"retention": "1x"}}}, "categories.c.retention"),
    ({"categories": {"c": {"colour": 1}}}, "unknown key 'colour'"),
    ({"near_duplicate_distance": 40}, "near_duplicate_distance must be between 0 and 6"),
])
def test_dedup_settings_errors(tmp_path, settings, needle):
    from aggregator.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_config(write_config(tmp_path / "config.toml", [], **settings))


def test_a_source_moving_to_https_with_new_guids_makes_no_duplicates(tmp_path, server):
    body = "<p>A long enough story body that stays exactly the same after the move.</p>"
    server.add("/a.xml", rss([("http-guid-1", "Moving story", body, "Mon, 23 Nov 2026 08:00:00 GMT")])
               .replace(b"https://news.example/http-guid-1", b"http://news.example/story?utm_source=rss"))
    cfg = load_config(write_config(tmp_path / "config.toml", [{"name": "A", "url": server.url("/a.xml"), "category": "c"}]))
    with Pipeline(cfg, clock=lambda: NOW) as p:
        assert p.poll().results[0].new == 1
    # the site moves to https and switches its guid scheme; the tracking parameter goes too
    server.set("/a.xml", rss([("https-guid-1", "Moving story", body, "Mon, 23 Nov 2026 08:00:00 GMT")])
               .replace(b"https://news.example/https-guid-1", b"https://news.example/story"))
    with Pipeline(cfg, clock=lambda: NOW) as p:
        r = p.poll().results[0]
    assert r.new == 0 and len(list(cfg.posts_dir.glob("*.md"))) == 1


def test_a_guid_repeated_inside_one_feed_is_told_apart_by_link(tmp_path, server):
    body = rss([("same", "First", "<p>First story body.</p>", "Mon, 23 Nov 2026 08:00:00 GMT"),
                ("same", "Second", "<p>Second story body.</p>", "Mon, 23 Nov 2026 09:00:00 GMT")])
    body = body.replace(b"https://news.example/same</link>", b"https://news.example/one</link>", 1)
    cfg, _, cycle = _poll(tmp_path, server, {"A": body})
    assert cycle.results[0].new == 2
    server.set("/A.xml", body + b"<!-- re-served: parsed again -->")
    with Pipeline(cfg, clock=lambda: NOW) as p:  # and it stays two on the next parse
        r = p.poll().results[0]
    assert (r.new, r.unchanged) == (0, 2)
    assert len(list(cfg.posts_dir.glob("*.md"))) == 2
