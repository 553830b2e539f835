"""The publish stage: posts, feeds, OPML, atomic writes (aggregator/publish/).

Articles are built directly as StoredArticle values: the publisher never sees a database.
Golden files live in tests/golden/publish/; regenerate with ``UPDATE_GOLDEN=1`` and review
the diff by eye before committing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import importlib
import io
import locale
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import feedparser
import frontmatter
import lxml.html
import pytest
import yaml
from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.ext.dc import DcEntryExtension, DcExtension
from feedgen.ext.media import MediaEntryExtension, MediaExtension
from feedgen.feed import FeedGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.errors import PublishError
from aggregator.models import ArticleRef, FeedRule, Source, StoredArticle
from aggregator.publish import (
    EPOCH,
    Page,
    Site,
    feed_def,
    plan_site,
    post_name,
    publish_site,
    render_atom,
    render_post,
    render_rss,
    slug,
    write_atomic,
    write_post,
)
from aggregator.publish.feeds import EntryCache, feed_image_url, image_type, render_page
from aggregator.publish.posts import POST_NAME_RE, hexo_body, strip_illegal_chars

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "publish"
FIXTURES = Path(os.environ.get("AGGREGATOR_FIXTURES", REPO.parent / "shared" / "fixtures"))
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"

BASE_URL = "https://news.example.org/feeds/"
SITE = "Aggregator"
ATOM = "{http://www.w3.org/2005/Atom}"
MEDIA = "{http://search.yahoo.com/mrss/}"
T0 = datetime(2021, 11, 10, 11, 50, 52, tzinfo=UTC)
BLANK_LINE = re.compile(r"\n\s*\n")
FM_KEYS = ["title", "categories", "headimg", "author", "comments", "date", "thumbnail"]


def make_article(id: int, title: str, *, category: str = "金融", source: str = "财联社",
                 channel: str | None = "深度", date: datetime = T0,
                 updated: datetime | None = None, body: str = "<p>body</p>",
                 summary: str = "", link: str | None = "auto", author: str = "",
                 image: str | None = None, uid: str | None = None) -> StoredArticle:
    uid = uid or hashlib.md5(f"article-{id}".encode()).hexdigest()
    return StoredArticle(
        id=id, uid=uid, source=source, category=category, channel=channel,
        guid=f"guid-{id}",
        link=f"https://origin.example.com/a/{id}" if link == "auto" else link,
        title=title, author=author or source, date=date, image=image, body_html=body,
        summary=summary, content_hash=f"hash-{id}", first_seen=date,
        updated=updated or date, post_name=post_name(title, date, uid),
    )


def golden_articles() -> dict[str, list[StoredArticle]]:
    """A small fixed set covering CJK, a YAML-number title, braces, <pre> with blank lines,
    an edited article, a placeholder image and an empty category."""
    finance = [
        make_article(
            1, "央行：保持流动性合理充裕", date=T0,
            body="<p>财联社11月10日讯，央行今日开展逆回购操作。</p>\n<p><strong>以下为详细内容：</strong></p>",
            summary="财联社11月10日讯，央行今日开展逆回购操作。",
            link="https://www.cls.cn/detail/889356",
        ),
        make_article(
            2, "1e3", channel=None, date=T0 + timedelta(hours=2),
            body="<p>Template text {{ 7*7 }} and {% if x %} and {# note #}.</p>",
            summary="Braces {x} & <b>tags</b> in plain text",
        ),
    ]
    tech = [
        make_article(
            3, "Blank lines in <pre>", category="Tech News", source="Example Blog",
            channel=None, date=T0 + timedelta(hours=1),
            body=("<p>Code:</p>\n\n<pre>line 1\n\n\nline 4\n  \nend</pre>\n\n\n"
                  "<p>[x](javascript:alert(1)) and **not bold**</p>\n<p>```js</p>"),
            summary="Code: line 1 line 4 end",
        ),
        make_article(
            4, "Café ‘quotes’ & “more”", category="Tech News", source="Example Blog",
            channel="Releases", date=T0 - timedelta(days=1), updated=T0 + timedelta(days=3),
            body='<p>Edited <a href="https://example.com/x?a=1&amp;b=2">link</a> 🙂</p>',
            summary="Edited link 🙂", author="Jane Doe",
            image="https://img.example.org/cover.png",
        ),
    ]
    return {"金融": finance, "Tech News": tech, "空": []}


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_golden(produced: Path, name: str) -> None:
    golden = GOLDEN / name
    if UPDATE_GOLDEN:
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(produced, golden)
    assert golden.is_dir(), f"no golden files at {golden}; run with UPDATE_GOLDEN=1"
    want, got = tree(golden), tree(produced)
    assert sorted(got) == sorted(want)
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs from {golden / rel}"


def front_matter_text(post: str) -> str:
    assert post.startswith("---\n")
    return post[4:].split("\n---\n", 1)[0]


def body_of(post: str) -> str:
    return post.split("\n---\n\n", 1)[1]


class _PreText(HTMLParser):
    """The text of each <pre>, character references decoded, as a browser keeps it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "pre":
            self.depth += 1
            self.texts.append("")

    def handle_endtag(self, tag):
        if tag == "pre":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.texts[-1] += data


def pre_texts(markup: str) -> list[str]:
    parser = _PreText()
    parser.feed(markup)
    parser.close()
    return parser.texts


def visible_text(markup: str) -> str:
    text = lxml.html.fragment_fromstring(markup, create_parent="div").text_content()
    return re.sub(r"[ \t\n\r\f]+", " ", text).strip(" ")


def load_seed() -> tuple[frontmatter.Post, str]:
    path = FIXTURES / "seed-article.md"
    if not path.is_file():
        pytest.skip(f"seed fixture not found at {path}; set AGGREGATOR_FIXTURES")
    return frontmatter.loads(path.read_text("utf-8")), (FIXTURES / "cls-depth.rss.xml").as_posix()


# --- atomic writes ----------------------------------------------------------------------


def test_write_atomic_creates_parents_mode_and_skips_identical_bytes(tmp_path):
    target = tmp_path / "a" / "b" / "file.xml"
    assert write_atomic(target, b"one") is True
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    inode = target.stat().st_ino
    assert write_atomic(target, b"one") is False
    assert target.stat().st_mtime_ns == 1_000_000_000
    assert target.stat().st_ino == inode
    assert write_atomic(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.xml"]


def test_write_atomic_failure_raises_publish_error_and_leaves_no_temp_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(PublishError):
        write_atomic(tmp_path / "taken", b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.tmp"))


def test_a_batch_swaps_its_files_in_only_at_commit(tmp_path):
    from aggregator.publish import atomic

    old = tmp_path / "old.xml"
    old.write_bytes(b"old")
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    same = tmp_path / "same.xml"
    same.write_bytes(b"same")
    inode = old.stat().st_ino
    with atomic.AtomicBatch() as batch:
        assert batch.stage(old, b"new") is True
        assert batch.stage(tmp_path / "a" / "b" / "fresh.xml", b"fresh") is True
        assert batch.stage(same, b"same") is False  # its bytes would not change: left alone
        # staged, not yet visible: readers still see the old file, the new one is absent
        assert old.read_bytes() == b"old" and not (tmp_path / "a" / "b" / "fresh.xml").exists()
        assert len(temporary_files(tmp_path)) == 2
        assert batch.commit() == {}
    assert old.read_bytes() == b"new" and old.stat().st_ino != inode  # replaced by rename
    assert (tmp_path / "a" / "b" / "fresh.xml").read_bytes() == b"fresh"
    assert stat.S_IMODE((tmp_path / "a" / "b" / "fresh.xml").stat().st_mode) == 0o644
    assert stat.S_IMODE(old.stat().st_mode) == 0o644
    assert temporary_files(tmp_path) == []


def test_a_batch_reports_the_files_it_could_not_swap_in_and_commits_the_others(tmp_path):
    from aggregator.publish.atomic import AtomicBatch

    (tmp_path / "taken").mkdir()  # a folder where a file should go: its rename fails
    (tmp_path / "blocked").write_text("a file where a folder should be")
    with AtomicBatch() as batch:
        with pytest.raises(PublishError, match="cannot write"):
            batch.stage(tmp_path / "blocked" / "x.xml", b"x")  # refused at once, nothing staged
        assert batch.stage(tmp_path / "taken", b"data") is True
        assert batch.stage(tmp_path / "fine.xml", b"fine") is True
        failed = batch.commit()
    assert list(failed) == [str(tmp_path / "taken")] and "cannot write" in failed[str(tmp_path / "taken")]
    assert (tmp_path / "taken").is_dir() and (tmp_path / "fine.xml").read_bytes() == b"fine"
    assert temporary_files(tmp_path) == []


def test_a_batch_renames_no_file_whose_data_cannot_be_made_durable(tmp_path, monkeypatch):
    """A failing fsync (EIO: the disk refused the write-back) keeps that file's old version;
    the files whose data did reach the disk are committed."""
    import errno

    from aggregator.publish import atomic

    fsync = os.fsync

    def failing_for_b(fd: int) -> None:  # fault injection: the OS call, not our code
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(".b.xml."):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", failing_for_b)
    (tmp_path / "a.xml").write_bytes(b"old a")
    (tmp_path / "b.xml").write_bytes(b"old b")
    with atomic.AtomicBatch() as batch:
        batch.stage(tmp_path / "a.xml", b"new a")
        batch.stage(tmp_path / "b.xml", b"new b")
        failed = batch.commit()
    assert list(failed) == [str(tmp_path / "b.xml")] and os.strerror(errno.EIO) in failed[str(tmp_path / "b.xml")]
    assert (tmp_path / "a.xml").read_bytes() == b"new a" and (tmp_path / "b.xml").read_bytes() == b"old b"
    assert temporary_files(tmp_path) == []


def test_a_batch_left_without_commit_leaves_no_temporary_file(tmp_path):
    from aggregator.publish.atomic import AtomicBatch

    (tmp_path / "a.xml").write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicBatch() as batch:
        batch.stage(tmp_path / "a.xml", b"new")
        raise RuntimeError("a renderer bug")
    assert (tmp_path / "a.xml").read_bytes() == b"old"
    assert temporary_files(tmp_path) == []


# --- post names -------------------------------------------------------------------------


@pytest.mark.parametrize("title", [
    "", ".", "..", "...", "金融新闻", "🙂🙂", "/etc/passwd", "..\\..\\x", "a\x00b", " -x- ",
    "x" * 500, "é" * 300, "\u202e\u200b", ".hidden",
])
def test_post_name_is_a_safe_bare_name_for_hostile_titles(title):
    name = post_name(title, T0, "0123456789abcdef0123456789abcdef")
    assert POST_NAME_RE.fullmatch(name)
    assert len(name.encode()) <= 100
    assert Path(name).name == name and not name.startswith(".")
    assert name.startswith("2021-11-10-") and name.endswith("-0123456789.md")


def test_post_name_keeps_a_readable_ascii_slug():
    assert post_name("Hello, World! Ça va?", T0, "ab" * 16) == "2021-11-10-hello-world-ca-va-ababababab.md"
    assert post_name("金融", T0, "ab" * 16) == "2021-11-10-ababababab.md"


def test_post_name_uses_the_utc_day():
    late = datetime(2021, 11, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert post_name("x", late, "ab" * 16).startswith("2021-11-11-")


def test_titles_that_slugify_alike_do_not_collide():
    uids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(3)]
    names = {post_name(t, T0, u) for t, u in zip(["Hello World!", "hello-world", "HELLO  world"], uids)}
    assert len(names) == 3


@settings(max_examples=300, deadline=None)
@given(title=st.text(max_size=300),
       date=st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                         timezones=st.sampled_from([UTC, timezone(timedelta(hours=8))])),
       uid=st.one_of(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), st.text()))
def test_post_name_property(title, date, uid):
    name = post_name(title, date, uid)
    assert re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(-[a-z0-9]+)*-[0-9a-f]{10}\.md", name), name
    assert len(name.encode()) <= 100
    assert post_name(title, date, uid) == name


# --- posts ------------------------------------------------------------------------------


def test_render_post_matches_the_seed_front_matter(tmp_path):
    seed, feed_path = load_seed()
    item = feedparser.parse(io.BytesIO(Path(feed_path).read_bytes())).entries[0]
    categories = seed["categories"]
    inner = seed.content.strip()
    assert inner.startswith("<div>") and inner.endswith("</div>")
    inner = inner[len("<div>"):-len("</div>")]
    date = parsedate_to_datetime(seed["date"])
    article = StoredArticle(
        id=1, uid="f" * 32, source=categories[1], category=categories[0], channel=categories[2],
        guid=item.id, link=item.link, title=seed["title"], author=seed["author"], date=date,
        image=seed["headimg"], body_html=inner, summary="", content_hash="x",
        first_seen=date, updated=date, post_name=post_name(seed["title"], date, "f" * 32),
    )
    post = render_post(article)
    ours = frontmatter.loads(post)
    assert list(ours.metadata) == list(seed.metadata) + ["link"]
    for key, value in seed.metadata.items():
        assert ours[key] == value, key
        assert type(ours[key]) is type(value), key
    assert ours["link"] == "https://www.cls.cn/detail/889356"
    # the same body, wrapped in <div> as the seed does, without its blank-looking lines
    assert visible_text(body_of(post)) == visible_text(seed.content)
    assert not BLANK_LINE.search(body_of(post))
    assert write_post(article, tmp_path) is True
    assert (tmp_path / article.post_name).read_text("utf-8") == post
    assert write_post(article, tmp_path) is False


HAZARD_TITLES = [
    "1e3", "0o17", "-.5", "0x1F", "1_000", "+1", "1:20", ".inf", "null", "~", "yes", "no",
    "true", "On", "2021-11-10", "2021-11-10 11:50:52", "- x", ": y", "? z", "'quote'",
    '"double"', "#", "a # b", "&anchor", "*alias", "!tag", "%TAG", "@at", "`tick", "|", ">",
    "[a, b]", "{a: 1}", "<<", "a\u2028b", "a\u2029b", "\x85nel", "\ufeffbom", "tab\there",
    "line\nbreak\n---\nnext", "  padded  ", "", "🙂 emoji 🚀", "外交部：中美", "---",
]


@pytest.mark.parametrize("title", HAZARD_TITLES)
def test_front_matter_titles_stay_strings(title):
    article = make_article(7, title, link="https://x.example/1e3?yes=null")
    post = render_post(article)
    loaded = frontmatter.loads(post)
    assert loaded["title"] == title
    assert list(loaded.metadata) == FM_KEYS + ["link"]
    data = yaml.safe_load(front_matter_text(post))
    assert data["title"] == title
    assert data["comments"] is False
    assert all(isinstance(data[k], str) for k in FM_KEYS + ["link"] if k not in ("categories", "comments"))
    assert all(isinstance(c, str) for c in data["categories"])
    # YAML 1.2 (js-yaml) check, schema-independent: every value scalar is quoted, so no
    # resolver can read it as a number, null, bool or date. Only keys and false are plain.
    plain = {t.value for t in yaml.scan(front_matter_text(post))
             if isinstance(t, yaml.ScalarToken) and t.plain}
    assert plain <= set(FM_KEYS) | {"link", "false"}
    assert "\n---" not in front_matter_text(post)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=st.text(max_size=80), source=st.text(min_size=1, max_size=20),
       channel=st.one_of(st.none(), st.text(min_size=1, max_size=20)))
def test_front_matter_round_trips_any_text(title, source, channel):
    article = make_article(9, title, source=source, channel=channel)
    post = render_post(article)
    data = yaml.safe_load(front_matter_text(post))
    loaded = frontmatter.loads(post)
    assert data["title"] == loaded["title"] == strip_illegal_chars(title)
    assert data["author"] == strip_illegal_chars(source)
    assert data["categories"] == [strip_illegal_chars(c) for c in article.categories]
    assert list(loaded.metadata) == FM_KEYS + ["link"]


def test_front_matter_without_link_and_with_placeholder_image():
    article = make_article(5, "x", link=None)
    meta = frontmatter.loads(render_post(article)).metadata
    assert list(meta) == FM_KEYS
    assert meta["headimg"] == meta["thumbnail"] == article.thumbnail
    assert meta["thumbnail"].startswith("https://picsum.photos/400/300?random=")
    assert meta["categories"] == ["金融", "财联社", "深度"]


def test_front_matter_date_is_rfc822_gmt_in_english():
    shanghai = timezone(timedelta(hours=8))
    article = make_article(6, "x", date=datetime(2021, 11, 10, 19, 50, 52, tzinfo=shanghai))
    assert frontmatter.loads(render_post(article))["date"] == "Wed, 10 Nov 2021 11:50:52 GMT"
    other = make_article(6, "x", date=datetime(2024, 2, 29, 0, 0, 1, tzinfo=UTC))
    assert frontmatter.loads(render_post(other))["date"] == "Thu, 29 Feb 2024 00:00:01 GMT"


def test_body_is_one_inert_html_block():
    body_html = (
        "<p>{{ 7*7 }} {% if x %}broken{% endif %} {# hidden #}</p>\n\n\n"
        "[x](javascript:alert(1))\n\n**bold**\n"
        "<pre>a\n\n\n  \nb\t\n\u3000\n</pre>\n\u00a0\n\r\n\r\n<p>```js\nx\n~~~</p>"
    )
    body = body_of(render_post(make_article(8, "t", body=body_html)))
    assert body.startswith("<div>\n") and body.endswith("\n</div>\n")
    assert not BLANK_LINE.search(body)  # hexo-renderer-marked cannot end the HTML block
    assert "{" not in body and "}" not in body  # nothing for Nunjucks to evaluate
    assert "&#123;&#123; 7*7 &#125;&#125;" in body
    assert "```" not in body and "~~~" not in body
    # the page is unchanged: <pre> keeps every newline, the text keeps every character
    assert pre_texts(body) == ["a\n\n\n  \nb\t\n\u3000\n"]
    assert visible_text(body) == visible_text(body_html.replace("\r\n", "\n"))


html_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text=html_text)
def test_hexo_body_property(text):
    for markup in (f"<pre>{html.escape(text, quote=False)}</pre>",
                   f"<p>{html.escape(text, quote=False)}</p>", text):
        body = hexo_body(markup)
        assert not BLANK_LINE.search(body)
        assert "{" not in body and "}" not in body
        assert "```" not in body and "~~~" not in body
    expected = strip_illegal_chars(text).replace("\r\n", "\n").replace("\r", "\n")
    assert pre_texts(hexo_body(f"<pre>{html.escape(text, quote=False)}</pre>")) == [expected]


def test_write_post_refuses_a_name_outside_the_folder(tmp_path):
    posts = tmp_path / "posts"
    for bad in ("../escape.md", ".hidden.md", "a/b.md", "x.txt", ""):
        article = dataclasses.replace(make_article(1, "x"), post_name=bad)
        with pytest.raises(PublishError):
            write_post(article, posts)
    assert list(tmp_path.rglob("*")) == []


# --- feed names -------------------------------------------------------------------------


def test_feed_names():
    for category in ("金融", "编程", "tech", "tech-news", "हिन्दी"):
        feed = feed_def("category", category, site_title=SITE, limit=50, ttl=15)
        assert slug(category) == category and feed.title == f"{SITE} · {category}"
        assert feed.path("rss") == f"category/{category}.rss.xml"
        assert feed.path("atom") == f"category/{category}.atom.xml"
        assert feed.path("json") == f"category/{category}.json"
        assert feed.path("rss", 3) == f"archive/category/{category}/3.rss.xml"
    assert re.fullmatch(r"tech-news-[0-9a-f]{8}", slug("Tech News"))
    assert slug("Tech") != slug("tech")  # case-insensitive file systems
    assert slug("C++") != slug("C#")
    assert feed_def("source", "Sample Blog", site_title=SITE, limit=5, ttl=1).stem.startswith("source/sample-blog-")
    assert feed_def("all", "", site_title=SITE, limit=5, ttl=1).path("json") == "all.json"
    assert feed_def("custom", "no-ads", site_title=SITE, limit=5, ttl=1).path("atom") == "custom/no-ads.atom.xml"


@settings(max_examples=300, deadline=None)
@given(a=st.text(max_size=120), b=st.text(max_size=120))
def test_slug_property(a, b):
    name = slug(a)
    assert name and len(name.encode("utf-8")) <= 100
    assert not name.startswith((".", "-")) and "." not in name
    assert not set(name) & set("/\\\0") and name.isprintable()
    feed = feed_def("category", a, site_title=SITE, limit=5, ttl=1)
    assert feed.path("rss") == f"category/{name}.rss.xml" and Path(feed.path("rss")).parent.name == "category"
    if a != b:
        assert slug(b) != name


# --- feeds ------------------------------------------------------------------------------

SITE_INFO = Site(base_url=BASE_URL, title=SITE)


def page_of(articles, category: str = "金融", *, site: Site = SITE_INFO) -> Page:
    feed = feed_def("category", category, site_title=site.title, limit=50, ttl=15)
    return Page(feed=feed, items=tuple(articles))


def rss_of(articles, category: str = "金融", *, site: Site = SITE_INFO) -> bytes:
    return render_rss(page_of(articles, category, site=site), site)


def atom_of(articles, category: str = "金融", *, site: Site = SITE_INFO) -> bytes:
    return render_atom(page_of(articles, category, site=site), site)


def ref_of(a: StoredArticle) -> ArticleRef:
    return ArticleRef(id=a.id, source=a.source, sources=(a.source,), category=a.category, channel=a.channel,
                      title=a.title, author=a.author, date=a.date, updated=a.updated, content_hash=a.content_hash)


def publish(out: Path, groups: dict[str, list[StoredArticle]], *, base_url: str = BASE_URL,
            site_title: str = "aggregator", limit: int = 50, previous=None, rules=(), site: Site | None = None,
            **workers):
    """The whole publish stage as the pipeline runs it, without a database: plan every
    feed of these articles (a configured source per category, so an empty category still
    gets its feed), render, validate and write. ``workers``: publish_site's executor and
    workers."""
    articles = {a.id: a for group in groups.values() for a in group}
    sources = [Source(name=f"feed of {c}", url=f"https://origin.example.com/{i}.xml", category=c, channel=None,
                      interval=900) for i, c in enumerate(sorted(groups)) if not groups[c]]
    site = site or Site(base_url=base_url, title=site_title)
    plan = plan_site([ref_of(a) for a in sorted(articles.values(), key=lambda a: a.id)], sources, rules,
                     site=site, items_per_feed=limit, default_interval=900,
                     bodies=lambda ids: {i: articles[i].body_html for i in ids})
    return publish_site(out, plan, site, previous=previous or {},
                        load=lambda ids: [articles[i] for i in ids if i in articles], **workers)


def publish_golden(out: Path, previous=None):
    return publish(out, golden_articles(), base_url=BASE_URL, site_title=SITE, limit=50, previous=previous)


def test_golden_site_and_posts(tmp_path):
    site = tmp_path / "site"
    result = publish_golden(site)
    assert result.skipped == () and result.failed == ()
    assert sorted(result.written) == sorted(tree(site))
    posts = tmp_path / "posts"
    for articles in golden_articles().values():
        for article in articles:
            assert write_post(article, posts)
    assert_golden(site, "site")
    assert_golden(posts, "posts")


def parsed(data: bytes):
    feed = feedparser.parse(io.BytesIO(data))
    assert feed.bozo == 0, feed.get("bozo_exception")
    return feed


def seed_like_articles() -> list[StoredArticle]:
    articles = golden_articles()["金融"] + golden_articles()["Tech News"]
    path = FIXTURES / "seed-article.md"
    if path.is_file():  # the real 10 KB CJK article, as the fixture gives it
        seed = frontmatter.loads(path.read_text("utf-8"))
        articles.append(make_article(20, seed["title"], date=T0 - timedelta(days=2),
                                     body=seed.content, summary="外交部发言人汪文斌主持例行记者会。"))
    return articles


@pytest.mark.parametrize("render", [rss_of, atom_of])
def test_feeds_reparse_with_full_content_stable_ids_newest_first(render):
    articles = seed_like_articles()
    feed = parsed(render(articles))
    expected = sorted(articles, key=lambda a: (a.date, a.id), reverse=True)
    assert [e.id for e in feed.entries] == [a.feed_id for a in expected]
    assert feed.feed.title == f"{SITE} · 金融"
    assert feed.feed.link == BASE_URL + "index.html"  # the alternate link, not the self link
    for entry, article in zip(feed.entries, expected):
        assert entry.title == article.title
        assert entry.get("link") == article.link
        assert visible_text(entry.content[0].value) == visible_text(article.body_html)
        assert entry.content[0].type == "text/html"
        assert datetime(*entry.published_parsed[:6], tzinfo=UTC) == article.date
        assert entry.author == article.author
        assert [t.term for t in entry.tags] == article.categories
        if article.summary:
            assert entry.summary == article.summary or html.unescape(entry.summary) == article.summary
    again = parsed(render(list(reversed(articles))))
    assert [e.id for e in again.entries] == [e.id for e in feed.entries]


def test_atom_is_well_formed_with_html_content_and_stable_dates():
    articles = seed_like_articles()
    data = atom_of(articles)
    root = etree.fromstring(data)
    assert root.tag == f"{ATOM}feed"
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == len(articles)
    for entry in entries:
        content = entry.find(f"{ATOM}content")
        assert content.get("type") == "html" and content.text
        assert entry.find(f"{ATOM}updated") is not None and entry.find(f"{ATOM}published") is not None
    newest_update = max(a.updated for a in articles)
    assert datetime.fromisoformat(root.findtext(f"{ATOM}updated")) == newest_update
    assert root.findtext(f"{ATOM}id") == BASE_URL + "category/%E9%87%91%E8%9E%8D.atom.xml"
    self_link = root.find(f"{ATOM}link[@rel='self']").get("href")
    assert self_link.isascii() and unquote(self_link) == BASE_URL + "category/金融.atom.xml"
    assert root.find(f"{ATOM}link[@rel='self']").get("type") == "application/atom+xml"
    assert root.find(f"{ATOM}link[@rel='alternate']").get("href") == BASE_URL + "index.html"
    assert root.find(f"{ATOM}link[@rel='hub']") is None  # no hub configured


def test_rss_channel_links_ttl_and_build_date():
    articles = golden_articles()["Tech News"]
    page = page_of(articles, "Tech News")
    channel = etree.fromstring(render_rss(page, SITE_INFO))[0]
    assert channel.findtext("link") == BASE_URL + "index.html"
    self_link = channel.find(f"{ATOM}link[@rel='self']")
    assert self_link.get("href") == BASE_URL + page.path("rss")
    assert self_link.get("type") == "application/rss+xml"
    assert channel.findtext("ttl") == "15"
    assert channel.findtext("category") == "Tech News"
    # the edited, older article carries the newest `updated`: it dates the feed
    assert parsedate_to_datetime(channel.findtext("lastBuildDate")) == T0 + timedelta(days=3)
    items = channel.findall("item")
    assert [i.find("guid").get("isPermaLink") for i in items] == ["false", "false"]
    content = "{http://purl.org/rss/1.0/modules/content/}encoded"
    assert all(i.findtext(content) for i in items)


def test_hub_link_and_source_attribution_in_both_formats():
    site = Site(base_url=BASE_URL, title=SITE, hub="https://hub.example.net/",
                source_urls={"财联社": "https://rsshub.example/cls/depth/1000"})
    articles = golden_articles()["金融"] + golden_articles()["Tech News"]
    rss = etree.fromstring(rss_of(articles, site=site))
    assert rss.find(f"channel/{ATOM}link[@rel='hub']").get("href") == "https://hub.example.net/"
    for item in rss.findall("channel/item"):
        source = item.find("source")
        if item.findtext("title") in {a.title for a in golden_articles()["金融"]}:
            assert source.text == "财联社" and source.get("url") == "https://rsshub.example/cls/depth/1000"
        else:  # a source without a configured URL is not attributed with a made-up one
            assert source is None
    atom = etree.fromstring(atom_of(articles, site=site))
    assert atom.find(f"{ATOM}link[@rel='hub']").get("href") == "https://hub.example.net/"
    sources = [e.find(f"{ATOM}source") for e in atom.findall(f"{ATOM}entry")]
    attributed = [s for s in sources if s is not None]
    assert len(attributed) == 2
    for source in attributed:
        assert source.findtext(f"{ATOM}title") == "财联社"
        assert source.find(f"{ATOM}link").get("href") == "https://rsshub.example/cls/depth/1000"
    for data in (rss_of(articles, site=site), atom_of(articles, site=site)):
        parsed(data)


# --- images -----------------------------------------------------------------------------


def image_articles() -> list[StoredArticle]:
    """Newest first: a PNG, an extension-less CDN image, and no image (placeholder only)."""
    return [
        make_article(1, "with png", image="https://img.example.org/covers/1.PNG?w=640&h=480"),
        make_article(2, "cdn image", date=T0 - timedelta(hours=1),
                     image="https://cdn.example.net/i/9f86d081884c7d65"),
        make_article(3, "no image", date=T0 - timedelta(hours=2)),
    ]


def atom_links(entry) -> list[tuple[str | None, str | None, str]]:
    return [(link.get("rel"), link.get("type"), link.get("href"))
            for link in entry.findall(f"{ATOM}link")]


def test_rss_items_carry_their_own_image_as_media_thumbnail_only():
    articles = image_articles()
    data = rss_of(articles)
    feed = parsed(data)
    assert [e.title for e in feed.entries] == ["with png", "cdn image", "no image"]
    assert feed.entries[0].media_thumbnail[0]["url"] == articles[0].image
    assert feed.entries[1].media_thumbnail[0]["url"] == articles[1].image
    assert "media_thumbnail" not in feed.entries[2]
    # no <enclosure>: podcast clients would take the picture for the item's media file
    assert all(e.enclosures == [] for e in feed.entries)
    items = etree.fromstring(data).findall("channel/item")
    assert [len(i.findall("enclosure")) for i in items] == [0, 0, 0]
    # a direct child of <item>, not wrapped in <media:group> (feedgen's default)
    assert [[t.get("url") for t in i.findall(f"{MEDIA}thumbnail")] for i in items] == [
        [articles[0].image], [articles[1].image], []]
    assert not etree.fromstring(data).findall(f".//{MEDIA}group")
    # the Hexo placeholder never reaches a feed
    assert articles[2].thumbnail.startswith("https://picsum.photos/")
    assert b"picsum" not in data


def test_atom_entries_carry_their_image_as_enclosure_link_and_thumbnail():
    articles = image_articles()
    data = atom_of(articles)
    feed = parsed(data)
    first, second, third = feed.entries
    assert [(e.href, e.type) for e in first.enclosures] == [(articles[0].image, "image/png")]
    assert [(e.href, e.type) for e in second.enclosures] == [(articles[1].image, "image/jpeg")]
    assert third.enclosures == []
    assert [e.get("link") for e in feed.entries] == [a.link for a in articles]
    assert first.media_thumbnail[0]["url"] == articles[0].image
    assert "media_thumbnail" not in third
    entries = etree.fromstring(data).findall(f"{ATOM}entry")
    # RFC 4287: rel defaults to "alternate", and one alternate per type at most; the
    # image must not become a second one (feedgen 1.0.0 drops rel on entry links)
    assert atom_links(entries[0]) == [(None, None, articles[0].link),
                                      ("enclosure", "image/png", articles[0].image)]
    assert atom_links(entries[1])[1:] == [("enclosure", "image/jpeg", articles[1].image)]
    assert atom_links(entries[2]) == [(None, None, articles[2].link)]
    for entry in entries:
        assert all(link.get("length") is None for link in entry.findall(f"{ATOM}link"))
    assert b"picsum" not in data


@pytest.mark.parametrize("url, mime_type", [
    ("https://img.example.org/a.PNG", "image/png"),
    ("https://img.example.org/a.b.jpeg?format=png", "image/jpeg"),
    ("https://img.example.org/x.gif#frag.png", "image/gif"),
    ("https://img.example.org/x.webp", "image/webp"),
    ("https://img.example.org/x.svg", "image/svg+xml"),
    ("https://img.example.org/x.avif", "image/avif"),
    ("https://img.example.org/render.php?img=a.png", "image/jpeg"),
    ("https://img.example.org/dir.png/", "image/jpeg"),
    ("https://img.example.org/.png", "image/jpeg"),
    ("https://img.example.org/archive.zip", "image/jpeg"),
    ("https://img.example.org", "image/jpeg"),
])
def test_image_type_comes_from_the_last_path_segment(url, mime_type):
    assert image_type(url) == mime_type


WEIRD_IMAGES = [
    # as stored -> as published (what a browser's URL parser fetches)
    ("  https://img.example.org/a b.jpg\n", "https://img.example.org/a%20b.jpg"),
    ('https://img.example.org/"q"<x>&y.png?a=1&b=\'2\'',
     "https://img.example.org/%22q%22%3Cx%3E&y.png?a=1&b='2'"),
    ("https://例子.测试/图片.jpg?名=值", "https://例子.测试/图片.jpg?名=值"),
    ("https://img.example.org/{a}`b`|c^.gif#top", "https://img.example.org/%7Ba%7D%60b%60|c^.gif#top"),
    ("https://img.example.org/line\r\nbreak\t.png", "https://img.example.org/linebreak.png"),
    ("https://img.example.org/x\x00\x0b\x1b\ufffe\ud800y.png", "https://img.example.org/xy.png"),
    ("https://img.example.org/already%20encoded%22.png", "https://img.example.org/already%20encoded%22.png"),
    ("HTTP://IMG.example.org/upper.png", "HTTP://IMG.example.org/upper.png"),
]


@pytest.mark.parametrize("image, published", WEIRD_IMAGES)
def test_weird_image_urls_are_published_as_valid_urls(image, published):
    assert feed_image_url(image) == published
    article = make_article(1, "weird", image=image)
    for render in (rss_of, atom_of):
        data = render([article])
        etree.fromstring(data)  # well-formed
        entry = parsed(data).entries[0]
        assert entry.media_thumbnail[0]["url"] == published
        if render is atom_of:
            assert [e.href for e in entry.enclosures] == [published]


@pytest.mark.parametrize("image", [
    "", " ", "javascript:alert(1)//x.png", "data:image/png;base64,iVBORw0KGgo=",
    "//img.example.org/scheme-relative.png", "/relative.png", "ftp://img.example.org/x.png",
    "http://[::1/x.png", "https://", "\x00\ufffe",
])
def test_unusable_image_urls_are_left_out_not_fatal(image):
    assert feed_image_url(image) is None
    article = make_article(1, "x", image=image)
    for render in (rss_of, atom_of):
        data = render([article])
        entry = parsed(data).entries[0]
        assert entry.title == "x"
        assert "media_thumbnail" not in entry and entry.get("enclosures", []) == []
        assert b"picsum" not in data


url_tail = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tail=url_tail, prefix=st.sampled_from(["https://img.example.org/", "http://例子.测试/", ""]))
def test_any_image_url_gives_well_formed_feeds(tail, prefix):
    image = prefix + tail
    published = feed_image_url(image)
    article = make_article(1, "t", image=image)
    rss = rss_of([article])
    atom = atom_of([article])
    rss_item = etree.fromstring(rss).find("channel/item")
    atom_entry = etree.fromstring(atom).find(f"{ATOM}entry")
    thumbnails = [t.get("url") for t in rss_item.findall(f"{MEDIA}thumbnail")]
    enclosures = [l.get("href") for l in atom_entry.findall(f"{ATOM}link[@rel='enclosure']")]
    if published is None:
        assert thumbnails == enclosures == []
    else:
        assert thumbnails == enclosures == [published]
        assert not re.search(r'[\x00-\x20"<>`{}\x7f]', published)
        assert published.split(":", 1)[0].lower() in ("http", "https")
    for data in (rss, atom):
        parsed(data)
    if re.fullmatch(r"[A-Za-z0-9/._~-]*", tail) and prefix:
        assert published == image  # a plain URL is published unchanged
        assert parsed(rss).entries[0].media_thumbnail[0]["url"] == image


# --- items rendered once, reused by every page ----------------------------------------


def feedgen_fill_entry(fe: FeedEntry, article: StoredArticle, site: Site, *, rss: bool) -> None:
    """The article as feedgen's FeedEntry calls, the way the renderer built every entry
    before it built them with lxml itself (``feeds.rss_item`` / ``feeds.atom_entry``): the
    oracle those must match byte for byte."""
    from aggregator.publish.feeds import UNTITLED, _utc

    title = strip_illegal_chars(article.title).strip() or UNTITLED
    summary = strip_illegal_chars(article.summary).strip()
    author = strip_illegal_chars(article.author).strip() or strip_illegal_chars(article.source)
    fe.id(article.feed_id)  # also the RSS guid, isPermaLink="false"
    fe.title(title)
    if article.link:
        fe.link(href=strip_illegal_chars(article.link), rel="alternate")
    # content() before summary(): description() / content-only would put the body into
    # Atom <content> or RSS <description> (HAZARDS.md); type="html", never "CDATA".
    fe.content(strip_illegal_chars(article.body_html), type="html")
    if rss:
        fe.summary(html.escape(summary or title, quote=False))
        if author:
            fe.dc.dc_creator(author)
    else:
        if summary:
            fe.summary(summary)
        if author:
            fe.author(name=author)
    fe.published(_utc(article.date))
    fe.updated(_utc(article.updated))
    terms = [strip_illegal_chars(c) for c in article.categories]
    if any(terms):
        fe.category([{"term": t} for t in terms if t])
    source_url = site.source_urls.get(article.source)
    source_name = strip_illegal_chars(article.source).strip()
    if source_url and source_name:
        fe.source(url=strip_illegal_chars(source_url), title=source_name)
    image = feed_image_url(article.image)
    if image:
        if not rss:
            fe.atom_enclosure.add(image, image_type(image))
        # group=None: feedgen's default group "default" wraps every thumbnail in a
        # <media:group>, which readers looking for item/media:thumbnail do not search.
        fe.media.thumbnail(url=image, group=None)


class FeedgenAtomEnclosure(BaseEntryExtension):
    """Atom ``<link rel="enclosure">`` for feedgen's entries, which feedgen 1.0.0 cannot
    write: ``FeedEntry.atom_entry()`` rebinds its loop variable to the new element and then
    reads ``rel``/``type`` from it, so every entry link comes out as a bare ``<link href>``.
    ``FeedEntry.link(rel="enclosure")`` would also set the RSS ``<enclosure>``."""

    def __init__(self) -> None:
        self._links: list[tuple[str, str]] = []

    def add(self, href: str, mime_type: str) -> None:
        self._links.append((href, mime_type))

    def extend_atom(self, entry):
        for href, mime_type in self._links:
            etree.SubElement(entry, "link", href=href, rel="enclosure", type=mime_type)
        return entry


def feedgen_generator(*, rss: bool) -> FeedGenerator:
    """``feeds._feed_generator`` plus the extension feedgen's entries need for the Atom
    enclosure, registered where the renderer registered it when feedgen built the entries:
    the registration order is the order of the extension elements inside an entry."""
    from aggregator.publish import feeds

    fg = FeedGenerator()
    fg.register_extension("feed_links", feeds._FeedLinks, feeds._NoEntryExtension, atom=True, rss=True)
    if rss:
        fg.register_extension("dc", DcExtension, DcEntryExtension, atom=False, rss=True)
    else:
        fg.register_extension("atom_enclosure", BaseExtension, FeedgenAtomEnclosure, atom=True, rss=False)
    fg.register_extension("media", MediaExtension, MediaEntryExtension, atom=True, rss=True)
    return fg


def feedgen_whole(page: Page, site: Site, fmt: str) -> bytes:
    """The page as feedgen writes it with all its entries in one FeedGenerator -- how the
    renderer worked before it reused each article's entry across pages and before it built
    the entries itself. The reused entries must give exactly these bytes."""
    from aggregator.publish import feeds

    with pytest.MonkeyPatch.context() as patch:  # the page's envelope, on feedgen_generator
        patch.setattr(feeds, "_feed_generator", feedgen_generator)
        fg = feeds._new_feed(page, site, fmt)
    for article in sorted(page.items, key=lambda a: (feeds._utc(a.date), a.id), reverse=True):  # naive is UTC
        feedgen_fill_entry(fg.add_entry(order="append"), article, site, rss=fmt == "rss")
    if fmt == "atom":
        return fg.atom_str(pretty=True)
    return feeds._RSS_UTC.sub(rb"\1 GMT</\2>", fg.rss_str(pretty=True))


def varied_articles() -> list[StoredArticle]:
    dirty = "\x00\x0b\ufffe\ud800"
    return [*golden_articles()["金融"], *golden_articles()["Tech News"],
            *[dataclasses.replace(a, id=10 + a.id, uid=f"{a.uid}-img") for a in image_articles()],
            make_article(30, f"dirty{dirty}", body=f"<p>b{dirty}</p>", summary=f"s{dirty}", author=f"a{dirty}",
                         image=f"https://img.example.org/{dirty}.png", date=T0 - timedelta(days=3)),
            make_article(31, "", link=None, summary="", author="", date=T0 - timedelta(days=4))]


@pytest.mark.parametrize("fmt", ["rss", "atom"])
@pytest.mark.parametrize("number, archives", [(None, 0), (None, 3), (1, 3), (2, 3)])
@pytest.mark.parametrize("hub", [None, "https://hub.example.net/"])
def test_reused_entries_give_the_bytes_feedgen_writes_for_the_whole_page(fmt, number, archives, hub):
    site = Site(base_url=BASE_URL, title=SITE, hub=hub, source_urls={"财联社": "https://www.cls.cn/rss"})
    articles = varied_articles()
    for axis, key in (("category", "金融"), ("all", ""), ("channel", "深度")):
        feed = feed_def(axis, key, site_title=SITE, limit=50, ttl=15)
        cache = EntryCache()  # shared by the pages, as in a publish run
        for items in (articles, articles[::2], articles[:1], []):
            page = Page(feed=feed, items=tuple(items), number=number, archives=archives)
            composed, _ = render_page(page, site, fmt, cache)
            assert composed.data == feedgen_whole(page, site, fmt)
            assert (render_rss if fmt == "rss" else render_atom)(page, site) == composed.data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(st.text(max_size=30), min_size=4, max_size=4), image=st.none() | url_tail)
def test_reused_entries_match_feedgen_whatever_the_text(texts, image):
    title, body, summary, author = texts
    articles = [make_article(1, title, body=f"<p>{body}</p>", summary=summary, author=author,
                             image=None if image is None else f"https://img.example.org/{image}"),
                make_article(2, "next", date=T0 - timedelta(hours=1))]
    for fmt in ("rss", "atom"):
        page = page_of(articles)
        assert render_page(page, SITE_INFO, fmt)[0].data == feedgen_whole(page, SITE_INFO, fmt)


any_text = st.text(max_size=12) | st.sampled_from(["", " ", "\x00", "\ud800", "a\x0bb", "<b>&amp;</b>", "金融", "\r\n"])
any_moment = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                          timezones=st.none() | st.sampled_from([UTC, timezone(timedelta(hours=8)),
                                                                 timezone(timedelta(hours=-5, minutes=-30))]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.fixed_dictionaries({
    "title": any_text, "summary": any_text, "author": any_text, "body_html": any_text, "source": any_text,
    "category": any_text, "channel": st.none() | any_text, "link": st.none() | any_text,
    "image": st.none() | any_text.map(lambda t: f"https://img.example.org/{t}"), "date": any_moment,
    "updated": any_moment}),
       source_url=st.none() | st.just("\x00") | any_text.map(lambda t: f"https://src.example.org/{t}"))
def test_entries_built_with_lxml_are_the_entries_feedgen_builds(fields, source_url):
    """rss_item / atom_entry against feedgen's FeedEntry for any field, empty, dirty or
    missing, any date (naive, other offsets, microseconds, years 1..9999) and a source
    with or without a feed URL."""
    article = dataclasses.replace(make_article(1, "t"), **fields)
    site = Site(base_url=BASE_URL, title=SITE, source_urls={} if source_url is None else {article.source: source_url})
    for fmt in ("rss", "atom"):
        page = page_of([article, make_article(2, "next", date=T0 - timedelta(hours=1))], site=site)
        assert render_page(page, site, fmt)[0].data == feedgen_whole(page, site, fmt)


def test_the_feed_renderer_imports_in_a_fresh_interpreter():
    """feedgen.util reads ``lxml.etree`` after a bare ``import lxml``: it fails unless
    lxml.etree was imported first, which the test process always has by now."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import aggregator.publish.feeds"], capture_output=True, text=True,
                          timeout=60, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr


def test_an_entry_is_built_once_per_run_and_format(monkeypatch):
    from aggregator.publish import feeds

    calls = {"rss_item": 0, "atom_entry": 0}
    for name in calls:
        original = getattr(feeds, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(feeds, name, counting)
    articles = varied_articles()
    cache = EntryCache()
    for fmt in ("rss", "atom"):
        for items in (articles, articles[:3], articles[2:]):
            render_page(page_of(items), SITE_INFO, fmt, cache)
    assert calls == {"rss_item": len(articles), "atom_entry": len(articles)}


def test_empty_feed_is_dated_epoch():
    rss = parsed(rss_of([], "空"))
    atom = parsed(atom_of([], "空"))
    assert rss.entries == [] and atom.entries == []
    epoch = EPOCH.timetuple()[:6]
    assert tuple(rss.feed.updated_parsed)[:6] == epoch
    assert tuple(atom.feed.updated_parsed)[:6] == epoch


def test_limit_keeps_the_newest_and_breaks_ties_by_id(tmp_path):
    articles = [make_article(i, f"a{i}", date=T0 + timedelta(hours=i // 2)) for i in range(7)]
    publish(tmp_path, {"金融": articles}, base_url=BASE_URL, limit=3)
    feed = parsed((tmp_path / "category/金融.rss.xml").read_bytes())
    assert [e.title for e in feed.entries] == ["a6", "a5", "a4"]


def test_illegal_characters_do_not_kill_the_feed(tmp_path):
    dirty = "\x00\x0b\x1b\ufffe\ud800"
    articles = [
        make_article(1, f"bad{dirty}title", body=f"<p>body{dirty}text</p>",
                     author=f"au{dirty}thor", summary=f"sum{dirty}mary",
                     link=f"https://x.example/{dirty}1", channel=f"ch{dirty}",
                     image=f"https://img.example.org/{dirty}1.png", category=f"金融{dirty}",
                     source=f"源{dirty}"),
        make_article(2, "good", date=T0 - timedelta(hours=1), category=f"金融{dirty}"),
        make_article(3, "emoji from a pair \ud83d\ude00", date=T0 - timedelta(hours=2), category=f"金融{dirty}"),
    ]
    result = publish(tmp_path, {f"金融{dirty}": articles}, base_url=BASE_URL)
    assert result.skipped == () and result.failed == ()
    feed = feed_def("category", f"金融{dirty}", site_title=SITE, limit=50, ttl=15)
    for rel in (feed.path("rss"), feed.path("atom")):
        data = (tmp_path / rel).read_bytes()
        etree.fromstring(data)  # well-formed
        feed = parsed(data)
        assert [e.title for e in feed.entries] == ["badtitle", "good", "emoji from a pair 😀"]
        assert visible_text(feed.entries[0].content[0].value) == "bodytext"
        assert feed.entries[0].author == "author"
        assert feed.entries[0].media_thumbnail[0]["url"] == "https://img.example.org/1.png"
    post = render_post(articles[0])
    assert frontmatter.loads(post)["title"] == "badtitle"
    post.encode("utf-8")


def test_an_item_that_still_fails_is_skipped_with_a_warning(tmp_path, monkeypatch, caplog):
    # Stands in for a refusal we do not foresee: lxml rejects one item's text; the feed
    # must still be written with the others.
    from aggregator.publish import feeds

    for name in ("rss_item", "atom_entry"):
        original = getattr(feeds, name)

        def failing(article, site, _original=original):
            if article.title == "boom":
                raise ValueError("All strings must be XML compatible")
            return _original(article, site)

        monkeypatch.setattr(feeds, name, failing)
    articles = [make_article(1, "boom"), make_article(2, "fine")]
    with caplog.at_level(logging.WARNING, logger="aggregator.publish.feeds"):
        result = publish(tmp_path, {"金融": articles}, base_url=BASE_URL)
    # the item is in four feeds (all, its category, source and channel), each in RSS and Atom
    assert len(result.skipped) == 8 and all("left out" in m for m in result.skipped)
    assert sum("left out" in r.getMessage() for r in caplog.records) == 8
    for rel in ("category/金融.rss.xml", "category/金融.atom.xml", "all.rss.xml"):
        assert [e.title for e in parsed((tmp_path / rel).read_bytes()).entries] == ["fine"]


def test_rendering_restores_the_locale():
    before = locale.setlocale(locale.LC_ALL)
    rss_of(golden_articles()["金融"])
    assert locale.setlocale(locale.LC_ALL) == before


# --- publish: determinism, incremental, OPML --------------------------------------------


def test_publish_is_deterministic_and_does_not_rewrite_unchanged_files(tmp_path):
    first = publish_golden(tmp_path / "a")
    files = tree(tmp_path / "a")
    assert sorted(first.written) == sorted(files) and first.unchanged == ()
    mtimes = {rel: (tmp_path / "a" / rel).stat().st_mtime_ns for rel in files}
    # without the previous state every page is rendered again: same bytes, nothing written
    second = publish_golden(tmp_path / "a")
    assert second.written == () and sorted(second.unchanged) == sorted(files)
    assert second.rendered == len(first.done) and second.kept == 0
    assert {rel: (tmp_path / "a" / rel).stat().st_mtime_ns for rel in files} == mtimes
    assert tree(tmp_path / "a") == files
    # another folder, groups and articles in another order: the same bytes
    groups = {k: list(reversed(v)) for k, v in reversed(list(golden_articles().items()))}
    publish(tmp_path / "b", groups, base_url=BASE_URL, site_title=SITE)
    assert tree(tmp_path / "b") == files
    # no temporary file is left behind anywhere
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def states(result) -> dict:
    return {o.path: o for o in result.done}


def test_incremental_publish_renders_only_pages_whose_articles_changed(tmp_path):
    first = publish_golden(tmp_path)
    assert first.kept == 0 and first.failed == ()
    same = publish_golden(tmp_path, previous=states(first))
    assert same.rendered == 0 and same.kept == len(first.done) and same.written == ()

    groups = golden_articles()
    edited = dataclasses.replace(groups["Tech News"][0], body_html="<p>new text</p>", content_hash="hash-new",
                                 updated=T0 + timedelta(days=5))
    groups["Tech News"] = [edited, groups["Tech News"][1]]
    result = publish(tmp_path, groups, base_url=BASE_URL, site_title=SITE, previous=states(first))
    # the edited article is in: everything, its category, its source (no channel)
    stems = ["all", f"category/{slug('Tech News')}", f"source/{slug('Example Blog')}"]
    assert result.rendered == 3 and result.kept == len(first.done) - 3
    feeds = sorted(f"{stem}{ext}" for stem in stems for ext in (".rss.xml", ".atom.xml", ".json"))
    assert sorted(result.written) == sorted([*feeds, "index.html"])  # the index shows last updates
    assert sorted(result.changed_feeds) == feeds
    assert "index.opml" in result.unchanged

    # a file deleted behind our back is rendered again even though its signature is known
    (tmp_path / "category/金融.json").unlink()
    again = publish(tmp_path, groups, base_url=BASE_URL, site_title=SITE,
                    previous={**states(first), **states(result)})
    assert again.rendered == 1 and again.written == ("category/金融.json",)


def test_pages_of_vanished_feeds_are_removed_and_nothing_else(tmp_path):
    first = publish_golden(tmp_path)
    (tmp_path / "category" / "notes.txt").write_text("the operator's own file")
    groups = golden_articles()
    del groups["Tech News"]
    result = publish(tmp_path, groups, base_url=BASE_URL, site_title=SITE, previous=states(first))
    gone = {f"category/{slug('Tech News')}", f"source/{slug('Example Blog')}", f"channel/{slug('Releases')}"}
    assert set(result.gone) == gone
    for stem in gone:
        for ext in (".rss.xml", ".atom.xml", ".json"):
            assert not (tmp_path / f"{stem}{ext}").exists()
    assert (tmp_path / "category" / "notes.txt").read_text() == "the operator's own file"
    assert (tmp_path / "category/金融.rss.xml").is_file()


def test_opml_lists_every_feed_once_grouped_by_axis(tmp_path):
    result = publish_golden(tmp_path)
    root = etree.fromstring((tmp_path / "index.opml").read_bytes())
    assert root.get("version") == "2.0"
    assert root.findtext("head/title") == SITE
    folders = root.findall("body/outline")
    assert [f.get("text") for f in folders] == ["Everything", "By category", "By source", "By channel"]
    categories = [o.get("text") for o in folders[1]]
    assert categories == [f"{SITE} · {c}" for c in sorted(golden_articles())]
    listed = []
    for outline in root.iter("outline"):
        if outline.get("xmlUrl") is None:
            continue
        assert outline.get("type") == "rss" and outline.get("version") == "RSS"
        assert outline.get("htmlUrl") == BASE_URL + "index.html"
        url = outline.get("xmlUrl")
        assert url.isascii() and url.startswith(BASE_URL)
        listed.append(unquote(url[len(BASE_URL):]))
    current_rss = sorted(p for p in result.written if p.endswith(".rss.xml") and not p.startswith("archive/"))
    assert sorted(listed) == current_rss


# --- archives (RFC 5005) ----------------------------------------------------------------

HISTORY = "{http://purl.org/syndication/history/1.0}"


def follow_archives(output_dir: Path, rel_path: str) -> list[str]:
    """Titles of every entry a reader can reach from the subscription document by
    following prev-archive links, as RFC 5005 §4 describes, each once."""
    seen: dict[str, str] = {}
    while rel_path:
        data = (output_dir / rel_path).read_bytes()
        root = etree.fromstring(data)
        for entry in parsed(data).entries:
            seen.setdefault(entry.id, entry.title)
        links = root.findall(f".//{ATOM}link[@rel='prev-archive']")
        assert len(links) <= 1
        rel_path = unquote(links[0].get("href")[len(BASE_URL):]) if links else ""
    return sorted(seen.values())


@pytest.mark.parametrize("fmt", ["rss", "atom"])
def test_archives_let_a_reader_backfill_beyond_the_newest_items(tmp_path, fmt):
    articles = [make_article(i, f"a{i:02d}", date=T0 + timedelta(hours=i)) for i in range(1, 12)]
    publish(tmp_path, {"金融": articles}, base_url=BASE_URL, site_title=SITE, limit=4)
    current = f"category/金融{'.rss.xml' if fmt == 'rss' else '.atom.xml'}"
    assert len(parsed((tmp_path / current).read_bytes()).entries) == 4
    # 11 articles, 4 a page: two full archive pages (a01-a04, a05-a08); a09-a11 are the
    # newest and in the current document
    assert follow_archives(tmp_path, current) == sorted(a.title for a in articles)
    ext = ".rss.xml" if fmt == "rss" else ".atom.xml"
    first = etree.fromstring((tmp_path / f"archive/category/金融/1{ext}").read_bytes())
    assert first.find(f".//{HISTORY}archive") is not None
    rels = {link.get("rel"): unquote(link.get("href")) for link in first.iter(f"{ATOM}link")}
    assert rels["current"] == BASE_URL + f"category/金融{ext}"
    assert rels["next-archive"] == BASE_URL + f"archive/category/金融/2{ext}"
    assert "prev-archive" not in rels
    assert not (tmp_path / f"archive/category/金融/3{ext}").exists()
    titles = [e.title for e in parsed((tmp_path / f"archive/category/金融/1{ext}").read_bytes()).entries]
    assert titles == ["a04", "a03", "a02", "a01"]
    current_root = etree.fromstring((tmp_path / current).read_bytes())
    assert current_root.find(f".//{HISTORY}archive") is None


def test_a_feed_that_never_overflowed_has_no_archive(tmp_path):
    articles = [make_article(i, f"a{i}", date=T0 + timedelta(hours=i)) for i in range(1, 5)]
    publish(tmp_path, {"金融": articles}, base_url=BASE_URL, site_title=SITE, limit=4)
    assert not (tmp_path / "archive").exists()
    root = etree.fromstring((tmp_path / "category/金融.atom.xml").read_bytes())
    assert root.find(f"{ATOM}link[@rel='prev-archive']") is None


def test_a_full_archive_page_never_changes_when_newer_articles_arrive(tmp_path):
    articles = [make_article(i, f"a{i:02d}", date=T0 + timedelta(hours=i)) for i in range(1, 10)]
    first = publish(tmp_path, {"金融": articles}, base_url=BASE_URL, site_title=SITE, limit=4)
    assert {p.name for p in (tmp_path / "archive/category/金融").iterdir()} >= {"1.atom.xml", "2.atom.xml"}
    assert not (tmp_path / "archive/category/金融/3.atom.xml").exists()
    page1 = (tmp_path / "archive/category/金融/1.atom.xml").read_bytes()
    more = articles + [make_article(i, f"a{i:02d}", date=T0 + timedelta(hours=i)) for i in range(10, 14)]
    second = publish(tmp_path, {"金融": more}, base_url=BASE_URL, site_title=SITE, limit=4, previous=states(first))
    assert (tmp_path / "archive/category/金融/1.atom.xml").read_bytes() == page1
    assert not any(p.startswith("archive/category/金融/1.") for p in second.written)
    assert second.kept >= 1  # page 1 was not even rendered
    # page 2 gains its next-archive link to the new page 3
    assert "archive/category/金融/2.atom.xml" in second.written
    assert (tmp_path / "archive/category/金融/3.atom.xml").is_file()


# --- custom feeds ([[feeds]]) -----------------------------------------------------------


def filter_articles() -> dict[str, list[StoredArticle]]:
    return {
        "金融": [
            make_article(1, "央行降准 利好", body="<p>货币政策宽松</p>"),
            make_article(2, "【广告】理财产品推荐", body="<p>限时优惠</p>", date=T0 - timedelta(hours=1)),
            make_article(3, "股市收盘", body="<p>沪指上涨，央行表态</p>", date=T0 - timedelta(hours=2),
                         author="记者甲"),
        ],
        "Tech": [
            make_article(4, "Python 3.14 released", category="Tech", source="Blog", channel=None,
                         body="<p>New release of CPython</p>", author="Guido"),
            make_article(5, "Sponsored: buy our cloud", category="Tech", source="Blog", channel=None,
                         date=T0 - timedelta(hours=3), body="<p>advertisement</p>"),
        ],
    }


def custom_titles(tmp_path: Path, *rules: FeedRule) -> dict[str, list[str]]:
    publish(tmp_path, filter_articles(), base_url=BASE_URL, site_title=SITE, rules=rules)
    return {r.name: [e.title for e in parsed((tmp_path / f"custom/{r.name}.rss.xml").read_bytes()).entries]
            for r in rules}


def test_custom_feeds_select_and_filter_like_rsshub(tmp_path):
    got = custom_titles(
        tmp_path,
        FeedRule(name="everything"),
        FeedRule(name="finance-no-ads", categories=("金融",), exclude=(("title", "广告"),)),
        FeedRule(name="central-bank", include=(("any", "央行"),)),  # title or text
        FeedRule(name="bank-in-text", include=(("text", "央行"),)),
        FeedRule(name="by-author", include=(("author", "^guido$"),)),  # case-insensitive by default
        FeedRule(name="by-author-cs", include=(("author", "^guido$"),), case_sensitive=True),
        FeedRule(name="blog-or-channel", sources=("Blog",), channels=("深度",), exclude=(("any", "sponsored|广告"),)),
        FeedRule(name="two", limit=2, title="Just two"),
    )
    # newest first; 央行降准 and Python share a date, the later stored (id 4) comes first
    assert got["everything"] == ["Python 3.14 released", "央行降准 利好", "【广告】理财产品推荐", "股市收盘",
                                 "Sponsored: buy our cloud"]
    assert got["finance-no-ads"] == ["央行降准 利好", "股市收盘"]
    assert got["central-bank"] == ["央行降准 利好", "股市收盘"]
    assert got["bank-in-text"] == ["股市收盘"]
    assert got["by-author"] == ["Python 3.14 released"]
    assert got["by-author-cs"] == []
    assert got["blog-or-channel"] == ["Python 3.14 released", "央行降准 利好", "股市收盘"]
    assert got["two"] == ["Python 3.14 released", "央行降准 利好"]
    two = parsed((tmp_path / "custom/two.atom.xml").read_bytes())
    assert two.feed.title == "Just two"
    opml = etree.fromstring((tmp_path / "index.opml").read_bytes())
    assert opml.findall("body/outline")[-1].get("text") == "Custom feeds"


# --- validation before swap -------------------------------------------------------------


def test_a_document_that_fails_validation_is_not_published_and_the_last_good_one_stays(tmp_path, caplog):
    good = [make_article(1, "good", date=T0)]
    first = publish(tmp_path, {"金融": good}, base_url=BASE_URL, site_title=SITE)
    before = (tmp_path / "category/金融.rss.xml").read_bytes()
    # RSS 2.0 dates are RFC 822, whose years have four digits at most in practice, and
    # readers refuse year 1: such a date (a broken upstream clock, an importer's default)
    # must not reach subscribers.
    bad = good + [make_article(2, "year one", date=datetime(1, 1, 1, tzinfo=UTC))]
    with caplog.at_level(logging.ERROR, logger="aggregator.publish.site"):
        result = publish(tmp_path, {"金融": bad}, base_url=BASE_URL, site_title=SITE, previous=states(first))
    failed = dict(result.failed)
    assert "category/金融" in failed and "category/金融.rss.xml" in failed["category/金融"]
    assert "category/金融" not in states(result)  # no signature: tried again next time
    assert (tmp_path / "category/金融.rss.xml").read_bytes() == before
    assert "category/金融.rss.xml" not in result.written
    assert any("not published" in r.getMessage() for r in caplog.records)
    # the other formats of the same page still went out
    atom = parsed((tmp_path / "category/金融.atom.xml").read_bytes())
    assert [e.title for e in atom.entries] == ["good", "year one"]


def test_a_file_that_cannot_be_written_fails_its_page_and_no_other(tmp_path, caplog):
    """Writes run on threads while later pages render: a failed one is still reported for
    its own page, in order, and the other pages are published."""
    (tmp_path / "channel").write_text("a file where the channel feeds' folder would be")
    with caplog.at_level(logging.ERROR, logger="aggregator.publish.site"):
        result = publish_golden(tmp_path)
    failed = dict(result.failed)
    channels = {a.channel for group in golden_articles().values() for a in group if a.channel}
    assert sorted(failed) == sorted(f"channel/{slug(c)}" for c in channels)
    assert all("cannot write" in why for why in failed.values())
    assert not set(states(result)) & set(failed)
    assert all(not p.startswith("channel/") for p in result.written)
    assert {"all.rss.xml", "category/金融.json", "source/财联社.atom.xml"} <= set(result.written)
    assert sum("not published" in r.getMessage() for r in caplog.records) == 3 * len(failed)


def test_a_file_that_cannot_be_swapped_in_fails_its_page_and_no_other(tmp_path, caplog):
    """Documents are written beside their files while the pages render and swapped in
    together at the end: a rename that fails there (a folder where the file should be) is
    still reported for its own page, and that page keeps no signature."""
    (tmp_path / "all.rss.xml").mkdir()
    with caplog.at_level(logging.ERROR, logger="aggregator.publish.site"):
        result = publish_golden(tmp_path)
    assert [page for page, _why in result.failed] == ["all"]
    assert "cannot write" in dict(result.failed)["all"] and "all.rss.xml" in dict(result.failed)["all"]
    assert "all" not in states(result) and "all.rss.xml" not in result.written
    assert {"all.atom.xml", "all.json", "category/金融.rss.xml"} <= set(result.written)
    assert (tmp_path / "all.rss.xml").is_dir() and temporary_files(tmp_path) == []


def test_worker_processes_publish_the_same_files_and_report_the_same(tmp_path):
    """A large publish renders RSS and Atom in the pipeline's worker processes, JSON here;
    files, their order in the result, refusals and skipped items must not depend on it."""
    from aggregator.publish.site import PARALLEL_PAGES
    from aggregator.work import make_pool

    groups = {f"cat{k}": [make_article(10 * k + j, f"a{k}-{j}", category=f"cat{k}", source=f"src{k}",
                                       channel=f"ch{k % 3}", date=T0 - timedelta(hours=10 * k + j),
                                       image=f"https://img.example.org/{k}-{j}.png" if j else None)
                          for j in range(3)] for k in range(10)}
    # refused in RSS (year 1), fine in Atom and JSON: its pages fail, the others go out
    groups["cat0"].append(make_article(5, "year one", category="cat0", source="src0", channel="ch0",
                                       date=datetime(1, 1, 1, tzinfo=UTC)))
    serial = publish(tmp_path / "serial", groups, limit=2)
    with make_pool(2) as pool:
        parallel = publish(tmp_path / "parallel", groups, limit=2, executor=pool, workers=2)
    assert parallel.rendered >= PARALLEL_PAGES and parallel.failed
    assert parallel == serial
    assert tree(tmp_path / "parallel") == tree(tmp_path / "serial")



def test_the_package_names_resolve_lazily_and_a_feed_worker_imports_no_yaml():
    # aggregator.publish imports each stage when one of its names is first used, so a
    # worker process rendering RSS or Atom never loads the posts' YAML stack
    import aggregator.publish as publish

    assert sorted(publish.__all__) == sorted(publish._MODULE_OF)
    for name in publish.__all__:
        assert getattr(publish, name) is getattr(importlib.import_module(f"aggregator.publish.{publish._MODULE_OF[name]}"),
                                                 name)
    with pytest.raises(AttributeError):
        publish.no_such_name  # noqa: B018
    code = ("import sys, aggregator.publish.site, aggregator.publish.feeds, aggregator.publish.validate, "
            "aggregator.publish.json_feed, aggregator.store; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('yaml', 'frontmatter') "
            "or m == 'aggregator.publish.posts'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"
