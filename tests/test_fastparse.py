"""fastparse.fast_parse must give exactly what the feedparser path (parse.parse_feed) gives,
whenever it gives anything: on every file of the shared corpus and on hand-written edge
cases. The reference is always the real parse_feed on the same bytes; nothing expected here
is written by hand except which documents the fast path must accept or decline."""

from __future__ import annotations

import dataclasses

import pytest

from aggregator import parse
from aggregator.encoding import decode_feed_bytes
from aggregator.errors import ParseError
from aggregator.fastparse import fast_parse
from tests.conftest import corpus_dir

URL = "https://example.org/blog/feed.xml"


def _prepared(body: bytes) -> tuple[str, list[str]]:
    """The text and warnings parse_feed has at the point it calls feedparser (no headers)."""
    decoded = decode_feed_bytes(body, None)
    text, replaced = parse._replace_invalid_char_refs(decoded.text)
    warnings = list(decoded.warnings)
    if replaced:
        warnings.append(f"replaced {replaced} invalid character reference"
                        f"{'s' if replaced > 1 else ''} with U+FFFD")
    return text, warnings


def _differences(ref, fast) -> list[str]:
    out = []
    for field in dataclasses.fields(ref):
        a, b = getattr(ref, field.name), getattr(fast, field.name)
        if field.name == "entries" and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                out += [f"entry {i} {g.name}: {getattr(x, g.name)!r} != {getattr(y, g.name)!r}"
                        for g in dataclasses.fields(x) if getattr(x, g.name) != getattr(y, g.name)]
        elif a != b:
            out.append(f"{field.name}: {a!r} != {b!r}")
    return out


def _compare(body: bytes, url: str = URL):
    """(reference ParsedFeed or the exception parse_feed raised, fast result)."""
    try:
        ref = parse.parse_feed(body, {}, url)
    except ParseError as e:
        ref = e
    text, warnings = _prepared(body)
    return ref, fast_parse(text, url, warnings)


@pytest.mark.parametrize("folder", ["real", "illformed"])
def test_equal_to_feedparser_path_on_the_corpus(folder):
    files = sorted(p for p in (corpus_dir() / folder).iterdir() if p.is_file())
    assert files, f"no files in {folder}"
    accepted, mismatches = 0, []
    for path in files:
        body = path.read_bytes()
        if body[:2] == b"\x1f\x8b" or not body.strip():
            continue  # parse_feed refuses these before decoding
        ref, fast = _compare(body, f"https://example.org/{path.name}")
        if fast is None:
            continue
        accepted += 1
        if isinstance(ref, Exception):
            mismatches.append(f"{path.name}: feedparser path raised {ref!r}, fast path did not")
        elif fast != ref:
            mismatches.append(f"{path.name}: " + "; ".join(_differences(ref, fast))[:600])
    assert not mismatches, "\n".join(mismatches)
    if folder == "real":
        # The envelope is meant to cover ordinary RSS 2.0 / Atom 1.0: most real files.
        assert accepted * 2 > len(files), f"fast path accepted only {accepted} of {len(files)}"


def _rss(items: str, channel: str = "", ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"{ns}><channel>'
            f"<title>Blog</title><link>https://example.org/</link><description>d</description>"
            f"{channel}{items}</channel></rss>").encode()


def _atom(entries: str, feed: str = "", attrs: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom"{attrs}>'
            f"<title>Blog</title><id>urn:x</id><updated>2024-01-01T00:00:00Z</updated>"
            f'<link href="https://example.org/"/>{feed}{entries}</feed>').encode()


MEDIA = ' xmlns:media="http://search.yahoo.com/mrss/"'
CONTENT = ' xmlns:content="http://purl.org/rss/1.0/modules/content/"'
DC = ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
ITUNES = ' xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"'
SY = ' xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'

ACCEPTED = {
    "cdata": _rss("<item><title><![CDATA[A <b>bold</b> & title]]></title>"
                  "<description><![CDATA[<p>Body &amp; more</p>]]></description>"
                  "<link>https://example.org/a</link></item>"),
    "entities in title": _rss("<item><title>Tom &amp;amp; Jerry &lt;3 &#8212; &#x263A;</title>"
                              "<link>/a?x=1&amp;y=2</link></item>"),
    "relative links": _rss("<item><title>t</title><link>../posts/1</link><guid>/posts/1</guid>"
                           "</item><item><title>u</title><link>posts/2?a=1&amp;b=2</link></item>"),
    "missing guid": _rss("<item><title>t</title><link>https://example.org/p</link>"
                         "<description>d</description></item>"),
    "guid isPermaLink false": _rss('<item><title>t</title><guid isPermaLink="false">abc-123</guid></item>'
                                   '<item><title>u</title><guid>https://example.org/g</guid></item>'),
    "multiple enclosures": _rss('<item><title>t</title><enclosure url="https://e.org/a.mp3" type="audio/mpeg" '
                                'length="1"/><enclosure url="/b.jpg" type="image/jpeg" length="2"/></item>'),
    "media thumbnail vs content": _rss(
        '<item><title>t</title><media:content url="https://e.org/v.mp4" type="video/mp4"/>'
        '<media:content url="https://e.org/i.png" medium="image"/>'
        '<media:thumbnail url="thumb.jpg"/></item>'
        '<item><title>u</title><media:group><media:content url="https://e.org/x.jpg"/>'
        '<media:title>inner</media:title></media:group></item>', ns=MEDIA),
    "content encoded vs description": _rss(
        "<item><title>t</title><description>short</description>"
        "<content:encoded><![CDATA[<p>long body with more text</p>]]></content:encoded></item>"
        "<item><title>u</title><content:encoded>&lt;p&gt;first&lt;/p&gt;</content:encoded>"
        "<description>second</description></item>", ns=CONTENT),
    "dc creator and date": _rss(
        "<item><title>t</title><dc:creator>Jane Doe</dc:creator><dc:date>2024-03-01T10:00:00+02:00</dc:date>"
        "<dc:subject>news</dc:subject></item>", ns=DC),
    "author forms": _rss("<item><title>a</title><author>jane@example.org (Jane Doe)</author></item>"
                         "<item><title>b</title><author>Jane Doe &lt;jane@example.org&gt;</author></item>"
                         "<item><title>c</title><author>jane@example.org</author></item>"),
    "odd dates": _rss("<item><title>a</title><pubDate>Mon, 01 Jan 2024 10:00:00 PST</pubDate></item>"
                      "<item><title>b</title><pubDate>Tue, 2 Jan 2024 10:00 +0530</pubDate></item>"
                      "<item><title>c</title><pubDate>2024-01-03</pubDate></item>"
                      "<item><title>d</title><pubDate>not a date</pubDate></item>"
                      "<item><title>e</title><pubDate>Wed, 03 Jan 2024 23:59:60 GMT</pubDate></item>"),
    "whitespace around values": _rss("<item>\n  <title>\n   spaced title \n</title>\n"
                                     "  <link>\n https://example.org/w \n</link>\n"
                                     "  <category> tag one </category><category>two</category>\n</item>"),
    "itunes summary after description": _rss(
        '<item><title>t</title><description>desc</description><itunes:summary>sum</itunes:summary>'
        '<itunes:image href="https://e.org/cover.jpg"/><itunes:author>Pod</itunes:author></item>',
        channel="<itunes:owner><itunes:name>O</itunes:name><itunes:email>o@e.org</itunes:email>"
                "</itunes:owner>", ns=ITUNES),
    "ttl and syndication": _rss("<item><title>t</title></item>",
                                channel="<ttl> 60 </ttl><sy:updatePeriod>Hourly</sy:updatePeriod>"
                                        "<sy:updateFrequency>2</sy:updateFrequency>", ns=SY),
    "channel image and unknown namespace": _rss(
        "<item><title>t</title><x:extra>1</x:extra><x:flag a='b'/></item>",
        channel="<image><url>/logo.png</url><title>Logo</title><link>/</link></image>",
        ns=' xmlns:x="urn:example:x"'),
    "mojibake and C1 controls": _rss("<item><title>caf\u00c3\u00a9 &#150; dash</title></item>"),
    "rss 0.92": _rss("<item><title>t</title></item>").replace(b'version="2.0"', b'version="0.92"'),
    "atom alternate vs enclosure": _atom(
        '<entry><title>t</title><id>tag:e,2024:1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<link rel="enclosure" type="image/png" href="/img.png"/>'
        '<link rel="alternate" type="application/pdf" href="/doc.pdf"/>'
        '<link rel="alternate" href="/post.html"/></entry>'),
    "atom content vs summary": _atom(
        '<entry><title type="html">A &amp;lt;em&amp;gt; title</title><id>1</id>'
        '<updated>2024-01-02T00:00:00-05:00</updated><summary>short text</summary>'
        '<content type="html">&lt;p&gt;the long body&lt;/p&gt;</content></entry>'
        '<entry><title type="text">plain</title><id>2</id><updated>2024-01-02T00:00:00Z</updated>'
        '<content type="text">a &lt; b</content></entry>'),
    "atom xhtml content": _atom(
        '<entry><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hi <a href="/x">there</a>'
        '<br/> &amp; more</p></div></content></entry>'),
    "atom authors": _atom(
        '<entry><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<author><name>A</name><email>a@e.org</email></author><author><name>B</name></author></entry>'
        '<entry><title>y</title><id>2</id><updated>2024-01-02T00:00:00Z</updated></entry>',
        feed="<author><name>Feed Author</name></author>"),
    "xml:base": _atom(
        '<entry xml:base="/sub/"><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<link href="post"/><content type="html" xml:base="https://cdn.example.org/c/">&lt;img src="i.png"&gt;'
        '</content></entry><entry><title>y</title><id>2</id><updated>2024-01-02T00:00:00Z</updated>'
        '<link href="other"/></entry>', attrs=' xml:base="https://example.org/base/"'),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_edge_cases_accepted_and_equal(name):
    ref, fast = _compare(ACCEPTED[name])
    assert not isinstance(ref, Exception), ref
    assert fast is not None, "the fast path declined an ordinary feed"
    assert fast == ref, "\n".join(_differences(ref, fast))


DECLINED = {
    "markup inside description": _rss("<item><title>t</title><description>a <b>b</b></description></item>"),
    "doctype": b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
               b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel>'
               b"<title>t</title><item><title>i</title></item></channel></rss>",
    "not well-formed": _rss("<item><title>t &nbsp; x</title></item>"),
    "georss": _rss('<item><title>t</title><georss:point>1 2</georss:point></item>',
                   ns=' xmlns:georss="http://www.georss.org/georss"'),
    "rss 1.0": b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
               b'xmlns="http://purl.org/rss/1.0/"><channel rdf:about="x"><title>t</title></channel>'
               b'<item rdf:about="y"><title>i</title></item></rdf:RDF>',
    "base64 content": _atom('<entry><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
                            '<content type="application/octet-stream">aGVsbG8=</content></entry>'),
    "prefix rebound": _rss('<item><title>t</title><a:x xmlns:a="urn:one">1</a:x>'
                           '<a:y xmlns:a="urn:two">2</a:y></item>'),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_outside_the_envelope_declines(name):
    text, warnings = _prepared(DECLINED[name])
    assert fast_parse(text, URL, warnings) is None


def test_decoding_warnings_are_carried_over():
    body = _rss("<item><title>bad &#xD800; ref</title></item>")
    ref, fast = _compare(body)
    assert ref.warnings, "the reference should report the replaced reference"
    assert fast == ref


@pytest.mark.parametrize("text", ["", "   ", "<", "{}", "<rss version='2.0'>", "\ufeff<?xml version='1.0'?>"])
def test_never_raises(text):
    assert fast_parse(text, URL) is None
