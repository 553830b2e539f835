"""Tests for the parse stage (aggregator.parse, aggregator.jsonfeed).

Expectations are computed independently of our parser wherever they come from data: item
counts and titles with lxml / json / Python codecs, the fixture's fields with lxml.
"""

from __future__ import annotations

import http.server
import io
import json
import pickle
import re
import threading
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import feedparser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.errors import NotAFeedError, ParseError
from aggregator.models import FeedLink, ParsedFeed
from aggregator.parse import find_feed_links, looks_like_html, parse_feed
from tests.conftest import CORPUS, fixture_file

URL = "https://example.org/blog/feed.xml"

ITEM_NS = {None, "http://purl.org/rss/1.0/", "http://my.netscape.com/rdf/simple/0.9/",
           "http://backend.userland.com/rss2"}
ENTRY_NS = {"http://www.w3.org/2005/Atom", "http://purl.org/atom/ns#"}
XML_DECL = re.compile(rb"^\s*<\?xml[^>]*?encoding=[\"']([^\"']+)[\"'][^>]*\?>")


def corpus_files(kind: str):
    folder = CORPUS / kind
    if not folder.is_dir():
        reason = f"shared corpus not found at {CORPUS}; set AGGREGATOR_CORPUS"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-corpus")]
    return [pytest.param(p, id=p.name, marks=pytest.mark.corpus) for p in sorted(folder.iterdir())]


def lxml_root(body: bytes):
    """The document as lxml reads it. libxml2 lacks a few codecs (IBM855) and chokes on
    some Big5/TIS-620 bytes Python decodes, so fall back to Python's codec of the
    declared encoding and let lxml recover from HTML entities (RSS 0.91 DTD)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        return etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        declared = XML_DECL.match(body)
        text = (body[declared.end():].decode(declared.group(1).decode()) if declared
                else body.decode())
        return etree.fromstring(text, etree.XMLParser(recover=True, resolve_entities=False,
                                                      no_network=True))


def expected_items(path: Path) -> int:
    body = path.read_bytes()
    if path.suffix == ".json":
        return len(json.loads(body.decode("utf-8-sig")).get("items") or [])
    count = 0
    for el in lxml_root(body).iter(etree.Element):
        q = etree.QName(el)
        if (q.localname == "item" and q.namespace in ITEM_NS) or (
                q.localname == "entry" and q.namespace in ENTRY_NS):
            count += 1
    return count


def mentions_items(body: bytes) -> bool:
    """Whether an (ill-formed) file contains an item/entry start tag in any likely encoding."""
    pattern = re.compile(r"<(?:\w+:)?(?:item|entry)[\s>/]")
    return any(pattern.search(body.decode(enc, "ignore"))
               for enc in ("latin-1", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


def rss(items: str, channel: str = "", ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" {ns}><channel>'
            f"<title>T</title><link>https://example.org/</link>{channel}{items}"
            "</channel></rss>").encode()


# --- the corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("path", corpus_files("real"))
def test_real_file_parses_with_every_item(path):
    feed = parse_feed(path.read_bytes(), {}, URL)
    assert isinstance(feed, ParsedFeed)
    assert len(feed.entries) == expected_items(path)
    for entry in feed.entries:
        for stamp in (entry.published, entry.updated):
            assert stamp is None or stamp.utcoffset().total_seconds() == 0
    assert pickle.loads(pickle.dumps(feed)) == feed  # safe to return from a worker process


@pytest.mark.parametrize("path", corpus_files("illformed"))
def test_illformed_file_yields_entries_or_parse_error(path):
    body = path.read_bytes()
    try:
        feed = parse_feed(body, {}, URL)
    except ParseError as e:
        assert str(e)  # a message fit for list-sources
        return
    if mentions_items(body):
        assert feed.entries, "the file has items but none were read"


# --- the reference fixture -----------------------------------------------------------


def test_cls_depth_fixture_maps_every_field():
    body = fixture_file("cls-depth.rss.xml").read_bytes()
    item = etree.fromstring(body).find("channel/item")
    feed = parse_feed(body, [("content-type", "application/rss+xml; charset=utf-8")],
                      "https://rsshub.app/cls/depth/1000")
    assert feed.version == "rss20"
    assert feed.title == etree.fromstring(body).findtext("channel/title")
    assert feed.ttl_minutes == int(etree.fromstring(body).findtext("channel/ttl"))
    (entry,) = feed.entries
    assert entry.guid == item.findtext("guid")
    assert entry.link == item.findtext("link")
    assert entry.title == item.findtext("title")
    assert entry.published == parsedate_to_datetime(item.findtext("pubDate"))
    assert entry.published.tzinfo is not None and entry.updated is None
    assert entry.content == item.findtext("description")  # the full HTML, untouched
    assert entry.summary is None
    assert entry.base_url == item.findtext("link")


# --- hazards (HAZARDS.md, "Parsing") --------------------------------------------------


def test_a_path_as_body_is_not_opened(tmp_path):
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(rss("<item><title>secret</title></item>"))
    with pytest.raises(NotAFeedError):
        parse_feed(str(feed_file).encode(), {}, URL)


def test_etc_passwd_is_not_read():
    with pytest.raises(NotAFeedError) as caught:
        parse_feed(b"/etc/passwd", {}, URL)
    passwd = Path("/etc/passwd")
    lines = passwd.read_text(errors="replace").splitlines() if passwd.exists() else []
    assert not any(line and line in str(caught.value) for line in lines)


def test_a_url_as_body_is_not_fetched():
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            body = rss("<item><title>fetched</title></item>")
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for body in (f"http://127.0.0.1:{server.server_port}/x".encode(), b"http://127.0.0.1:1/x"):
            with pytest.raises(NotAFeedError):
                parse_feed(body, {}, URL)
    finally:
        server.shutdown()
        server.server_close()
    assert hits == []


# Five levels of ten: harmless (100,000 characters) if it were ever expanded, so a
# regression fails this test cleanly instead of exhausting memory.
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "ha">'
          + "".join(f'<!ENTITY {n} "{("&" + p + ";") * 10}">' for p, n in zip("abcd", "bcde"))
          + ']><rss version="2.0"><channel><title>&e;</title><item><title>&e;</title>'
            "</item></channel></rss>")


@pytest.mark.parametrize("body", [
    LAUGHS.encode(),
    LAUGHS.replace('"1.0"?>', '"1.0" encoding="utf-16"?>', 1).encode("utf-16"),  # with BOM
    LAUGHS.encode("utf-16-le"),  # no BOM, no declared encoding
    LAUGHS.replace("<!DOCTYPE rss [", "<!doctype rss [").encode("utf-32"),
], ids=["utf-8", "utf-16-bom", "utf-16le", "utf-32-lowercase"])
def test_entity_declarations_are_refused(body):
    with pytest.raises(ParseError, match="billion-laughs") as caught:
        parse_feed(body, {"Content-Type": "application/rss+xml"}, URL)
    assert not isinstance(caught.value, NotAFeedError)


def test_utf16_entity_declaration_is_invisible_to_a_bytes_check():
    assert b"<!ENTITY" not in LAUGHS.encode("utf-16-le")  # why the text check exists


# Numeric references to code points that are not XML 1.0 Chars (§2.2). feedparser raised
# on the first three (HAZARDS.md); all must now cost one character, not the whole feed.
INVALID_REFERENCES = ["&#xD800;", "&#xdfff;", "&#55296;", "&#x110000;", "&#1114112;",
                      "&#xFFFFFFFF;", "&#" + "9" * 5000 + ";", "&#0;", "&#x1;", "&#31;",
                      "&#xFFFE;", "&#xFFFF;", "&#X0;", "&#x0000000000000000000D800;"]


@pytest.mark.parametrize("reference", INVALID_REFERENCES,
                         ids=lambda r: r if len(r) < 30 else f"{r[:8]}…({len(r)} chars)")
def test_invalid_character_references_become_replacement_characters(reference):
    body = rss(f"<item><title>a{reference}b</title><description>x {reference} y</description>"
               "</item><item><title>fine</title></item>")
    feed = parse_feed(body, {}, URL)
    assert [e.title for e in feed.entries] == ["a\ufffdb", "fine"]
    assert feed.entries[0].content == "x \ufffd y"
    assert "replaced 2 invalid character references with U+FFFD" in feed.warnings


@pytest.mark.parametrize("code", [0x9, 0x41, 0xE9, 0xD7FF, 0xE000, 0xFFFD, 0x10000, 0x10FFFF])
def test_valid_character_references_are_kept(code):
    refs = [f"&#{code};", f"&#x{code:x};", f"&#x{code:08X};", f"&#{code:012d};"]
    body = rss("".join(f"<item><title>a{ref}b</title></item>" for ref in refs))
    feed = parse_feed(body, {}, URL)
    assert [e.title for e in feed.entries] == [f"a{chr(code)}b"] * len(refs)
    assert not any("character reference" in w for w in feed.warnings)


# feedparser 6.0.14 still raises on a well-formed feed with a GML position outside
# <georss:where> (KeyError 'where', namespaces/georss.py _end_gml_pos) and on a stray
# </width> in an RSS <image> (TypeError from int(None), namespaces/_base.py _end_width).
GML = 'xmlns:gml="http://www.opengis.net/gml"'


@pytest.mark.parametrize(("body", "cause"), [
    (rss("<item><title>x</title><gml:pos>1 2</gml:pos></item>", ns=GML), KeyError),
    (rss("<item><title>x</title></item>", channel="<image><url>x</url></width></image>"),
     TypeError),
])
def test_feedparser_crashes_become_parse_errors(body, cause):
    with pytest.raises(cause):  # the premise: if an upgrade fixes it, find another input
        feedparser.parse(io.BytesIO(body), response_headers={"content-type": "application/xml"})
    with pytest.raises(ParseError, match=f"could not be parsed: {cause.__name__}") as caught:
        parse_feed(body, {}, URL)
    assert not isinstance(caught.value, NotAFeedError)
    assert isinstance(caught.value.__cause__, cause)


def test_entity_value_with_backslash_is_refused_before_feedparser():
    body = b'<!DOCTYPE rss [<!ENTITY x "\\1">]><rss version="2.0"><channel><item><title>&x;' \
           b"</title></item></channel></rss>"
    with pytest.raises(ParseError, match="billion-laughs"):
        parse_feed(body, {}, URL)


@pytest.mark.parametrize("body", [b"", b"   \r\n\t ", b"\xef\xbb\xbf  \n"])
def test_empty_body_is_not_a_feed(body):
    with pytest.raises(NotAFeedError):
        parse_feed(body, {}, URL)


def test_gzip_body_is_not_a_feed():
    import gzip

    with pytest.raises(NotAFeedError, match="gzip"):
        parse_feed(gzip.compress(rss("<item><title>x</title></item>")), {}, URL)


def test_parse_errors_survive_pickling():
    with pytest.raises(NotAFeedError) as caught:
        parse_feed(b"", {}, URL, source="blog")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is NotAFeedError
    assert str(copy) == str(caught.value) == "blog: empty response body"


# --- HTML pages and autodiscovery ----------------------------------------------------

PAGE = b"""<!DOCTYPE html><html><head><title>Blog</title>
<base href="https://cdn.example.net/site/">
<link rel="stylesheet" href="style.css">
<link rel="alternate" type="application/rss+xml" title="Posts" href="feed.rss">
<link rel="Alternate" type="application/atom+xml; charset=utf-8" href="/atom.xml">
<link rel="alternate" type="text/html" hreflang="de" href="/de/">
<link rel="alternate" type="application/rss+xml" href="feed.rss">
<link rel="alternate" type="application/feed+json" href="https://other.example/feed.json">
<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
</head><body><p>Hello</p></body></html>"""


def test_html_page_is_refused_and_names_its_feed():
    with pytest.raises(NotAFeedError, match=r"HTML page; it advertises a feed at "
                       r"https://cdn\.example\.net/site/feed\.rss \(and 2 more\)"):
        parse_feed(PAGE, {"content-type": "text/html; charset=utf-8"}, "https://example.org/")


def test_find_feed_links_resolves_dedups_and_keeps_order():
    links = find_feed_links(PAGE, {}, "https://example.org/blog/")
    assert links == [
        FeedLink("https://cdn.example.net/site/feed.rss", "application/rss+xml", "Posts"),
        FeedLink("https://cdn.example.net/atom.xml", "application/atom+xml", None),
        FeedLink("https://other.example/feed.json", "application/feed+json", None),
    ]


def test_find_feed_links_without_base_uses_the_page_url():
    page = b'<html><head><link rel="alternate" type="application/json" href="../f.json">'
    assert [link.url for link in find_feed_links(page, [], "https://a.example/x/y/page")] == [
        "https://a.example/x/f.json"]


@pytest.mark.parametrize("name", [
    "rsparser__inessential.html", "nodefeedparser__notafeed.html",
    "lemon24reader__sqlite_releases.html", "rssparser__unrecognized.rss"])
def test_corpus_html_pages(name):
    path = CORPUS / "illformed" / name
    if not path.is_file():
        pytest.skip(f"shared corpus not found at {CORPUS}; set AGGREGATOR_CORPUS")
    body = path.read_bytes()
    assert looks_like_html(body, None)
    expected = [
        el.get("href") for el in etree.HTML(body).iter("link")
        if "alternate" in (el.get("rel") or "").lower().split()
        and (el.get("type") or "").lower() in ("application/rss+xml", "application/atom+xml")
    ]
    with pytest.raises(NotAFeedError, match="HTML page") as caught:
        parse_feed(body, {}, "http://inessential.com/")
    assert [link.url for link in find_feed_links(body, {}, "http://inessential.com/")] == expected
    if expected:
        assert expected[0] in str(caught.value)


def test_looks_like_html():
    assert looks_like_html(PAGE, None)
    assert looks_like_html(b"<p>moved</p>", "text/html")
    # Feeds served with the wrong type, or with an XHTML doctype, are still feeds.
    assert not looks_like_html(rss(""), "text/html")
    assert not looks_like_html(b'<!DOCTYPE html PUBLIC "x" "y"><rss><channel/></rss>', None)
    assert not looks_like_html(b'{"version": "https://jsonfeed.org/version/1.1"}', "text/html")


def test_feed_served_as_text_html_parses():
    feed = parse_feed(rss("<item><title>x</title></item>"), {"Content-Type": "text/html"}, URL)
    assert [e.title for e in feed.entries] == ["x"]


@pytest.mark.parametrize("body", [b"just some text", b"<foo><bar/></foo>", b"<!-- nothing -->"])
def test_other_documents_are_not_feeds(body):
    with pytest.raises(NotAFeedError):
        parse_feed(body, {"content-type": "application/xml"}, URL)


def test_truncated_feed_without_items_is_a_parse_error_with_the_reason():
    with pytest.raises(ParseError, match="rss") as caught:
        parse_feed(b'<?xml version="1.0"?><rss version="2.0"><chann', {}, URL)
    assert not isinstance(caught.value, NotAFeedError)


# --- JSON Feed -----------------------------------------------------------------------

JSON11 = {
    "version": "https://jsonfeed.org/version/1.1",
    "title": "J", "home_page_url": "https://j.example/", "feed_url": "https://j.example/f.json",
    "authors": [{"name": "Feed Author"}],
    "items": [
        {"id": 42, "url": "/posts/42", "title": "Fish & <Chips>",
         "content_text": "line <one>\nline two\n\nsecond & last", "summary": "short",
         "date_published": "2021-11-10T19:50:52+08:00", "date_modified": "2021-11-11T00:00:00Z",
         "authors": [{"name": "Ann"}, {"name": "Bob"}, {"url": "https://no.name/"}],
         "banner_image": "https://img.example/banner.png", "tags": ["a", "b", "a", 3, " "]},
        {"id": "x2", "external_url": "https://elsewhere.example/", "content_html": "<p>hi</p>",
         "summary": "hi", "image": "pic.jpg", "date_published": "yesterday"},
        "not an item",
        {"id": True, "summary": None, "content_html": 7, "date_published": "2021-13-45T00:00:00Z"},
    ],
}


def test_json_feed_1_1():
    body = json.dumps(JSON11).encode()
    feed = parse_feed(body, {"content-type": "application/feed+json"}, "https://j.example/f.json")
    assert (feed.version, feed.title, feed.link) == ("json11", "J", "https://j.example/")
    first, second, third = feed.entries
    assert first.guid == "42"  # spec: a numeric id is coerced to a string
    assert first.link == first.base_url == "https://j.example/posts/42"
    assert first.title == "Fish & <Chips>"
    assert first.content == "<p>line &lt;one&gt;<br>line two</p><p>second &amp; last</p>"
    assert first.summary == "<p>short</p>"
    assert first.published == datetime(2021, 11, 10, 11, 50, 52, tzinfo=timezone.utc)
    assert first.updated == datetime(2021, 11, 11, tzinfo=timezone.utc)
    assert first.author == "Ann, Bob"
    assert first.image == "https://img.example/banner.png"
    assert first.tags == ("a", "b")
    assert second.link == "https://elsewhere.example/"
    assert second.content == "<p>hi</p>" and second.summary is None
    assert second.image == "https://j.example/pic.jpg"
    assert second.published is None  # "yesterday" is not RFC 3339
    assert second.author == "Feed Author"  # 1.1: items inherit the top-level authors
    assert third.guid is None and third.content is None and third.published is None
    assert third.base_url == "https://j.example/"
    assert any("item 2" in w for w in feed.warnings)


def test_json_feed_1_0_with_single_author_and_bom():
    doc = {"version": "https://jsonfeed.org/version/1", "title": "Old",
           "author": {"name": "Solo"},
           "items": [{"id": "1", "content_html": "<b>x</b>", "author": {"name": "Item Author"}},
                     {"id": "2", "content_text": "plain"}]}
    body = b"\xef\xbb\xbf\n  " + json.dumps(doc).encode()
    feed = parse_feed(body, {"content-type": "application/json"}, "https://o.example/feed.json")
    assert feed.version == "json10"
    assert [e.author for e in feed.entries] == ["Item Author", "Solo"]
    assert [e.content for e in feed.entries] == ["<b>x</b>", "<p>plain</p>"]
    assert feed.entries[1].base_url == "https://o.example/feed.json"


def test_json_feed_sniffed_without_content_type_and_http_version_url():
    doc = {"version": "http://jsonfeed.org/version/1", "items": [{"id": "1", "url": "https://a/"}]}
    feed = parse_feed(json.dumps(doc).encode(), {}, URL)
    assert feed.version == "json10" and feed.entries[0].link == "https://a/"


@pytest.mark.parametrize(("body", "error", "message"), [
    (b'{"version": "https://jsonfeed.org/version/1", "items": [', ParseError, "invalid JSON"),
    (b"[1, 2]", NotAFeedError, "not a JSON Feed"),
    (b'{"rss": {"channel": {}}}', NotAFeedError, "not a JSON Feed"),
    (b'{"version": "https://jsonfeed.org/version/1"}', NotAFeedError, "items"),
    (b"[" * 100_000, ParseError, "invalid JSON"),  # RecursionError inside json
    (b'{"a": "\xff\xfe"}', ParseError, "UTF-8"),
])
def test_bad_json(body, error, message):
    with pytest.raises(error, match=message) as caught:
        parse_feed(body, {"content-type": "application/feed+json"}, URL)
    if error is ParseError:
        assert not isinstance(caught.value, NotAFeedError)


def test_unknown_json_feed_version_is_read_with_a_warning():
    doc = {"version": "https://jsonfeed.org/version/1.2", "items": [{"id": "1"}]}
    feed = parse_feed(json.dumps(doc).encode(), {}, URL)
    assert len(feed.entries) == 1 and "1.2" in feed.warnings[0]


@pytest.mark.parametrize("path", [p for p in corpus_files("real") + corpus_files("illformed")
                                  if p.values[0] is None or p.values[0].suffix == ".json"])
def test_corpus_json_feeds_match_json_items(path):
    body = path.read_bytes()
    try:
        doc = json.loads(body)
    except ValueError:
        with pytest.raises(ParseError, match="invalid JSON"):
            parse_feed(body, {}, URL)
        return
    if not re.match(r"https?://jsonfeed\.org/version/", str(doc.get("version", ""))):
        with pytest.raises(NotAFeedError):
            parse_feed(body, {}, URL)
        return
    feed = parse_feed(body, {}, URL)
    items = [i for i in doc["items"] if isinstance(i, dict)]
    assert len(feed.entries) == len(items)
    for entry, item in zip(feed.entries, items):
        if isinstance(item.get("id"), str) and item["id"].strip():
            assert entry.guid == item["id"]
        if isinstance(item.get("content_html"), str) and item["content_html"].strip():
            assert entry.content == item["content_html"]
        if isinstance(item.get("title"), str) and item["title"].strip():
            assert entry.title == item["title"]


# --- mapping RSS / Atom entries --------------------------------------------------------

MEDIA = 'xmlns:media="http://search.yahoo.com/mrss/" ' \
        'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" ' \
        'xmlns:content="http://purl.org/rss/1.0/modules/content/"'


@pytest.mark.parametrize(("item", "image"), [
    ('<enclosure url="https://a/ep.mp3" type="audio/mpeg" length="1"/>', None),
    ('<enclosure url="https://a/ep.mp3" type="audio/mpeg" length="1"/>'
     '<enclosure url="https://a/p.jpg" type="image/jpeg" length="1"/>', "https://a/p.jpg"),
    ('<media:content url="https://a/v.mp4" medium="video"/>'
     '<media:content url="https://a/m.png" medium="image"/>', "https://a/m.png"),
    ('<media:content url="https://a/t.webp" type="image/webp"/>', "https://a/t.webp"),
    ('<media:content url="https://a/noext"/><media:content url="https://a/x.JPG?s=1"/>',
     "https://a/x.JPG?s=1"),
    ('<media:thumbnail url="/thumb.gif"/><itunes:image href="https://a/i.png"/>',
     "https://example.org/thumb.gif"),
    ('<itunes:image href="https://a/i.png"/><enclosure url="https://a/e.mp3" type="audio/mpeg"/>',
     "https://a/i.png"),
])
def test_entry_image(item, image):
    body = rss(f"<item><title>x</title><link>https://example.org/p</link>{item}</item>", ns=MEDIA)
    assert parse_feed(body, {}, URL).entries[0].image == image


def test_entry_content_summary_and_tags():
    long_html = "<p>" + "full text " * 20 + "</p>"
    body = rss(
        "<item><title>Caf&#233; &amp;amp; co</title><link>https://example.org/p</link>"
        "<description>&lt;p&gt;teaser&lt;/p&gt;</description>"
        f"<content:encoded><![CDATA[{long_html}]]></content:encoded>"
        "<category>news</category><category> tech </category><category>news</category>"
        "<dc:creator>Writer</dc:creator></item>"
        "<item><title>two</title><description>only &lt;b&gt;this&lt;/b&gt;</description></item>",
        ns=MEDIA + ' xmlns:dc="http://purl.org/dc/elements/1.1/"')
    first, second = parse_feed(body, {}, URL).entries
    assert first.title == "Café &amp; co"
    assert first.content == long_html
    assert first.summary == "<p>teaser</p>"
    assert first.tags == ("news", "tech")
    assert first.author == "Writer"
    assert second.content == "only <b>this</b>" and second.summary is None
    assert second.link is None and second.base_url == "https://example.org/"


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://atom.example/base/">
  <title>A</title><link rel="alternate" href="/home"/><author><name>Feed Person</name></author>
  <id>urn:a</id><updated>2020-01-01T00:00:00Z</updated>
  <entry><id>urn:1</id><title type="html">&lt;b&gt;Bold&lt;/b&gt; title</title>
    <link rel="enclosure" type="audio/mpeg" href="ep.mp3"/>
    <link rel="alternate" type="application/pdf" href="doc.pdf"/>
    <link rel="alternate" type="text/html" href="post.html"/>
    <updated>2020-02-02T10:00:00+02:00</updated>
    <summary>plain &lt;not markup&gt;</summary>
    <content type="xhtml" xml:base="https://cdn.example/c/">
      <div xmlns="http://www.w3.org/1999/xhtml"><p>Long <img src="a.png"/> body</p></div>
    </content>
  </entry>
  <entry><id>urn:2</id><title>Second</title><author><name>Own</name></author>
    <published>2020-03-03T00:00:00Z</published><updated>not a date</updated>
    <content type="text">a &lt;tag&gt; &amp; more</content>
  </entry>
</feed>"""


def test_atom_entries():
    feed = parse_feed(ATOM.encode(), [("Content-Type", "application/atom+xml")], URL)
    assert feed.version == "atom10" and feed.link == "https://atom.example/home"
    first, second = feed.entries
    assert first.link == "https://atom.example/base/post.html"
    assert first.title == "<b>Bold</b> title"  # raw: markup kept for the cleaner
    assert "<img" in first.content and "Long" in first.content
    assert first.summary == "<p>plain &lt;not markup&gt;</p>"
    assert first.base_url == "https://cdn.example/c/"  # the content's xml:base
    assert first.published is None  # feedparser would report updated as published
    assert first.updated == datetime(2020, 2, 2, 8, 0, tzinfo=timezone.utc)
    assert first.author == "Feed Person"  # RFC 4287 §4.2.1: inherited from the feed
    assert first.image is None  # an audio enclosure is not an image
    assert second.content == "<p>a &lt;tag&gt; &amp; more</p>"
    assert second.author == "Own"
    assert second.published == datetime(2020, 3, 3, tzinfo=timezone.utc)
    assert second.updated is None  # unreadable date, and no fallback to published
    assert second.base_url == "https://atom.example/base/"  # xml:base inherited from <feed>


@pytest.mark.parametrize("date", ["", "garbage", "Thu, 99 Foo 2021 25:61:00 GMT",
                                  "0000-00-00T00:00:00Z", "Mon, 31 Feb 2021 10:00:00 +0000"])
def test_missing_or_invalid_dates_are_none(date):
    tag = f"<pubDate>{date}</pubDate>" if date else ""
    entry = parse_feed(rss(f"<item><title>d</title>{tag}</item>"), {}, URL).entries[0]
    assert entry.published is None and entry.updated is None


def test_rss_dates_and_ttl():
    body = rss("<item><title>d</title><pubDate>Wed, 10 Nov 2021 11:50:52 +0800</pubDate>"
               "<dc:date>2021-11-12T00:00:00Z</dc:date></item>", channel="<ttl> 60 </ttl>",
               ns='xmlns:dc="http://purl.org/dc/elements/1.1/"')
    feed = parse_feed(body, {}, URL)
    assert feed.ttl_minutes == 60
    entry = feed.entries[0]
    assert entry.published == datetime(2021, 11, 10, 3, 50, 52, tzinfo=timezone.utc)
    assert entry.updated == datetime(2021, 11, 12, tzinfo=timezone.utc)
    assert parse_feed(rss("", channel="<ttl>soon</ttl>"), {}, URL).ttl_minutes is None


# --- encoding (the rest is in test_encoding.py) -------------------------------------


def test_leading_whitespace_before_declaration_is_tolerated():
    body = b"\n\n   " + rss("<item><title>ok</title></item>")
    feed = parse_feed(body, {}, URL)
    assert [e.title for e in feed.entries] == ["ok"] and not feed.warnings


# --- properties ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_any_bytes_give_a_feed_or_a_parse_error(body):
    try:
        assert isinstance(parse_feed(body, {}, URL), ParsedFeed)
    except ParseError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80), st.sampled_from(["title", "description", "link", "guid", "pubDate"]))
def test_any_text_in_an_item_gives_a_feed_or_a_parse_error(text, field):
    escaped = text.replace("&", "&amp;").replace("<", "&lt;")
    raw = rss(f"<item><{field}>{text}</{field}></item>")
    clean = rss(f"<item><{field}>{escaped}</{field}></item>")
    for body in (raw, clean):
        try:
            feed = parse_feed(body, {}, URL)
        except ParseError:
            continue
        assert pickle.loads(pickle.dumps(feed)) == feed


def test_item_identity_does_not_depend_on_the_fetch_url():
    """feedparser resolves guids against Content-Location; a relative-looking guid must stay
    as written, or a port change, a 301 or http->https would turn every item into a new one."""
    body = (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://s.example/</link>'
            b"<description>d</description><item><title>a</title><guid>item-1</guid><link>posts/1.html</link>"
            b"</item></channel></rss>")
    one = parse_feed(body, {}, "http://127.0.0.1:8080/feed.xml").entries[0]
    two = parse_feed(body, {}, "https://mirror.example/other/feed.xml").entries[0]
    assert one.guid == two.guid == "item-1"
    assert one.link == "http://127.0.0.1:8080/posts/1.html"  # relative links: against the document's URL
    assert two.link == "https://mirror.example/other/posts/1.html"
