"""The validate-before-swap checker (aggregator/publish/validate.py).

Two sides: what our renderers produce always passes (so a refusal means a real problem,
never noise), and each defect a renderer bug or unexpected data could cause is refused
with a message that says what and where. Defects are injected into real rendered
documents, structural ones through lxml so the rest of the document stays intact.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import frontmatter
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from aggregator.errors import AggregatorError, PublishError
from aggregator.models import ArticleRef, Source, StoredArticle
from aggregator.publish import (
    Page,
    Site,
    feed_def,
    plan_site,
    publish_site,
    render_atom,
    render_rss,
)
from aggregator.publish.feeds import EntryCache, render_page
from aggregator.publish.json_feed import compose_json, render_json
from aggregator.publish.pages import Composed
from aggregator.publish.validate import validate, validate_composed
from tests.conftest import FIXTURES, corpus_dir
from tests.test_json_feed import ANY_TEXT, T0, article, sample_articles

BASE_URL = "https://news.example.org/feeds/"
SITE = Site(base_url=BASE_URL, title="Aggregator", hub="https://hub.example.net/",
            source_urls={"财联社": "https://www.cls.cn/rss"})
NS = {"a": "http://www.w3.org/2005/Atom", "atom": "http://www.w3.org/2005/Atom"}
RENDER = {"rss": render_rss, "atom": render_atom, "json": render_json}
NAME = {"rss": "category/金融.rss.xml", "atom": "category/金融.atom.xml", "json": "category/金融.json"}


def articles_with_the_seed() -> list[StoredArticle]:
    """The sample set, plus the real 10 KB CJK seed article when the fixture is there."""
    articles = sample_articles()
    seed = FIXTURES / "seed-article.md"
    if seed.is_file():
        post = frontmatter.loads(seed.read_text("utf-8"))
        articles.append(article(20, post["title"], body=post.content, date=T0 - timedelta(days=2),
                                summary="外交部发言人汪文斌主持例行记者会。", image="https://img.example.org/a b.jpg"))
    return articles


def page(number: int | None = None, archives: int = 0, articles=None) -> Page:
    feed = feed_def("category", "金融", site_title=SITE.title, limit=50, ttl=15)
    return Page(feed=feed, items=tuple(articles_with_the_seed() if articles is None else articles),
                number=number, archives=archives)


def rendered(fmt: str) -> bytes:
    return RENDER[fmt](page(), SITE)


def refused(rel_path: str, data: bytes) -> str:
    with pytest.raises(PublishError) as caught:
        validate(rel_path, data)
    message = str(caught.value)
    assert message.startswith(rel_path + ": "), message
    assert isinstance(caught.value, AggregatorError)
    return message


def line_of(data: bytes, marker: bytes) -> int:
    return data[: data.index(marker)].count(b"\n") + 1


def edited(data: bytes, change) -> bytes:
    """Apply ``change(root)`` to the parsed document and serialise it as UTF-8 again."""
    root = etree.fromstring(data)
    change(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- what we produce passes ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["rss", "atom", "json"])
@pytest.mark.parametrize("number, archives", [(None, 0), (None, 2), (1, 2), (2, 2)])
def test_every_page_our_renderers_produce_passes(fmt, number, archives):
    validate(page(number, archives).path(fmt), RENDER[fmt](page(number, archives), SITE))


@pytest.mark.parametrize("fmt", ["rss", "atom", "json"])
def test_an_empty_feed_passes(fmt):
    validate(NAME[fmt], RENDER[fmt](page(articles=[]), SITE))


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(category=ANY_TEXT, title=ANY_TEXT, body=ANY_TEXT, summary=ANY_TEXT, author=ANY_TEXT,
       date=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_whatever_the_text_the_renderers_output_passes(category, title, body, summary, author, date):
    """No false alarm: the validator accepts every document the renderers make."""
    a = article(1, title or "x", category=category or "c", body=f"<p>{body}</p>", summary=summary,
                author=author, date=date)
    feed = feed_def("category", a.category, site_title=SITE.title, limit=50, ttl=15)
    one = Page(feed=feed, items=(a,))
    for fmt, render in RENDER.items():
        validate(one.path(fmt), render(one, SITE))


def test_year_one_is_refused_in_rss_but_is_a_valid_date_elsewhere():
    """feedgen writes year 1 as ``1``, which no RFC 822 reader takes for year 1 (RFC 822
    years were two digits; ``email.utils`` reads even ``0001`` as 2001). RFC 3339 years
    always have four digits, so Atom and JSON Feed state it unambiguously."""
    old = [article(1, "year one", date=datetime(1, 1, 1, tzinfo=UTC))]
    message = refused(NAME["rss"], RENDER["rss"](page(articles=old), SITE))
    assert message.endswith("channel: lastBuildDate 'Mon, 01 Jan 1 00:00:00 GMT' is not an RFC 822 date")
    validate(NAME["atom"], RENDER["atom"](page(articles=old), SITE))
    validate(NAME["json"], RENDER["json"](page(articles=old), SITE))


# --- characters XML 1.0 forbids: raw and as references ------------------------------------


@pytest.mark.parametrize("fmt", ["rss", "atom"])
@pytest.mark.parametrize("inserted, expected", [
    ("\x08", "character U+0008 is not allowed in XML 1.0"),
    ("\x00", "character U+0000 is not allowed in XML 1.0"),
    ("\ufffe", "character U+FFFE is not allowed in XML 1.0"),
    ("&#8;", "character reference &#8; is not allowed in XML 1.0"),
    ("&#x1B;", "character reference &#x1B; is not allowed in XML 1.0"),
    ("&#xFFFF;", "character reference &#xFFFF; is not allowed in XML 1.0"),
    ("&#55296;", "character reference &#55296; is not allowed in XML 1.0"),  # a lone surrogate
    ("&#x110000;", "character reference &#x110000; is not allowed in XML 1.0"),
])
def test_illegal_characters_are_refused_raw_and_as_references(fmt, inserted, expected):
    good = rendered(fmt)
    marker = b"<title>1e3"
    bad = good.replace(marker, b"<title>1" + inserted.encode() + b"e3")
    assert bad != good
    message = refused(NAME[fmt], bad)
    assert f"line {line_of(good, marker)}: {expected}" in message


def test_libxml2_alone_refuses_both_forms_too():
    """The validator's own scan comes first for its messages; the parser underneath is a
    second net, not a single point of failure."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    for doc in (b"<a>\x08</a>", b"<a>&#8;</a>", b"<a b='&#x0;'/>", b"<a>&#xFFFE;</a>"):
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(doc, parser)


def test_legal_character_references_pass():
    good = rendered("rss")
    validate(NAME["rss"], good.replace(b"<title>1e3", b"<title>&#x1F600;&#9;&#10;&#13;1e3"))


# --- encoding and well-formedness ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["rss", "atom"])
def test_truncated_xml_is_not_well_formed(fmt):
    good = rendered(fmt)
    cut = good[: len(good) // 2]
    message = refused(NAME[fmt], cut)
    assert re.search(r": line \d+, column \d+: not well-formed \(.+\)$", message), message


@pytest.mark.parametrize("fmt", ["rss", "atom", "json"])
def test_bytes_that_are_not_utf8_are_refused(fmt):
    good = rendered(fmt)
    bad = good.replace("央行".encode(), "央行".encode("gbk"), 1)
    assert bad != good
    message = refused(NAME[fmt], bad)
    assert f"line {line_of(good, '央行'.encode())}: not UTF-8 (byte 0x" in message


def test_a_declared_encoding_other_than_utf8_is_refused():
    good = rendered("rss")
    bad = good.replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'", 1)
    assert bad != good
    assert "line 1: declared encoding 'ISO-8859-1', not UTF-8" in refused(NAME["rss"], bad)


def test_a_doctype_is_refused_and_its_entities_never_expanded():
    good = rendered("rss")
    head, body = good.split(b"\n", 1)
    bad = head + b'\n<!DOCTYPE rss [<!ENTITY e "x">]>\n' + body.replace(b"<title>1e3", b"<title>&e;1e3")
    assert "DOCTYPE" in refused(NAME["rss"], bad)


# --- RSS 2.0 ------------------------------------------------------------------------------


def _remove(path: str):
    def change(root):
        element = root.find(path, NS)
        element.getparent().remove(element)
    return change


def _set_text(path: str, text: str):
    def change(root):
        root.findall(path)[-1].text = text
    return change


@pytest.mark.parametrize("change, expected", [
    (_remove("channel/title"), "channel: <title> is missing or empty"),
    (_set_text("channel/title", "  "), "channel: <title> is missing or empty"),
    (_remove("channel/link"), "channel: <link> is missing or empty"),
    (_remove("channel/description"), "channel: <description> is missing or empty"),
    (_remove("channel/atom:link[@rel='self']"), 'channel: no <atom:link rel="self">'),
    (_remove("channel/item[2]/guid"), "item 2: has no <guid>"),
    (lambda root: (_remove("channel/item[3]/title")(root), _remove("channel/item[3]/description")(root)),
     "item 3: has neither a title nor a description"),
    (_set_text("channel/item[1]/pubDate", "Mon, 99 Foo"), "item 1: pubDate 'Mon, 99 Foo' is not an RFC 822 date"),
    (_set_text("channel/item[1]/pubDate", "2021-11-10T11:50:52Z"), "is not an RFC 822 date"),
    (_set_text("channel/item[1]/pubDate", "Wed, 31 Feb 2021 11:50:52 GMT"), "is not an RFC 822 date"),
    (_set_text("channel/item[1]/pubDate", "Wed, 10 Nov 21 11:50:52 GMT"), "is not an RFC 822 date"),
    (_set_text("channel/item[1]/pubDate", "Mon, 10 Nov 2021 11:50:52 GMT"), "that day is a Wed"),
    (_set_text("channel/item[1]/pubDate", "Thu, 01 Jan 1920 00:00:00 GMT"), "has year 1920, outside 1970..9999"),
    (_set_text("channel/item[1]/pubDate", "Mon, 01 Jan 0001 00:00:00 GMT"),
     "item 1: pubDate 'Mon, 01 Jan 0001 00:00:00 GMT' has year 1, outside 1970..9999"),
    (_set_text("channel/lastBuildDate", "yesterday"), "channel: lastBuildDate 'yesterday' is not an RFC 822 date"),
    (lambda root: root.set("version", "0.91"), "not <rss version=\"2.0\">"),
    (lambda root: root.append(copy.deepcopy(root.find("channel"))), "has 2 <channel> elements"),
])
def test_rss_defects_are_refused_with_what_and_where(change, expected):
    message = refused(NAME["rss"], edited(rendered("rss"), change))
    assert expected in message, message


def test_rss_item_messages_give_the_line():
    bad = edited(rendered("rss"), _remove("channel/item[2]/guid"))
    line = etree.fromstring(bad).find("channel/item[2]").sourceline
    assert refused(NAME["rss"], bad).endswith(f"item 2: has no <guid> (line {line})")


@pytest.mark.parametrize("value", ["Wed, 10 Nov 2021 11:50:52 GMT", "10 Nov 2021 11:50 +0800",
                                   "Wed, 10 Nov 2021 11:50:52 -0500", "Wed, 10 Nov 2021 11:50:52 EST"])
def test_rss_dates_in_other_rfc822_forms_pass(value):
    validate(NAME["rss"], edited(rendered("rss"), _set_text("channel/item[1]/pubDate", value)))


# --- Atom 1.0 -----------------------------------------------------------------------------


def _remove_atom(path: str):
    """Remove the first element at ``path`` (``a:`` is the Atom namespace)."""
    def change(root):
        element = root.find(path, NS)
        element.getparent().remove(element)
    return change


def _set_atom(path: str, text: str):
    def change(root):
        root.find(path, NS).text = text
    return change


@pytest.mark.parametrize("change, expected", [
    (_set_atom("a:entry/a:updated", "2021-11-10 11:50:52"),
     "entry 1: updated '2021-11-10 11:50:52' is not an RFC 3339 date-time"),
    (_set_atom("a:entry/a:published", "2021-11-10T11:50:52"), "entry 1: published '2021-11-10T11:50:52' is not"),
    (_set_atom("a:entry/a:updated", "2021-11-10t11:50:52z"), "is not an RFC 3339 date-time"),
    (_set_atom("a:entry/a:updated", "2021-13-10T11:50:52Z"), "is not an RFC 3339 date-time"),
    (_set_atom("a:entry/a:updated", "Wed, 10 Nov 2021 11:50:52 GMT"), "is not an RFC 3339 date-time"),
    (_set_atom("a:updated", "now"), "feed: updated 'now' is not an RFC 3339 date-time"),
    (_remove_atom("a:id"), "feed: <id> is missing or empty"),
    (_remove_atom("a:title"), "feed: <title> is missing or empty"),
    (_remove_atom("a:updated"), "feed: <updated> is missing or empty"),
    (_remove_atom("a:link[@rel='self']"), 'feed: no <link rel="self">'),
    (_remove_atom("a:entry[2]/a:id"), "entry 2: <id> is missing or empty"),
    (_remove_atom("a:entry[3]/a:title"), "entry 3: <title> is missing or empty"),
    (lambda root: (_remove_atom("a:author")(root), _remove_atom("a:entry/a:author")(root)),
     "entry 1: no <author>, and the feed has none"),
    (lambda root: setattr(root, "tag", f"{{{NS['a']}}}entry"), "not an Atom <feed>"),
])
def test_atom_defects_are_refused_with_what_and_where(change, expected):
    message = refused(NAME["atom"], edited(rendered("atom"), change))
    assert expected in message, message


@pytest.mark.parametrize("value", ["2021-11-10T11:50:52Z", "2021-11-10T11:50:52.123+08:00", "0001-01-01T00:00:00Z"])
def test_atom_dates_in_other_rfc3339_forms_pass(value):
    validate(NAME["atom"], edited(rendered("atom"), _set_atom("a:entry/a:updated", value)))


# --- JSON Feed ----------------------------------------------------------------------------


def json_edited(change) -> bytes:
    doc = json.loads(rendered("json"))
    change(doc)
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")


def _item(n: int, **fields):
    def change(doc):
        for key, value in fields.items():
            if value is None:
                del doc["items"][n - 1][key]
            else:
                doc["items"][n - 1][key] = value
    return change


@pytest.mark.parametrize("change, expected", [
    (lambda doc: doc.pop("items"), "items is missing or not a list"),
    (lambda doc: doc.update(items={}), "items is missing or not a list"),
    (lambda doc: doc.pop("title"), "title is missing or not a string"),
    (lambda doc: doc.update(version="https://example.com/version/1.1"), "is not a JSON Feed 1.x version URL"),
    (_item(2, content_html=None), "item 2: has neither content_html nor content_text"),
    (_item(1, id=None), "item 1: id is missing, empty or not a string"),
    (_item(1, id=7), "item 1: id is missing, empty or not a string"),
    (_item(1, id=" "), "item 1: id is missing, empty or not a string"),
    (_item(3, date_published="2021-11-10T11:50:52"),
     "item 3: date_published '2021-11-10T11:50:52' is not an RFC 3339 date-time"),
    (_item(1, date_modified="Wed, 10 Nov 2021 11:50:52 GMT"), "item 1: date_modified"),
    (_item(1, date_modified=None, date_published=12), "item 1: date_published 12 is not"),
    (_item(1, url=["https://x.example/"]), "item 1: url is list, not a string"),
    (_item(1, title=3), "item 1: title is int, not a string"),
    (_item(1, tags="金融"), "item 1: tags is not a list of strings"),
    (_item(1, authors=[{"nickname": "x"}]), "item 1: author {'nickname': 'x'} has no name, url or avatar"),
    (_item(2, content_html="<p>\x08</p>"), "item 2: content_html contains U+0008, which XML 1.0 does not allow"),
    (_item(2, content_html="<p>\x0c</p>"), "item 2: content_html contains U+000C, which XML 1.0 does not allow"),
    (_item(1, title="\x1f"), "item 1: title contains U+001F"),
    (lambda doc: doc.update(feed_url=None), "feed_url is NoneType, not a string"),
    (lambda doc: doc.update(hubs=[{"url": "https://hub.example.net/"}]), "hubs is not a list of objects"),
    (lambda doc: doc.update(expired="no"), "expired is not true or false"),
    (lambda doc: doc["items"].append("an item"), "is a str, not an object"),
])
def test_json_defects_are_refused_with_what_and_where(change, expected):
    message = refused(NAME["json"], json_edited(change))
    assert expected in message, message


@pytest.mark.parametrize("data, expected", [
    (b'{"version": "https://jsonfeed.org/version/1.1",\n "title": "t",\n "items": [',
     "line 3, column 12: not valid JSON"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "title": NaN, "items": []}', "NaN is not JSON"),
    (b'[{"version": "https://jsonfeed.org/version/1.1"}]', "is a JSON list, not an object"),
    (b'\xef\xbb\xbf{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": []}', "byte order mark"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "title": "\\ud800", "items": []}',
     "title contains U+D800"),
    (b'{"version": "https://jsonfeed.org/version/1.1", "title": "\\u0008", "items": []}', "title contains U+0008"),
])
def test_broken_json_documents_are_refused(data, expected):
    assert expected in refused("x.json", data)


def test_a_minimal_json_feed_1_0_document_passes():
    validate("x.json", b'{"version": "https://jsonfeed.org/version/1", "title": "t",'
                       b' "items": [{"id": "1", "content_text": "hi"}]}')


# --- composed documents: each item checked once, the same verdict -------------------------
#
# validate_composed is what the publisher runs: the envelope once per page and each item
# once per run. Whatever the parts, its verdict (and message) must be validate's on the
# joined bytes: every defect above injected into one item or into the envelope, items that
# are not one item (two, none, half of one, one that closes the container), and items
# passed in one context (namespaces in scope, Atom feed author) met again in another.


def composed(fmt: str, number: int | None = None, archives: int = 0, articles=None, site: Site = SITE) -> Composed:
    one = page(number, archives, articles)
    if fmt == "json":
        return compose_json(one, site, {})
    return render_page(one, site, fmt, EntryCache())[0]


def verdict(check, *args) -> str | None:
    try:
        check(*args)
    except PublishError as e:
        return str(e)
    return None


def same_verdict(fmt: str, doc: Composed, checked: set | None = None) -> str | None:
    """validate_composed's verdict on ``doc``, asserted equal to validate's."""
    expected = verdict(validate, NAME[fmt], doc.data)
    assert verdict(validate_composed, NAME[fmt], doc, set() if checked is None else checked) == expected
    return expected


def with_item(doc: Composed, index: int, change) -> Composed:
    items = list(doc.items)
    items[index] = change(items[index])
    return dataclasses.replace(doc, items=tuple(items))


def _sub(pattern: bytes, replacement: bytes):
    return lambda item: re.sub(pattern, replacement, item, count=1, flags=re.DOTALL)


_TITLE = rb"(<title>)"
XML_ITEM_DEFECTS = {
    "no guid or id": (_sub(rb"\s*<guid[^>]*>.*?</guid>", b""), _sub(rb"\s*<id>.*?</id>", b"")),
    "no title": (_sub(rb"\s*<title>.*?</title>", b""), _sub(rb"\s*<title>.*?</title>", b"")),
    "bad date": (_sub(rb"<pubDate>.*?</pubDate>", b"<pubDate>Mon, 99 Foo</pubDate>"),
                 _sub(rb"<updated>.*?</updated>", b"<updated>now</updated>")),
    "year one": (_sub(rb"<pubDate>.*?</pubDate>", b"<pubDate>Mon, 01 Jan 0001 00:00:00 GMT</pubDate>"),
                 _sub(rb"<published>.*?</published>", b"<published>1-01-01T00:00:00Z</published>")),
    "illegal character": (_sub(_TITLE, b"\\1\x08"),) * 2,
    "illegal reference": (_sub(_TITLE, b"\\1&#8;"),) * 2,
    "undefined entity": (_sub(_TITLE, b"\\1&e;"),) * 2,
    "not utf-8": (_sub(_TITLE, "\\1央行".encode("gbk")),) * 2,
    "undefined prefix": (_sub(rb"<title>(.*?)</title>", rb"<zz:title>\1</zz:title>"),) * 2,
    "half an item": (lambda item: item[: len(item) // 2],) * 2,
    "unclosed": (lambda item: item.replace(b"</item>", b""), lambda item: item.replace(b"</entry>", b"")),
    "closes the container": (lambda item: b"  </channel>\n  <channel>\n" + item, lambda item: b"</feed>\n<feed>\n" + item),
    "opens a CDATA section": (lambda item: item + b"<![CDATA[",) * 2,
    "a DOCTYPE": (lambda item: b"<!DOCTYPE x>\n" + item,) * 2,
    # not one item, but nothing wrong with the whole: the verdicts must still agree
    "two items": (lambda item: item + item,) * 2,
    "no item": (lambda item: b"",) * 2,
    "a comment": (lambda item: b"    <!-- note -->\n",) * 2,
    "text": (lambda item: item + b"text\n",) * 2,
    "another namespace": (lambda item: item.replace(b"<item>", b'<item xmlns="urn:x">'),
                          lambda item: item.replace(b"<entry>", b'<entry xmlns="urn:x">')),
    "no author": (_sub(rb"<dc:creator>.*?</dc:creator>", b""), _sub(rb"\s*<author>.*?</author>", b"")),
}
JSON_ITEM_DEFECTS = {
    "no content": lambda item: b'{"id":"x"}',
    "id not a string": lambda item: item.replace(b'{"id":', b'{"id":7,"x":', 1),
    "illegal escape": lambda item: item.replace(b'"content_html":"', b'"content_html":"\\u0008', 1),
    "illegal character": lambda item: item.replace(b'"content_html":"', b'"content_html":"\x0c', 1),
    "lone surrogate": lambda item: item.replace(b'"title":"', b'"title":"\\ud800', 1),
    "NaN": lambda item: item[:-1] + b',"x":NaN}',
    "not utf-8": lambda item: item.replace(b'"title":"', b'"title":"' + "央行".encode("gbk"), 1),
    "byte order mark": lambda item: b"\xef\xbb\xbf" + item,
    "a number": lambda item: b"1",
    "half an item": lambda item: item[: len(item) // 2],
    "breaks out of items": lambda item: item + b'],"items":[{"id":1}',
    # not one item, but nothing wrong with the whole
    "two items": lambda item: item + b"," + item,
    "leaves items": lambda item: item + b'],"x":[' + item,
    "no item": lambda item: b"",
    "spaces": lambda item: b" " + item + b"\n",
}


@pytest.mark.parametrize("fmt", ["rss", "atom"])
@pytest.mark.parametrize("defect", sorted(XML_ITEM_DEFECTS))
@pytest.mark.parametrize("index", [0, 2])
def test_composed_xml_item_defects_get_the_verdict_of_the_whole(fmt, defect, index):
    change = XML_ITEM_DEFECTS[defect][fmt == "atom"]
    good = composed(fmt)
    bad = with_item(good, index, change)
    assert bad.items[index] != good.items[index], defect
    checked: set = set()
    assert same_verdict(fmt, good, checked) is None
    same_verdict(fmt, bad, checked)  # the good items already passed: only the changed one is new
    same_verdict(fmt, bad)


@pytest.mark.parametrize("defect", sorted(JSON_ITEM_DEFECTS))
@pytest.mark.parametrize("index", [0, 2])
def test_composed_json_item_defects_get_the_verdict_of_the_whole(defect, index):
    good = composed("json")
    bad = with_item(good, index, JSON_ITEM_DEFECTS[defect])
    assert bad.items[index] != good.items[index], defect
    checked: set = set()
    assert same_verdict("json", good, checked) is None
    same_verdict("json", bad, checked)
    same_verdict("json", bad)


def test_the_defects_that_break_a_document_are_refused_with_its_own_message():
    good = composed("rss")
    bad = with_item(good, 2, XML_ITEM_DEFECTS["no guid or id"][0])
    line = etree.fromstring(bad.data).find("channel/item[3]").sourceline
    with pytest.raises(PublishError, match=re.escape(f"item 3: has no <guid> (line {line})")):
        validate_composed(NAME["rss"], bad, set())
    bad = with_item(composed("json"), 1, JSON_ITEM_DEFECTS["no content"])
    with pytest.raises(PublishError, match="item 2: has neither content_html nor content_text"):
        validate_composed(NAME["json"], bad, set())


@pytest.mark.parametrize("fmt, head, tail", [
    ("rss", _sub(rb"<title>.*?</title>", b"<title> </title>"), None),
    ("rss", _sub(rb"<lastBuildDate>.*?</lastBuildDate>", b"<lastBuildDate>yesterday</lastBuildDate>"), None),
    ("rss", _sub(rb"encoding='UTF-8'", b"encoding='ISO-8859-1'"), None),
    ("rss", _sub(rb"\n", b'\n<!DOCTYPE rss [<!ENTITY e "x">]>\n'), None),
    ("rss", _sub(rb'version="2.0"', b'version="0.91"'), None),
    ("rss", lambda head: b"\xef\xbb\xbf" + head, None),
    ("rss", None, lambda tail: b"</channel></rss>"),
    ("rss", None, lambda tail: b"  </channel>\n"),
    ("atom", _sub(rb"<id>.*?</id>", b""), None),
    ("atom", _sub(rb'<link href="[^"]*" rel="self"[^>]*/>', b""), None),
    ("atom", None, lambda tail: b"</feed>"),
    ("json", _sub(rb'"version":"[^"]*"', b'"version":"1.1"'), None),
    ("json", _sub(rb'"title":"[^"]*"', b'"title":7'), None),
    ("json", lambda head: head[: -len(b'"items":[')] + b'"items":[],"x":"[', None),
    ("json", lambda head: head + b'{"id":"0","content_html":""},', None),
    ("json", lambda head: head + b'],"hubs":[', None),  # the items would become hubs
    ("json", lambda head: head + b'],"authors":[', None),
    ("json", None, lambda tail: b"]}"),
])
def test_composed_envelope_defects_get_the_verdict_of_the_whole(fmt, head, tail):
    good = composed(fmt)
    bad = dataclasses.replace(good, head=head(good.head) if head else good.head,
                              tail=tail(good.tail) if tail else good.tail)
    assert bad != good
    checked: set = set()
    same_verdict(fmt, good, checked)
    same_verdict(fmt, bad, checked)


def test_an_item_passed_for_a_feed_with_an_author_is_checked_again_for_one_without():
    """Atom: an entry may leave its author out when the feed names one (RFC 4287 §4.1.1)."""
    good = composed("atom")
    no_author = with_item(good, 0, XML_ITEM_DEFECTS["no author"][1])
    checked: set = set()
    assert same_verdict("atom", no_author, checked) is None
    anonymous = dataclasses.replace(no_author, head=re.sub(rb"\s*<author>.*?</author>", b"", good.head,
                                                           count=1, flags=re.DOTALL))
    assert "entry 1: no <author>, and the feed has none" in same_verdict("atom", anonymous, checked)


def test_an_item_passed_under_one_set_of_namespaces_is_checked_again_under_another():
    good = composed("rss")
    checked: set = set()
    assert same_verdict("rss", good, checked) is None
    no_dc = dataclasses.replace(good, head=good.head.replace(b' xmlns:dc="http://purl.org/dc/elements/1.1/"', b""))
    assert no_dc.head != good.head
    assert "not well-formed (Namespace prefix dc on creator is not defined)" in same_verdict("rss", no_dc, checked)


@pytest.mark.parametrize("fmt", ["rss", "atom"])
def test_an_item_is_checked_under_the_namespaces_of_its_page_whatever_their_uris(fmt):
    """Items are checked in a small document of their own with the page's namespaces in
    scope: a URI with characters an attribute must escape still gives that context (the
    item passes there and is remembered), and one the item needs but the page lacks
    still refuses it."""
    good = composed(fmt)
    container = b"<channel>" if fmt == "rss" else b"<feed "
    declared = b'<channel xmlns:zz="urn:x?a=1&amp;b=\'2\'">' if fmt == "rss" else b'<feed xmlns:zz="urn:x?a=1&amp;b=\'2\'" '
    tag = b"<guid" if fmt == "rss" else b"<id>"
    item = good.items[0].replace(tag, b"<zz:note>n</zz:note>" + tag, 1)
    doc = dataclasses.replace(good, head=good.head.replace(container, declared, 1), items=(item,))
    checked: set = set()
    assert same_verdict(fmt, doc, checked) is None
    assert len(checked) == 1
    assert "Namespace prefix zz" in same_verdict(fmt, dataclasses.replace(good, items=(item,)), checked)


@pytest.mark.parametrize("fmt", ["rss", "atom", "json"])
def test_each_item_is_checked_once_per_run(fmt):
    articles = articles_with_the_seed()
    checked: set = set()
    validate_composed(NAME[fmt], composed(fmt, articles=articles), checked)
    assert len(checked) == len(articles)
    for number, archives, items in ((None, 2, articles[1:]), (1, 2, articles[:2]), (None, 0, [])):
        validate_composed(NAME[fmt], composed(fmt, number, archives, items), checked)
    assert len(checked) == len(articles)


def _pool(fmt: str) -> tuple[list[bytes], list[bytes]]:
    """Heads and items to mix: our own, their defective variants, and other pages' heads."""
    articles = articles_with_the_seed()
    docs = [composed(fmt, number, archives, articles) for number, archives in ((None, 0), (1, 3), (3, 3))]
    heads = [d.head for d in docs]
    items = list(docs[0].items)
    if fmt == "json":
        items += [change(items[i % len(items)]) for i, change in enumerate(JSON_ITEM_DEFECTS.values())]
        heads += [heads[0] + b'],"hubs":[', heads[0] + b'],"items":[']
    else:
        heads.append(heads[0].replace(b' xmlns:dc="http://purl.org/dc/elements/1.1/"', b""))
        heads.append(re.sub(rb"\s*<author>.*?</author>", b"", heads[0], count=1, flags=re.DOTALL))
        heads.append(heads[0].replace(b"<channel>" if fmt == "rss" else b"<feed ",
                                      b'<channel xmlns:zz="urn:zz">' if fmt == "rss" else b'<feed xmlns:zz="urn:zz" '))
        items += [changes[fmt == "atom"](items[i % len(items)]) for i, changes in enumerate(XML_ITEM_DEFECTS.values())]
        items += [b"    <item>\n", b"    </item>\n", b"  <entry>\n", b"  </entry>\n"]  # halves that meet
    return heads, items


POOLS = {fmt: _pool(fmt) for fmt in ("rss", "atom", "json")}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(["rss", "atom", "json"]))
def test_any_mix_of_envelopes_and_items_gets_the_verdict_of_the_whole(data, fmt):
    heads, items = POOLS[fmt]
    template = composed(fmt, articles=[])
    checked: set = set()  # shared, as in a publish run
    for _ in range(data.draw(st.integers(1, 3))):
        doc = dataclasses.replace(template, head=data.draw(st.sampled_from(heads)),
                                  items=tuple(data.draw(st.lists(st.sampled_from(items), max_size=5))))
        same_verdict(fmt, doc, checked)


# --- dispatch by file name, OPML and HTML -------------------------------------------------


def publish_all(out: Path, articles: list[StoredArticle], *, limit: int = 50, site: Site = SITE):
    """The publish stage as the pipeline runs it, minus the database: plan every feed of
    these articles, render, validate and write."""
    refs = [ArticleRef(id=a.id, source=a.source, sources=(a.source,), category=a.category, channel=a.channel,
                       title=a.title, author=a.author, date=a.date, updated=a.updated, content_hash=a.content_hash)
            for a in sorted(articles, key=lambda a: a.id)]
    by_id = {a.id: a for a in articles}
    sources = [Source(name="quiet", url="https://origin.example.com/quiet.xml", category="空", channel=None,
                      interval=900)]  # a configured source without articles: an empty feed too
    plan = plan_site(refs, sources, [], site=site, items_per_feed=limit, default_interval=900)
    return publish_site(out, plan, site, previous={}, load=lambda ids: [by_id[i] for i in ids if i in by_id])


@pytest.fixture(scope="module")
def site_files(tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("site")
    articles = articles_with_the_seed() + [article(100 + i, f"Older {i}", date=T0 - timedelta(days=10, hours=i))
                                           for i in range(7)]
    result = publish_all(out, articles, limit=4)
    assert result.failed == ()
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_file_the_publisher_writes_passes(site_files):
    assert {"index.html", "index.opml", "all.rss.xml", "all.atom.xml", "all.json"} <= set(site_files)
    assert any(p.startswith("archive/") for p in site_files)
    assert any(json.loads(d)["items"] == [] for p, d in site_files.items() if p.endswith(".json"))  # an empty feed
    for rel_path, data in site_files.items():
        validate(rel_path, data)
        if rel_path.endswith((".rss.xml", ".atom.xml")):
            assert feedparser.parse(io.BytesIO(data)).bozo == 0, rel_path


def test_opml_defects_are_refused(site_files):
    opml = site_files["index.opml"]
    assert "no <body>" in refused("index.opml", edited(opml, _remove("body")))
    assert "no <head>" in refused("index.opml", edited(opml, _remove("head")))
    assert "<outline> without a text" in refused(
        "index.opml", edited(opml, lambda root: root.find("body/outline/outline").attrib.pop("text")))
    assert "not <opml>" in refused("index.opml", edited(opml, lambda root: setattr(root, "tag", "rss")))


def test_html_defects_are_refused(site_files):
    html = site_files["index.html"]
    assert "does not end with </html>" in refused("index.html", html[: len(html) // 2])
    assert "NUL character" in refused("index.html", html.replace(b"<body", b"\x00<body", 1))
    assert "not UTF-8" in refused("index.html", html.replace(b"</html>", b"\xff</html>"))
    assert "no <html> start tag" in refused("index.html", b"<p>hi</p></html>")


def test_other_files_must_be_utf8_and_other_xml_well_formed():
    validate("robots.txt", "User-agent: *\n# 金融\n".encode())
    assert "not UTF-8" in refused("robots.txt", b"caf\xe9")
    validate("sitemap.xml", b"<?xml version='1.0' encoding='UTF-8'?><urlset/>")
    assert "not well-formed" in refused("sitemap.xml", b"<urlset>")


# --- the shared corpus: real bodies through parse, normalize and publish ------------------


@pytest.mark.corpus
def test_real_corpus_articles_publish_without_a_refusal(tmp_path):
    from aggregator.normalize import normalize_entries
    from aggregator.parse import parse_feed

    now = datetime(2026, 1, 1, tzinfo=UTC)
    articles: list[StoredArticle] = []
    for path in sorted(corpus_dir().glob("*/*")):
        source = Source(name=path.name, url=f"https://corpus.example/{path.name}",
                        category=path.name.split("_")[0] or "misc", channel=None, interval=900)
        try:
            parsed = parse_feed(path.read_bytes(), [], source.url, source=source.name)
        except AggregatorError:  # ill-formed on purpose: nothing to publish
            continue
        drafts, _ = normalize_entries(parsed.entries[:3], source, now=now)
        for d in drafts:
            n = len(articles) + 1
            articles.append(StoredArticle(
                id=n, uid=f"{n:032x}", source=d.source, category=d.category, channel=d.channel, guid=d.guid,
                link=d.link, title=d.title, author=d.author, date=d.date or now, image=d.image,
                body_html=d.body_html, summary=d.summary, content_hash=d.content_hash, first_seen=now,
                updated=d.date or now, post_name=f"{n}.md"))
    assert articles
    result = publish_all(tmp_path, articles, limit=50)
    assert result.failed == (), result.failed[:3]
    for p in (p for p in tmp_path.rglob("*") if p.is_file()):
        validate(p.relative_to(tmp_path).as_posix(), p.read_bytes())
