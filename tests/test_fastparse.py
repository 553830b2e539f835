"""fastparse.fast_parse must give exactly what the feedparser path (parse.parse_feed) gives,
whenever it gives anything: on every file of the shared corpus and on hand-written edge
cases. The reference is always the real parse_feed on the same bytes, with its fast path
switched off; nothing expected here is written by hand except which documents the fast path
must accept or decline."""

from __future__ import annotations

import dataclasses

import pytest

from aggregator import fastparse, parse
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


def _reference(body: bytes, url: str):
    """parse_feed's result through feedparser: parse_feed tries the fast path first, so for
    the reference it is switched off (made to decline, as it does outside its envelope)."""
    original = fastparse.fast_parse
    fastparse.fast_parse = lambda text, url, warnings=(): None
    try:
        return parse.parse_feed(body, {}, url)
    except ParseError as e:
        return e
    finally:
        fastparse.fast_parse = original


def _compare(body: bytes, url: str = URL):
    """(reference ParsedFeed or the exception parse_feed raised, fast result)."""
    text, warnings = _prepared(body)
    return _reference(body, url), fast_parse(text, url, warnings)


@pytest.mark.parametrize("folder", ["real", "illformed"])
def test_equal_to_feedparser_path_on_the_corpus(folder):
    files = sorted(p for p in (corpus_dir() / folder).iterdir() if p.is_file())
    assert files, f"no files in {folder}"
    accepted, mismatches, versions = 0, [], set()
    for path in files:
        body = path.read_bytes()
        if body[:2] == b"\x1f\x8b" or not body.strip():
            continue  # parse_feed refuses these before decoding
        ref, fast = _compare(body, f"https://example.org/{path.name}")
        if fast is None:
            continue
        accepted += 1
        versions.add(fast.version)
        if isinstance(ref, Exception):
            mismatches.append(f"{path.name}: feedparser path raised {ref!r}, fast path did not")
        elif fast != ref:
            mismatches.append(f"{path.name}: " + "; ".join(_differences(ref, fast))[:600])
    assert not mismatches, "\n".join(mismatches)
    if folder == "real":
        # The envelope is meant to cover ordinary RSS 2.0 / Atom 1.0: most real files.
        assert accepted * 2 > len(files), f"fast path accepted only {accepted} of {len(files)}"
        # ... and the comparison above to cover the later additions to it with real files.
        missing = {"rss10", "rss090", "atom03", "rss091n"} - versions
        assert not missing, f"no corpus file of these versions took the fast path: {missing}"


def _rss(items: str, channel: str = "", ns: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"{ns}><channel>'
            f"<title>Blog</title><link>https://example.org/</link><description>d</description>"
            f"{channel}{items}</channel></rss>").encode()


def _atom(entries: str, feed: str = "", attrs: str = "") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom"{attrs}>'
            f"<title>Blog</title><id>urn:x</id><updated>2024-01-01T00:00:00Z</updated>"
            f'<link href="https://example.org/"/>{feed}{entries}</feed>').encode()


def _rdf(items: str, channel: str = "", ns: str = ' xmlns="http://purl.org/rss/1.0/"', rdf: str = "rdf") -> bytes:
    """RSS 1.0: the items (and image, textinput) are siblings of <channel>, not children."""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<{rdf}:RDF '
            f'xmlns:{rdf}="http://www.w3.org/1999/02/22-rdf-syntax-ns#"{ns}>'
            f'<channel {rdf}:about="https://example.org/"><title>Blog</title><link>https://example.org/</link>'
            f"<description>d</description>{channel}</channel>{items}</{rdf}:RDF>").encode()


def _atom03(entries: str, feed: str = "") -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<feed version="0.3" xmlns="http://purl.org/atom/ns#">'
            '<title mode="escaped" type="text/html">Blog</title><modified>2004-01-01T00:00:00Z</modified>'
            f'<link rel="alternate" type="text/html" href="https://example.org/"/>{feed}{entries}</feed>').encode()


MEDIA = ' xmlns:media="http://search.yahoo.com/mrss/"'
CONTENT = ' xmlns:content="http://purl.org/rss/1.0/modules/content/"'
DC = ' xmlns:dc="http://purl.org/dc/elements/1.1/"'
ITUNES = ' xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"'
SY = ' xmlns:sy="http://purl.org/rss/1.0/modules/syndication/"'
RSS1 = ' xmlns="http://purl.org/rss/1.0/"'
ATOM = ' xmlns:atom="http://www.w3.org/2005/Atom"'
PSC = ' xmlns:psc="http://podlove.org/simple-chapters"'
GEORSS = ' xmlns:georss="http://www.georss.org/georss"'
NETSCAPE = ('<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            '"http://my.netscape.com/publish/formats/rss-0.91.dtd">')
RDF_ITEM = ('<item rdf:about="https://example.org/{n}"><title>Item {n}</title><link>https://example.org/{n}</link>'
            "<description>Summary {n}</description><dc:date>2024-03-0{n}T10:00:00+01:00</dc:date>"
            "<dc:creator>Jane</dc:creator><dc:subject>news</dc:subject></item>")

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
    # RSS 1.0 / 0.90 (RDF): version from the namespace, rdf:about as the id, items outside
    # <channel>, image and textinput as siblings of the channel that hold no feed fields.
    "rss 1.0": _rdf(
        RDF_ITEM.format(n=1)
        + '<image rdf:about="https://example.org/logo.png"><title>Logo</title><link>https://example.org/</link>'
          "<url>https://example.org/logo.png</url></image>"
        + '<item rdf:about="https://example.org/2"><title>Item 2</title><link>/2</link>'
          "<description>short</description><content:encoded><![CDATA[<p>The long body</p>]]></content:encoded>"
          "<dc:identifier>urn:x:2</dc:identifier></item>"
        + '<textinput rdf:about="https://example.org/search"><title>Search</title><description>s</description>'
          "<name>q</name><link>https://example.org/search</link></textinput>"
        + "<item><title>no about</title><link>https://example.org/3</link></item>",
        channel='<image rdf:resource="https://example.org/logo.png"/><items><rdf:Seq>'
                '<rdf:li rdf:resource="https://example.org/1"/><rdf:li resource="https://example.org/2"/>'
                '</rdf:Seq></items><textinput rdf:resource="https://example.org/search"/>'
                "<dc:date>2024-03-01T00:00:00Z</dc:date><dc:language>en</dc:language>"
                '<sy:updatePeriod>daily</sy:updatePeriod><admin:generatorAgent rdf:resource="https://g.example/"/>',
        ns=RSS1 + DC + CONTENT + SY + ' xmlns:admin="http://webns.net/mvcb/"'),
    "rss 1.0 items inside the channel": _rdf("", channel=RDF_ITEM.format(n=1) + RDF_ITEM.format(n=2),
                                             ns=RSS1 + DC),
    "rss 1.0 with RDF under another prefix": _rdf(RDF_ITEM.format(n=1).replace("rdf:", "r:"), rdf="r", ns=RSS1 + DC),
    # feedparser reads rdf:about through the prefix "rdf" mapped to its canonical name: here
    # "rdf" names Dublin Core, so it looks for dc:about and the items have no id.
    "rss 1.0 with the rdf prefix taken": _rdf(RDF_ITEM.format(n=1).replace("rdf:", "r:").replace("dc:", "rdf:"),
                                              rdf="r", ns=RSS1 + DC.replace("xmlns:dc", "xmlns:rdf")),
    "rss 1.0 declared before atom": _rdf(RDF_ITEM.format(n=1), ns=RSS1 + ATOM + DC,
                                         channel='<atom:link rel="self" href="https://example.org/rss"/>'),
    "atom declared before rss 1.0": _rdf(RDF_ITEM.format(n=1), ns=ATOM + RSS1 + DC,
                                         channel='<atom:link rel="self" href="https://example.org/rss"/>'),
    "rss 0.90": _rdf(RDF_ITEM.format(n=1).replace("<dc:", "<x").replace("</dc:", "</x"),
                     ns=' xmlns="http://my.netscape.com/rdf/simple/0.9/"'),
    "rss 2.0 declaring the rss 1.0 namespace": _rss("<item><title>t</title></item>",
                                                    ns=' xmlns:rss1="http://purl.org/rss/1.0/"'),
    "userland rss2 namespace": _rss("<item><title>t</title><link>https://example.org/a</link></item>",
                                    ns=' xmlns="http://backend.userland.com/rss2"'),
    # A DOCTYPE feedparser removes before parsing (and names the version after, if Netscape's).
    "netscape doctype": (f'<?xml version="1.0"?>\n{NETSCAPE}\n<rss version="0.91"><channel><title>t</title>'
                         "<item><title>i</title><link>https://example.org/i</link></item></channel></rss>").encode(),
    "doctype on the declaration's line": (f'<?xml version="1.0"?>{NETSCAPE}<rss version="0.91"><channel>'
                                          "<title>t</title><item><title>i</title></item></channel></rss>").encode(),
    "other doctype after a stylesheet and a comment": (
        b'<?xml version="1.0"?>\n<?xml-stylesheet href="s.css" type="text/css"?>\n<!-- generated -->\n'
        b'<!DOCTYPE rss SYSTEM "rss.dtd">\n') + _rss("<item><title>t</title></item>").split(b"\n", 1)[1],
    # Atom 0.3: modes other than base64 change nothing; feedparser skips a <div> inside a
    # text/html construct (and then leaves its scope open), and re-types the construct as
    # XHTML at any other element inside it.
    "atom 0.3": _atom03(
        '<entry><title mode="escaped" type="text/html">A &amp;lt;b&amp;gt;</title><id>tag:e,2004:1</id>'
        '<link rel="alternate" type="text/html" href="https://example.org/1"/>'
        "<created>2004-01-01T10:00:00Z</created><issued>2004-01-01T11:00:00+01:00</issued>"
        "<modified>2004-01-02T10:00:00Z</modified><author><name>Jane</name><url>https://j.example/</url></author>"
        '<summary type="text/plain">short</summary>'
        '<content type="text/html" mode="escaped">&lt;p&gt;body&lt;/p&gt;</content></entry>'
        '<entry><title>x</title><id>tag:e,2004:2</id><modified>2004-01-03T10:00:00Z</modified>'
        '<content type="application/xhtml+xml" mode="xml" xml:base="https://example.org/2/">'
        '<div xmlns="http://www.w3.org/1999/xhtml">Hi <a href="a">there</a><br/></div></content>'
        '<dcterms:created xmlns:dcterms="http://purl.org/dc/terms/">2004-01-03T09:00:00Z</dcterms:created>'
        "</entry>",
        feed='<tagline mode="escaped" type="text/html">sub</tagline><info mode="xml" type="text/html">'
             '<div xmlns="http://www.w3.org/1999/xhtml">An Atom feed. See <a href="/help">help</a>.</div></info>'),
    "typepad div keeps its scope open": _atom(
        '<entry xml:base="https://example.org/e/"><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<summary type="html" xml:base="https://elsewhere.example/s/"><div>a &amp; b</div></summary>'
        '<link href="after-the-div"/><title type="html"><div>second <div>nested</div></div></title></entry>'
        '<entry><title>y</title><id>2</id><updated>2024-01-02T00:00:00Z</updated><link href="other"/></entry>'),
    "markup inside a description": _rss(
        '<item><title>t</title><description>before &amp; <b>bold</b> <img src="/i.png"/> after &lt; '
        '<![CDATA[x & y]]><p class="c">para <a href="rel">link</a></p></description></item>'
        '<item><title>u</title><description><div>only a div &amp; text</div></description></item>'),
    "element of a known namespace inside xhtml content": _atom(
        '<entry><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
        '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">v '
        '<media:content xmlns:media="http://search.yahoo.com/mrss/" url="https://e.org/v.mp4"/></div>'
        "</content></entry>"),
    # expat (namespace_prefixes on) names a namespaced attribute by its document prefix too
    # (feedparser has no "url" here, so no image)
    "attribute under a non-canonical prefix": _rss(
        '<item><title>t</title><m:content m:url="https://e.org/a.jpg" medium="image"/></item>',
        ns=' xmlns:m="http://search.yahoo.com/mrss/"'),
    "attributes sharing a local name": _rss(
        '<item><title>t</title><m:content url="https://e.org/b.mp4" x:type="image/png" type="video/mp4"/>'
        '<m:content x:url="https://e.org/c.png" url="https://e.org/d.mp4"/></item>',
        ns=' xmlns:m="http://search.yahoo.com/mrss/" xmlns:x="urn:x"'),
    "namespaced attributes inside xhtml content": _atom(
        '<entry><title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><b xml:lang="en" xml:base="s/">x'
        '</b></div></title><id>1</id><updated>2024-01-02T00:00:00Z</updated></entry>'),
    "podlove chapters": _rss(
        '<item><title>t</title><psc:chapters version="1.2"><psc:chapter start="00:00:01.500" title="One"/>'
        '<psc:chapter start="bad" title="Two" href="https://e.org/"/></psc:chapters>'
        '<psc:chapters><psc:chapter title="ignored: a second list is not read"/></psc:chapters></item>'
        '<item><title>u</title><psc:chapter title="outside any list"/></item>',
        channel='<psc:chapters><psc:chapter start="01:00" title="feed level"/></psc:chapters>', ns=PSC),
    "georss": _rss(
        "<item><title>a</title><georss:point>45.256 -71.92</georss:point><georss:elev>3</georss:elev></item>"
        "<item><title>b</title><georss:line>45.1 -71.9 46.1 -72.9</georss:line></item>"
        "<item><title>c</title><georss:polygon>1 2 3 4 5 6 1 2</georss:polygon></item>"
        "<item><title>d</title><georss:box>1 2 3 4</georss:box><georss:point>not a point</georss:point></item>",
        ns=GEORSS),
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_edge_cases_accepted_and_equal(name):
    ref, fast = _compare(ACCEPTED[name])
    assert not isinstance(ref, Exception), ref
    assert fast is not None, "the fast path declined an ordinary feed"
    assert fast == ref, "\n".join(_differences(ref, fast))


DECLINED = {
    "not well-formed": _rss("<item><title>t &nbsp; x</title></item>"),
    "base64 content": _atom('<entry><title>x</title><id>1</id><updated>2024-01-02T00:00:00Z</updated>'
                            '<content type="application/octet-stream">aGVsbG8=</content></entry>'),
    "atom 0.3 base64 mode": _atom03('<entry><title>x</title><id>1</id><modified>2004-01-01T00:00:00Z</modified>'
                                    '<content type="text/plain" mode="base64">aGVsbG8=</content></entry>'),
    "prefix rebound": _rss('<item><title>t</title><a:x xmlns:a="urn:one">1</a:x>'
                           '<a:y xmlns:a="urn:two">2</a:y></item>'),
    # no RSS 1.0 / 0.90 namespace: feedparser reports no version
    "rdf without a version namespace": _rdf(RDF_ITEM.format(n=1), ns=DC),
    # feedparser's regex finds a DOCTYPE only at a line start: expat then sees this one
    "doctype after markup on its line": (f'<?xml version="1.0"?>\n<?xml-stylesheet href="s.css"?>{NETSCAPE}'
                                         '<rss version="0.91"><channel><title>t</title><item><title>i</title>'
                                         "</item></channel></rss>").encode(),
    # the DOCTYPE removed, the entity is undefined for expat: feedparser's loose parser
    "doctype and an undefined entity": (f'<?xml version="1.0"?>\n{NETSCAPE}\n<rss version="0.91"><channel>'
                                        "<title>t &laquo;</title><item><title>i</title></item></channel></rss>"
                                        ).encode(),
    # feedparser calls _end_source for HTML5 <source>, inside the description
    "html5 source inside a description": _rss('<item><title>t</title><description>v <video>'
                                              '<source src="a.mp4"/></video></description></item>'),
    "svg inside a description": _rss('<item><title>t</title><description>v <svg><circle r="1"/></svg>'
                                     "</description></item>"),
    # feedparser raises TypeError on a chapter without start
    "podlove chapter without start": _rss('<item><title>t</title><psc:chapters><psc:chapter title="x"/>'
                                          "</psc:chapters></item>", ns=PSC),
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
