"""JSON Feed 1.1 output (aggregator/publish/json_feed.py).

The documents are checked against a JSON Schema written from the 1.1 spec
(tests/jsonfeed-1.1.schema.json), read back by a JSON Feed reader, compared with their
RSS twin as feedparser reads it, and held to the validator the publisher runs before
every swap. The reader is our own parse stage (``aggregator.parse.parse_feed``, itself
tested on the shared corpus): feedparser 6.0.14 has no JSON Feed support, and the
``reader`` library's copy of feedparser cannot be imported here (it needs ``sgmllib``).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import feedparser
import jsonschema
import lxml.html
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.models import ArticleRef, StoredArticle
from aggregator.parse import parse_feed
from aggregator.publish import Page, Site, feed_def, plan_site, render_rss
from aggregator.publish.json_feed import compose_json, render_json, rfc3339
from aggregator.publish.posts import strip_illegal_chars
from aggregator.publish.validate import validate

SCHEMA = json.loads((Path(__file__).parent / "jsonfeed-1.1.schema.json").read_text("utf-8"))
BASE_URL = "https://news.example.org/feeds/"
SITE = Site(base_url=BASE_URL, title="Aggregator")
T0 = datetime(2021, 11, 10, 11, 50, 52, tzinfo=UTC)
# category/金融 as pages.py lays it out, percent-encoded by hand
STEM_URL = BASE_URL + "category/%E9%87%91%E8%9E%8D"
ARCHIVE_URL = BASE_URL + "archive/category/%E9%87%91%E8%9E%8D/"


def article(id: int, title: str = "", *, category: str = "金融", source: str = "财联社",
            channel: str | None = "深度", date: datetime = T0, updated: datetime | None = None,
            body: str = "<p>body</p>", summary: str = "", link: str | None = "auto", author: str = "",
            image: str | None = None) -> StoredArticle:
    """A stored article as the store would hand it to the publisher."""
    uid = hashlib.md5(f"article-{id}".encode()).hexdigest()
    return StoredArticle(
        id=id, uid=uid, source=source, category=category, channel=channel, guid=f"guid-{id}",
        link=f"https://origin.example.com/a/{id}" if link == "auto" else link,
        title=title or f"Article {id}", author=author or source, date=date, image=image, body_html=body,
        summary=summary, content_hash=f"hash-{id}", first_seen=date, updated=updated or date,
        post_name=f"{id}.md",
    )


def sample_articles() -> list[StoredArticle]:
    return [
        article(1, "央行：保持流动性合理充裕", body="<p>财联社11月10日讯，央行今日开展逆回购操作。</p>",
                summary="财联社11月10日讯，央行今日开展逆回购操作。", link="https://www.cls.cn/detail/889356"),
        article(2, "1e3", channel=None, date=T0 + timedelta(hours=2),
                body="<p>Template {{ 7*7 }} &amp; {% if %}</p>", summary="Braces {x} & <b>tags</b> in text"),
        article(3, "Café ‘quotes’ & “more”", category="Tech News", source="Example Blog", channel="Releases",
                date=T0 - timedelta(days=1), updated=T0 + timedelta(days=3, microseconds=5),
                body='<p>Edited <a href="https://example.com/x?a=1&amp;b=2">link</a> 🙂</p>',
                summary="Edited link 🙂", author="Jane Doe", image="https://img.example.org/cover.png"),
        article(4, "No link, same category twice", category="深度", link=None,
                date=T0 + timedelta(hours=1), body="<pre>line 1\n\nline 3</pre>"),
    ]


def page_of(articles, *, number: int | None = None, archives: int = 0, site: Site = SITE) -> Page:
    feed = feed_def("category", "金融", site_title=site.title, limit=50, ttl=15)
    return Page(feed=feed, items=tuple(articles), number=number, archives=archives)


def newest_first(articles):
    return sorted(articles, key=lambda a: (a.date, a.id), reverse=True)


# --- the schema, with format checkers (jsonschema ships none for iri and date-time) ------

_RFC3339 = re.compile(  # RFC 3339 §5.6 date-time, upper-case T/Z as JSON Feed's examples
    r"(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        return False
    date.fromisoformat(value[:10])  # raises ValueError for 31 February: not a date
    return True


@FORMATS.checks("iri", raises=ValueError)
def _is_iri(value: object) -> bool:
    """An absolute http(s) URL with a host, non-ASCII allowed (an IRI), none of the ASCII
    characters the WHATWG URL parser percent-encodes or drops (controls, space, ``"<>`{}``).
    That is the promise of ``feed_image_url``; ``|``, ``^``, ``[``, ``]`` and ``\\`` in a
    path are left as the source wrote them (WHATWG parsers fetch them; RFC 3986 would not)."""
    if not isinstance(value, str) or re.search(r"[\x00-\x20\x7f<>\"{}`]", value):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


VALIDATOR = jsonschema.Draft202012Validator(SCHEMA, format_checker=FORMATS)


def schema_errors(doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def test_the_schema_is_a_valid_schema_and_refuses_what_the_spec_refuses():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    good = json.loads(render_json(page_of(sample_articles()), SITE))
    assert schema_errors(good) == []
    item = good["items"][0]
    broken = {
        "no items": {k: v for k, v in good.items() if k != "items"},
        "1.0 version": {**good, "version": "https://jsonfeed.org/version/1"},
        "item without id": {**good, "items": [{k: v for k, v in item.items() if k != "id"}]},
        "item without content": {**good, "items": [{k: v for k, v in item.items() if k != "content_html"}]},
        "date without zone": {**good, "items": [{**item, "date_published": "2021-11-10T11:50:52"}]},
        "31 February": {**good, "items": [{**item, "date_modified": "2021-02-31T11:50:52Z"}]},
        "relative url": {**good, "items": [{**item, "url": "/a/1"}]},
        "author without fields": {**good, "authors": [{}]},
        "hub without url": {**good, "hubs": [{"type": "WebSub"}]},
        "misspelt field": {**good, "items": [{**item, "contnet_html": "x"}]},
        "tags not strings": {**good, "items": [{**item, "tags": [1]}]},
    }
    for name, doc in broken.items():
        assert schema_errors(doc), name


def test_document_matches_the_schema_with_the_top_level_fields():
    site = Site(base_url=BASE_URL, title="Aggregator", hub="https://hub.example.net/",
                source_urls={"财联社": "https://www.cls.cn/rss"})
    data = render_json(page_of(sample_articles(), site=site), site)
    doc = json.loads(data)
    assert schema_errors(doc) == []
    validate("category/金融.json", data)
    assert list(doc) == ["version", "title", "home_page_url", "feed_url", "description", "authors", "hubs", "items"]
    assert doc["version"] == "https://jsonfeed.org/version/1.1"
    assert doc["title"] == "Aggregator · 金融"
    assert doc["home_page_url"] == BASE_URL + "index.html"
    assert doc["feed_url"] == STEM_URL + ".json"
    assert "金融" in doc["description"]
    assert doc["authors"] == [{"name": "Aggregator"}]
    assert doc["hubs"] == [{"type": "WebSub", "url": "https://hub.example.net/"}]
    # bytes: UTF-8 without BOM, CJK written as characters, compact, one final newline
    assert data.startswith(b'{"version":') and data.endswith(b"}\n") and data.count(b"\n") == 1
    assert "央行".encode() in data and b"\\u" not in data


def test_items_carry_every_field_in_a_fixed_order():
    site = Site(base_url=BASE_URL, title="Aggregator", source_urls={"Example Blog": "https://blog.example.com/feed"})
    articles = sample_articles()
    doc = json.loads(render_json(page_of(articles, site=site), site))
    items = {i["id"]: i for i in doc["items"]}
    a3 = items[articles[2].feed_id]
    assert list(a3) == ["id", "url", "title", "content_html", "summary", "image", "date_published",
                        "date_modified", "authors", "tags", "_source"]
    assert a3["id"].startswith("urn:uuid:")
    assert a3["url"] == "https://origin.example.com/a/3"
    assert a3["title"] == "Café ‘quotes’ & “more”"
    assert a3["content_html"] == articles[2].body_html
    assert a3["summary"] == "Edited link 🙂"
    assert a3["image"] == "https://img.example.org/cover.png"
    assert a3["date_published"] == "2021-11-09T11:50:52Z"
    assert a3["date_modified"] == "2021-11-13T11:50:52Z"  # microseconds dropped
    assert a3["authors"] == [{"name": "Jane Doe"}]
    assert a3["tags"] == ["Tech News", "Example Blog", "Releases"]
    assert a3["_source"] == {"title": "Example Blog", "feed_url": "https://blog.example.com/feed"}
    a4 = items[articles[3].feed_id]
    # no link, no summary, no image: the fields are left out (never a placeholder picture)
    assert "url" not in a4 and "summary" not in a4 and "image" not in a4
    assert a4["tags"] == ["深度", "财联社"]  # category and channel both "深度": listed once
    assert a4["authors"] == [{"name": "财联社"}]
    assert a4["_source"] == {"title": "财联社"}  # no configured feed URL: the name alone


def test_round_trip_through_a_json_feed_reader():
    articles = sample_articles()
    data = render_json(page_of(articles), SITE)
    parsed = parse_feed(data, [("content-type", "application/feed+json")], STEM_URL + ".json")
    assert parsed.version == "json11"
    assert parsed.title == "Aggregator · 金融"
    assert parsed.link == BASE_URL + "index.html"
    expected = newest_first(articles)
    assert [e.guid for e in parsed.entries] == [a.feed_id for a in expected]
    for entry, a in zip(parsed.entries, expected):
        assert entry.title == a.title
        assert entry.link == a.link
        assert entry.content == a.body_html
        assert entry.published == a.date
        assert entry.updated == a.updated.replace(microsecond=0)
        assert entry.author == a.author
        assert list(entry.tags) == list(dict.fromkeys(a.categories))
        assert entry.image == a.image
        if a.summary:  # the reader drops a summary that only repeats the body
            text = lxml.html.fragment_fromstring(entry.summary or entry.content, create_parent="div").text_content()
            assert text == a.summary
        else:
            assert entry.summary is None


def test_json_and_rss_twins_carry_the_same_items():
    """feedparser reads the RSS twin; both must list the same articles, in the same order,
    with the same ids, titles, links and bodies."""
    articles = sample_articles()
    page = page_of(articles)
    doc = json.loads(render_json(page, SITE))
    rss = feedparser.parse(io.BytesIO(render_rss(page, SITE)), sanitize_html=False, resolve_relative_uris=False)
    assert rss.bozo == 0
    assert [(i["id"], i["title"], i.get("url"), i["content_html"]) for i in doc["items"]] == [
        (e.id, e.title, e.get("link"), e.content[0].value) for e in rss.entries]


def test_same_page_gives_the_same_bytes_whatever_the_item_order():
    articles = sample_articles()
    first = render_json(page_of(articles), SITE)
    assert render_json(page_of(articles), SITE) == first
    # The renderer sorts (date desc, id desc) as the RSS/Atom twins do, so a caller's order
    # never changes the bytes.
    assert render_json(page_of(list(reversed(articles))), SITE) == first
    ties = [article(i, date=T0) for i in (5, 9, 7)]
    doc = json.loads(render_json(page_of(ties), SITE))
    assert [i["id"] for i in doc["items"]] == [article(i).feed_id for i in (9, 7, 5)]


@pytest.mark.parametrize("number, archives", [(None, 0), (None, 2), (1, 2)])
def test_items_reused_across_pages_give_what_one_dump_of_the_page_writes(number, archives):
    """Each item is serialised once per run and joined into every page that holds it;
    the bytes are those of serialising the whole document at once (compact, UTF-8)."""
    site = Site(base_url=BASE_URL, title="Aggregator", hub="https://hub.example.net/",
                source_urls={"财联社": "https://www.cls.cn/rss"})
    articles = sample_articles()
    cache: dict = {}
    for items in (articles, articles[1:], articles[:1], []):
        page = page_of(items, number=number, archives=archives, site=site)
        data = compose_json(page, site, cache).data
        whole = json.dumps(json.loads(data), ensure_ascii=False, separators=(",", ":")) + "\n"
        assert data == whole.encode("utf-8")
        assert [i["id"] for i in json.loads(data)["items"]] == [a.feed_id for a in newest_first(items)]
        assert render_json(page, site) == data
    assert sorted(cache) == sorted(a.id for a in articles)


def test_empty_feed_is_valid_and_has_no_pagination():
    data = render_json(page_of([]), SITE)
    doc = json.loads(data)
    assert doc["items"] == [] and "next_url" not in doc and "_archive" not in doc
    assert schema_errors(doc) == []
    validate("category/金融.json", data)


@pytest.mark.parametrize("number, archives, next_url, archive", [
    # the current document: next_url (older items) is the newest archive page, when any
    (None, 0, None, None),
    (None, 3, ARCHIVE_URL + "3.json", None),
    # archive pages: next_url goes one page older; _archive mirrors the RFC 5005 links
    (3, 3, ARCHIVE_URL + "2.json",
     {"current": STEM_URL + ".json", "prev_archive": ARCHIVE_URL + "2.json"}),
    (2, 3, ARCHIVE_URL + "1.json",
     {"current": STEM_URL + ".json", "next_archive": ARCHIVE_URL + "3.json", "prev_archive": ARCHIVE_URL + "1.json"}),
    (1, 3, None, {"current": STEM_URL + ".json", "next_archive": ARCHIVE_URL + "2.json"}),
])
def test_next_url_points_at_older_items_and_archives_name_the_current_document(number, archives, next_url, archive):
    data = render_json(page_of(sample_articles(), number=number, archives=archives), SITE)
    doc = json.loads(data)
    assert doc.get("next_url") == next_url
    assert doc.get("_archive") == archive
    assert doc["feed_url"] == (STEM_URL + ".json" if number is None else f"{ARCHIVE_URL}{number}.json")
    assert doc["feed_url"] != doc.get("next_url")
    assert schema_errors(doc) == []
    validate("x.json", data)


def test_following_next_url_backfills_every_article_once(tmp_path):
    """The plan's pages, rendered: a reader starting at the current document and
    following next_url sees every article of the feed (RFC 5005 backfill, JSON style)."""
    articles = {i: article(i, date=T0 + timedelta(minutes=i)) for i in range(1, 26)}
    refs = [ArticleRef(id=a.id, source=a.source, sources=(a.source,), category=a.category, channel=a.channel,
                       title=a.title, author=a.author, date=a.date, updated=a.updated, content_hash=a.content_hash)
            for a in articles.values()]
    plan = plan_site(refs, [], [], site=SITE, items_per_feed=10, default_interval=900)
    docs = {}
    for job in plan.jobs:
        if job.feed.axis == "category":
            page = Page(feed=job.feed, items=tuple(articles[i] for i in job.ids), number=job.number,
                        archives=job.archives)
            docs[SITE.url(page.path("json"))] = json.loads(render_json(page, SITE))
    url, seen, visited = STEM_URL + ".json", [], []
    while url:
        visited.append(url)
        seen += [i["id"] for i in docs[url]["items"]]
        url = docs[url].get("next_url")
    assert visited == [STEM_URL + ".json", ARCHIVE_URL + "2.json", ARCHIVE_URL + "1.json"]
    assert set(seen) == {a.feed_id for a in articles.values()}
    assert len(docs) == 3


def test_illegal_characters_and_lone_surrogates_are_stripped():
    dirty = "\x00\x08\x0b\x1b\ufffe\uffff\ud800"
    bad = article(1, f"bad{dirty}title", body=f"<p>body{dirty}text</p>", summary=f"sum{dirty}mary",
                  author=f"au{dirty}thor", link=f"https://x.example/{dirty}1", channel=f"ch{dirty}",
                  image=f"https://img.example.org/{dirty}1.png")
    pair = article(2, "emoji from a pair \ud83d\ude00", date=T0 - timedelta(hours=1))
    site = Site(base_url=BASE_URL, title=f"Agg{dirty}", hub=f"https://hub.example.net/{dirty}",
                source_urls={"财联社": f"https://www.cls.cn/{dirty}rss"})
    data = render_json(page_of([bad, pair], site=site), site)
    validate("category/金融.json", data)
    text = data.decode("utf-8")  # strict: no surrogate made it into the bytes
    for ch in dirty:
        assert ch not in text and f"\\u{ord(ch):04x}" not in text
    doc = json.loads(text)
    assert schema_errors(doc) == []
    one, two = doc["items"]
    assert (one["title"], one["content_html"], one["summary"]) == ("badtitle", "<p>bodytext</p>", "summary")
    assert one["authors"] == [{"name": "author"}] and one["url"] == "https://x.example/1"
    assert one["tags"] == ["金融", "财联社", "ch"]
    assert one["image"] == "https://img.example.org/1.png"
    assert one["_source"] == {"title": "财联社", "feed_url": "https://www.cls.cn/rss"}
    assert two["title"] == "emoji from a pair 😀"
    assert doc["authors"] == [{"name": "Agg"}] and doc["hubs"][0]["url"] == "https://hub.example.net/"


def test_titles_and_authors_that_strip_to_nothing_fall_back():
    empty = article(1, "\x08 \x0b", author="\x1b", source="财联社")
    site = Site(base_url=BASE_URL, title="\x00")
    doc = json.loads(render_json(page_of([empty], site=site), site))
    assert doc["items"][0]["title"] == "(untitled)"
    assert doc["items"][0]["authors"] == [{"name": "财联社"}]
    assert doc["authors"] == [{"name": "aggregator"}]  # an author object needs a member


@pytest.mark.parametrize("moment, text", [
    (datetime(2021, 11, 10, 19, 50, 52, 999999, tzinfo=ZoneInfo("Asia/Shanghai")),
     "2021-11-10T11:50:52Z"),
    (datetime(2021, 11, 10, 11, 50, 52), "2021-11-10T11:50:52Z"),  # naive: taken as UTC
    (datetime(1, 1, 1, tzinfo=UTC), "0001-01-01T00:00:00Z"),  # four-digit year always
    (datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC), "9999-12-31T23:59:59Z"),
])
def test_dates_are_rfc3339_utc_with_z(moment, text):
    assert rfc3339(moment) == text
    assert _is_date_time(text)


# Any character, plus surrogates (st.characters() leaves them out) and the XML-illegal ones
# drawn often enough to meet them in every run.
ANY_TEXT = st.text(st.one_of(st.characters(), st.characters(categories=["Cs"]),
                              st.sampled_from("\x00\x08\x0b\x1b\ufffe\uffff")), max_size=40)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(title=ANY_TEXT, body=ANY_TEXT, summary=ANY_TEXT, author=ANY_TEXT, source=ANY_TEXT,
       channel=st.none() | ANY_TEXT, image=st.none() | ANY_TEXT.map("https://img.example.org/".__add__))
def test_any_text_gives_a_valid_document(title, body, summary, author, source, channel, image):
    a = article(1, title or "x", body=f"<p>{body}</p>", summary=summary, author=author, source=source or "s",
                channel=channel, image=image)
    site = Site(base_url=BASE_URL, title="Aggregator", source_urls={a.source: "https://src.example/feed"})
    data = render_json(page_of([a], site=site), site)
    validate("category/金融.json", data)
    doc = json.loads(data.decode("utf-8"))
    assert schema_errors(doc) == []
    assert doc["items"][0]["title"] == (strip_illegal_chars(a.title).strip() or "(untitled)")
    assert doc["items"][0]["content_html"] == strip_illegal_chars(a.body_html)
