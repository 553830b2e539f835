"""Tests for the clean stage (aggregator.clean).

Safety is judged by re-parsing every output with two parsers (bs4 on html.parser and on
lxml) and inspecting every element and attribute against the allowlist written out here,
independently of the module's own tables. Text fidelity is measured on every entry body
of the shared corpus against a reference text computed with bs4's ``get_text``.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import subprocess
import sys

import feedparser
import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.clean import clean_html
from aggregator.text import canonical_url, clean_title, excerpt, first_image, html_to_text
from tests.conftest import ROOT, corpus_dir, fixture_file

BASE = "https://news.example.com/section/article.html"

# bs4 warns when a (cleaned) fragment looks like a URL or a file name.
pytestmark = pytest.mark.filterwarnings("ignore::bs4.MarkupResemblesLocatorWarning")

# --- the safety oracle -----------------------------------------------------------------

# The brief's allowlist, written out again on purpose (not imported from the module).
ALLOWED_TAGS = set(
    "p br h1 h2 h3 h4 h5 h6 ul ol li dl dt dd blockquote q pre code kbd samp var table "
    "thead tbody tfoot tr th td caption colgroup col figure figcaption a img picture source "
    "video audio strong em b i u s strike del ins sub sup small mark abbr cite time hr span "
    "div section article header footer aside details summary ruby rt rp".split())
ALLOWED_ATTRIBUTES = set(
    "href title src alt width height srcset sizes type media poster controls colspan "
    "rowspan span start datetime rel referrerpolicy loading".split())
URL_SCHEMES = {"href": {"http", "https", "mailto"}, "src": {"http", "https"},
               "poster": {"http", "https"}, "srcset": {"http", "https"}}


def _scheme(url: str) -> str | None:
    """The scheme a browser would see: C0/space stripped, tab/newline removed anywhere."""
    url = re.sub(r"[\t\n\r]", "", url.strip("".join(map(chr, range(0x21))))).lower()
    match = re.match(r"([a-z][a-z0-9+.\-]*):", url)
    return match.group(1) if match else None


def unsafe(html: str, parsers=("html.parser", "lxml")) -> list[str]:
    """Every reason ``html`` is not safe; empty when it is."""
    problems = []
    if re.search(r"<\s*/?\s*(script|style|iframe|object|embed|svg|math|base|meta|form)\b",
                 html, re.I):
        problems.append("dangerous tag text")
    for parser in parsers:
        soup = BeautifulSoup(html, parser, multi_valued_attributes=None)
        for tag in soup.find_all(True):
            if tag.name not in ALLOWED_TAGS and tag.name not in ("html", "body"):
                problems.append(f"{parser}: tag <{tag.name}>")
            for name, value in tag.attrs.items():
                if name not in ALLOWED_ATTRIBUTES or name.startswith("on"):
                    problems.append(f"{parser}: <{tag.name} {name}=>")
                if name not in URL_SCHEMES:
                    continue  # alt="Re: load" is text, not a URL
                urls = [value]
                if name == "srcset":
                    urls = [c.split()[0] for c in value.split(",") if c.strip()]
                for url in urls:
                    scheme = _scheme(url)
                    if scheme is not None and scheme not in URL_SCHEMES[name]:
                        problems.append(f"{parser}: <{tag.name} {name}={url!r}>")
            if tag.name == "a" and tag.get("rel") != "noopener noreferrer":
                problems.append(f"{parser}: link without rel=noopener noreferrer")
            if tag.name == "img" and (tag.get("referrerpolicy") != "no-referrer"
                                      or tag.get("loading") != "lazy"):
                problems.append(f"{parser}: image without referrer policy / lazy loading")
    return problems


def test_oracle_catches_what_it_should():
    # The oracle itself must be able to fail, or every safety test below proves nothing.
    for bad in ['<img src=x onerror=alert(1)>', '<a href="jav&#x09;ascript:x">x</a>',
                '<q cite="javascript:x">q</q>', '<img srcset="a.png 1x, javascript:x 2x">',
                '<p style="x">p</p>', '<svg></svg>', '<a href="http://x/">no rel</a>',
                '<video poster="data:text/html,x"></video>']:
        assert unsafe(bad), bad


# --- hostile vectors -------------------------------------------------------------------

# (markup, text that must survive or None)
HOSTILE = [
    ('<svg/onload=alert(1)>', None),
    ('<img src=x onerror=alert(1)>', None),
    ('<a href="jav&#x09;ascript:alert(1)">tab</a>', "tab"),
    ('<a href="&#106;avascript:alert(1)">dec</a>', "dec"),
    ('<a href=" JaVaScRiPt:alert(1)">case</a>', "case"),
    ('<a href="javascript&colon;alert(1)">colon</a>', "colon"),
    ('<a href="java\nscript:alert(1)">nl</a>', "nl"),
    ('<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;&#x3A;alert(1)">h</a>',
     "h"),
    ('<a href="&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105'
     '&#0000112&#0000116&#0000058alert(1)">pad</a>', "pad"),
    ('<a href="\x01javascript:alert(1)">c0</a>', "c0"),
    ('<a href="&#14;javascript:alert(1)">c0e</a>', "c0e"),
    ('<a href="  &#x20;javascript:alert(1)">sp</a>', "sp"),
    ('<q cite="javascript:alert(1)">quoted</q>', "quoted"),
    ('<blockquote cite="javascript:alert(1)">bq</blockquote>', "bq"),
    ('<del cite="javascript:alert(1)">d</del><ins cite="vbscript:x">i</ins>', "di"),
    ('<img srcset="javascript:alert(1) 1x, http://ok.example/a.png 2x">', None),
    ('<picture><source srcset="javascript:alert(1)"><img src="http://ok.example/a.png">'
     '</picture>', None),
    ('<iframe srcdoc="<script>alert(1)</script>"></iframe>', None),
    ('<iframe src="javascript:alert(1)"></iframe>after', "after"),
    ('<form action="javascript:alert(1)"><button formaction="javascript:alert(1)">go</button>'
     '<input type=image src=x onerror=alert(1)></form>', "go"),
    ('<math><maction actiontype="statusline" xlink:href="javascript:alert(1)">CLICK</maction>'
     '</math>', "CLICK"),
    ('<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>', None),
    ('<style>@import "http://evil.example/x.css";</style>text', "text"),
    ('<!--[if gte IE 4]><script>alert(1)</script><![endif]-->', None),
    ('<noscript><p title="</noscript><img src=x onerror=alert(1)>">', None),
    ('<base href="javascript:alert(1)//"><a href="/x">base</a>', "base"),
    ('<meta http-equiv="refresh" content="0;url=javascript:alert(1)">', None),
    ('<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data</a>', "data"),
    ('<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">', None),
    ('<a href="vbscript:msgbox(1)">vb</a>', "vb"),
    ('<object data="javascript:alert(1)">fallback</object>', "fallback"),
    ('<embed src="javascript:alert(1)">', None),
    ('<div style="background:url(javascript:alert(1))">styled</div>', "styled"),
    ('<div style="width: expression(alert(1))">expr</div>', "expr"),
    ('<video poster="javascript:alert(1)" src="javascript:alert(1)">'
     '<source src="javascript:alert(1)"></video>', None),
    ('<audio src=x onerror=alert(1)>', None),
    ('<body onload=alert(1)>body</body>', "body"),
    ('<details open ontoggle=alert(1)>det</details>', "det"),
    ('<a href="http://ok.example/" onmouseover="alert(1)" target=_blank>ok</a>', "ok"),
    ('<svg><a xlink:href="javascript:alert(1)"><text x="20" y="20">XSS</text></a></svg>', None),
    ('<script>alert(1)</script>', None),
    ('<scr<script>ipt>alert(1)</script>', None),
    ('<IMG """><SCRIPT>alert(1)</SCRIPT>">', None),
    ('<table background="javascript:alert(1)"><tr><td>cell</td></tr></table>', "cell"),
    ('<link rel="stylesheet" href="javascript:alert(1)">', None),
    ('<frameset><frame src="javascript:alert(1)"></frameset>', None),
    ('<applet code="x" codebase="javascript:alert(1)">applet</applet>', "applet"),
    ('<template><img src=x onerror=alert(1)></template>', None),
    ('<xmp><img src=x onerror=alert(1)></xmp>', None),
    ('<plaintext><img src=x onerror=alert(1)>', None),
    ('<textarea><img src=x onerror=alert(1)></textarea>', None),
    ('<title><img src=x onerror=alert(1)></title>', None),
    ('<!-- --!><img src=x onerror=alert(1)> -->', None),
    ('<!--><img src=x onerror=alert(1)>-->', None),
    ('<![CDATA[<img src=x onerror=alert(1)>]]>', None),
    ('<img src=x:alert(alt) onerror=eval(src) alt=0>', None),
    ('<img dynsrc="javascript:alert(1)" lowsrc="javascript:alert(1)">', None),
    ('<a href="http://ok.example/" ping="http://evil.example/">ping</a>', "ping"),
    ('<isindex action="javascript:alert(1)" type=image>', None),
    ('<marquee onstart=alert(1)>marquee</marquee>', "marquee"),
    ('<div id="x" class="y" data-foo="javascript:alert(1)">attrs</div>', "attrs"),
    ('<a href="http://ok.example/&quot;onmouseover=&quot;alert(1)">q</a>', "q"),
    ('<svg><script>alert(1)</script></svg>', None),
    ('<a href="mailto:a@example.org">mail</a>', "mail"),
]


@pytest.mark.parametrize("markup, keep", HOSTILE, ids=[m[:40] for m, _ in HOSTILE])
@pytest.mark.parametrize("base", [BASE, None])
def test_hostile_vector_is_neutralised(markup, keep, base):
    out = clean_html(markup, base)
    assert unsafe(out) == [], out
    if keep:
        assert keep in html_to_text(out)
    assert clean_html(out, base) == out


# --- generated hostile markup (hypothesis) ---------------------------------------------

_TAGS = ["a", "img", "p", "div", "svg", "math", "script", "style", "iframe", "noscript",
         "form", "button", "object", "embed", "q", "blockquote", "video", "source", "picture",
         "table", "td", "tr", "xmp", "textarea", "title", "template", "base", "meta", "pre",
         "details", "font", "x-custom", "SCRIPT", "ScRiPt", "maction", "frameset", "applet",
         "plaintext", "select", "option", "li", "b", "i", "annotation-xml", "foreignObject"]
_ATTRS = ["href", "src", "srcset", "data-srcset", "poster", "cite", "style", "onload",
          "onerror", "ONCLICK", "formaction", "xlink:href", "srcdoc", "data", "action",
          "background", "data-src", "data-original", "width", "height", "class", "id",
          "title", "open", "ontoggle", "alttext"]
_URLS = ["javascript:alert(1)", " JaVaScRiPt:alert(1)", "jav&#x09;ascript:alert(1)",
         "&#106;avascript:alert(1)", "java\nscript:alert(1)", "javascript&colon;alert(1)",
         "vbscript:msgbox(1)", "data:text/html,<script>alert(1)</script>",
         "data:image/svg+xml,<svg onload=alert(1)>", "//evil.example/x", "/rel/x.png", "x.png",
         "http://ok.example/a.png", "https://ok.example/b?c=1&amp;d=2", "&#x6A;avascript:x",
         "\x01javascript:alert(1)", "javascript:alert(1) 1x, http://ok.example/a.png 2x",
         "mailto:a@example.org", "1", "0", "", "\\\\evil.example"]
_TEXT = ["hello", "<", ">", "&", "&amp;", "&lt;script&gt;", '"', "'", "<!--", "-->", "--!>",
         "<![CDATA[", "]]>", "</noscript>", "</style>", "</title>", "中文", "\n", " ", "&#0;",
         "&#2;", "&#x110000;", "&nbsp;", "=", "/>", "\x00"]

_attribute = st.builds(
    lambda name, value, quote: f" {name}={quote}{value}{quote}" if quote is not None
    else f" {name}={value.replace(' ', '')}" if value else f" {name}",
    st.sampled_from(_ATTRS), st.sampled_from(_URLS + _TEXT), st.sampled_from(['"', "'", None]))
_start_tag = st.builds(lambda tag, attrs, close: f"<{tag}{''.join(attrs)}{close}",
                       st.sampled_from(_TAGS), st.lists(_attribute, max_size=3),
                       st.sampled_from([">", "/>", ">", ""]))
_end_tag = st.sampled_from(_TAGS).map(lambda tag: f"</{tag}>")
hostile_markup = st.lists(
    st.one_of(_start_tag, _end_tag, st.sampled_from(_TEXT), st.text(max_size=4)),
    max_size=30).map("".join)

_SETTINGS = settings(max_examples=400, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(hostile_markup, st.sampled_from([BASE, None]))
def test_generated_markup_comes_out_safe(markup, base):
    assert unsafe(clean_html(markup, base)) == []


@_SETTINGS
@given(hostile_markup, st.sampled_from([BASE, None]))
# Found by this strategy in longer runs: trees lxml or html5ever does not read back as is.
@example("<li><table><li>", BASE)  # html5ever foster-parents an <li> into an <li>
@example("<b><source><p>", BASE)  # lxml reads <b><p></p></b> as <b></b><p></p>
def test_clean_is_idempotent_on_generated_markup(markup, base):
    once = clean_html(markup, base)
    assert clean_html(once, base) == once


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_clean_is_idempotent_on_any_text(text):
    once = clean_html(text, BASE)
    assert clean_html(once, BASE) == once
    assert unsafe(once) == []


# --- the shared corpus -----------------------------------------------------------------


def _corpus_bodies() -> list[tuple[str, str | None, str]]:
    """(file name, base URL, HTML) for every entry body (content and summary)."""
    bodies = []
    for path in sorted(corpus_dir().glob("*/*")):
        data = path.read_bytes()
        if path.suffix == ".json":
            try:
                items = json.loads(data).get("items") or []
            except (ValueError, AttributeError):
                continue
            for item in items:
                for key in ("content_html", "summary"):
                    if isinstance(item, dict) and isinstance(item.get(key), str):
                        bodies.append((path.name, item.get("url"), item[key]))
            continue
        try:  # HAZARDS: feedparser raises on some inputs despite its bozo flag
            parsed = feedparser.parse(io.BytesIO(data), sanitize_html=False,
                                      resolve_relative_uris=False)
        except Exception:
            continue
        for entry in parsed.entries:
            base = entry.get("link")
            for content in entry.get("content") or []:
                if content.get("value"):
                    bodies.append((path.name, content.get("base") or base, content["value"]))
            if entry.get("summary"):
                bodies.append((path.name, base, entry["summary"]))
    return bodies


@pytest.fixture(scope="module")
def corpus():
    """(file, base, source HTML, cleaned HTML) for the whole corpus, cleaned once."""
    return [(name, base, html, clean_html(html, base)) for name, base, html in _corpus_bodies()]


# Content a browser never renders as text: removed from the reference as well.
#   script/style/template: the brief;
#   iframe/noembed/noframes: raw text in HTML5, shown only by browsers without frames;
#   title: display:none;  textarea/select: form widgets, data rather than prose;
#   svg: the clean stage drops SVG whole (a large script surface; its text is graphics).
NOT_RENDERED = ["script", "style", "template", "iframe", "noembed", "noframes", "title",
                "textarea", "select", "svg"]
# A tag still open at the end of the input is dropped by HTML5 parsers and lxml ("EOF in
# tag"); html.parser prints it as text. One truncated summary in the corpus ends so.
_OPEN_TAG_AT_END = re.compile(
    r"""<[A-Za-z][^\s/>]*(?:[^>"']|"[^"]*"|'[^']*')*(?:"[^"]*|'[^']*)?\Z""")
# Characters XML 1.0 forbids: the clean stage removes them (they break the published feeds).
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def reference_text(html: str) -> str:
    """Visible text, computed independently of the module: bs4 (html.parser) get_text,
    with all whitespace removed so layout-only whitespace does not count."""
    soup = BeautifulSoup(_OPEN_TAG_AT_END.sub("", html), "html.parser")
    for tag in soup.find_all(NOT_RENDERED):
        tag.decompose()
    return _XML_ILLEGAL.sub("", re.sub(r"\s+", "", soup.get_text()))


@pytest.mark.corpus
def test_corpus_text_fidelity(corpus):
    total = kept = 0
    losses = []
    for name, _, html, out in corpus:
        source, cleaned = reference_text(html), reference_text(out)
        total += len(source)
        if source in cleaned:
            kept += len(source)
            continue
        matcher = difflib.SequenceMatcher(None, source, cleaned, autojunk=False)
        kept += sum(block.size for block in matcher.get_matching_blocks())
        losses.append((name, [source[i1:i2][:60] for op, i1, i2, _, _ in matcher.get_opcodes()
                              if op in ("delete", "replace")][:3]))
    print(f"\ncorpus text fidelity: {kept}/{total} characters = {kept / total:.6%} "
          f"over {len(corpus)} bodies")
    assert len(corpus) > 5000
    assert losses == [], losses[:10]
    assert kept == total


@pytest.mark.corpus
def test_corpus_output_is_idempotent_and_safe(corpus):
    not_idempotent = [name for name, base, _, out in corpus if clean_html(out, base) != out]
    assert not_idempotent == []
    problems = [(name, found[:2]) for name, _, _, out in corpus
                if (found := unsafe(out, parsers=("lxml",)))]
    assert problems == []


@pytest.mark.corpus
def test_corpus_outputs_keep_their_media(corpus):
    # Nothing above would notice if every link and image were dropped.
    outputs = [out for *_, out in corpus]
    assert sum("<img " in out for out in outputs) > 1000
    assert sum("<a href=" in out for out in outputs) > 2000


# --- the reference article -------------------------------------------------------------


def test_seed_article_body_keeps_its_structure():
    rss, seed = fixture_file("cls-depth.rss.xml"), fixture_file("seed-article.md")
    entry = feedparser.parse(io.BytesIO(rss.read_bytes()), sanitize_html=False).entries[0]
    out = clean_html(entry.summary, entry.link)
    body = seed.read_text(encoding="utf-8").split("---", 2)[2]
    expected = BeautifulSoup(body, "html.parser").div  # the seed wraps the item in a <div>
    got = BeautifulSoup(out, "html.parser")
    assert [t.name for t in got.find_all(True)] == [t.name for t in expected.find_all(True)]
    assert html_to_text(out) == html_to_text(body)
    assert 'class="m-b-10"' in body and "class=" not in out  # classes go, structure stays


# --- rewrites: lazy images, URLs, pixels, unknown tags ---------------------------------

LAZY = [
    ('<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" data-src="/a.jpg">',
     "https://news.example.com/a.jpg"),
    ('<img data-original="b.jpg">', "https://news.example.com/section/b.jpg"),
    ('<img src="/static/blank.gif" data-actualsrc="//cdn.example/c.png">',
     "https://cdn.example/c.png"),
    ('<img data-lazy-src="https://cdn.example/d.webp">', "https://cdn.example/d.webp"),
    ('<img data-srcset="/s.jpg 300w, /l.jpg 1200w">', "https://news.example.com/l.jpg"),
    ('<img srcset="/s.jpg 1x, /l.jpg 2x">', "https://news.example.com/l.jpg"),
    ('<img src="/real.jpg" data-src="/other.jpg">', "https://news.example.com/real.jpg"),
    ('<img data-src="https://mmbiz.qpic.cn/mmbiz_png/x/640?wx_fmt=png" data-type="png">',
     "https://mmbiz.qpic.cn/mmbiz_png/x/640?wx_fmt=png"),
    ('<img src="data:image/png;base64,iVBORw0KGgo=">', None),  # data: is refused
    ('<img alt="no source at all">', None),
]


@pytest.mark.parametrize("markup, src", LAZY)
def test_lazy_images_get_a_real_src(markup, src):
    out = clean_html(markup, BASE)
    assert first_image(out) == src
    assert "data-" not in out and "data:" not in out


def test_data_srcset_becomes_filtered_srcset():
    out = clean_html('<img data-srcset="/s.jpg 300w, javascript:x 600w, /l.jpg 1200w">', BASE)
    img = BeautifulSoup(out, "html.parser").img
    assert img["srcset"] == ("https://news.example.com/s.jpg 300w, "
                             "https://news.example.com/l.jpg 1200w")


def test_noscript_twin_of_a_lazy_image_is_not_duplicated():
    markup = ('<img src="data:image/gif;base64,R0lG" data-src="/a.jpg">'
              '<noscript><img src="/a.jpg"></noscript>')
    assert clean_html(markup, BASE).count("<img") == 1
    only_in_noscript = '<p>x</p><noscript><img src="/only.jpg"></noscript>'
    assert first_image(clean_html(only_in_noscript, BASE)) == "https://news.example.com/only.jpg"


@pytest.mark.parametrize("markup, attr, expected", [
    ('<a href="../up/x.html">l</a>', "href", "https://news.example.com/up/x.html"),
    ('<a href="?page=2">l</a>', "href", "https://news.example.com/section/article.html?page=2"),
    ('<img src="img/a.png">', "src", "https://news.example.com/section/img/a.png"),
    ('<img src="/a.png" srcset="a.png 1x, /b.png 2x">', "srcset",
     "https://news.example.com/section/a.png 1x, https://news.example.com/b.png 2x"),
    ('<video poster="p.jpg" src="v.mp4"></video>', "poster",
     "https://news.example.com/section/p.jpg"),
    ('<audio src="/a.mp3"></audio>', "src", "https://news.example.com/a.mp3"),
    ('<a href="//cdn.example/x">l</a>', "href", "https://cdn.example/x"),
    ('<a href="mailto:editor@example.org">l</a>', "href", "mailto:editor@example.org"),
    ('<a href="http://other.example/?a=1&region=us&copy=2">l</a>', "href",
     "http://other.example/?a=1&region=us&copy=2"),  # browsers do not decode &region=
])
def test_urls_are_made_absolute(markup, attr, expected):
    tag = BeautifulSoup(clean_html(markup, BASE), "html.parser").find(attrs={attr: True})
    assert tag[attr] == expected


def test_relative_urls_stay_relative_without_a_usable_base():
    for base in (None, "", "ftp://files.example/", "not a url"):
        out = clean_html('<a href="x/y.html">l</a><img src="/i.png">', base)
        assert 'href="x/y.html"' in out and 'src="/i.png"' in out
    assert 'href="https://cdn.example/x"' in clean_html('<a href="//cdn.example/x">l</a>')


@pytest.mark.parametrize("markup, kept", [
    ('<img src="http://feeds.example/~r/x/1" width="1" height="1">', False),
    ('<img src="http://t.example/p.gif" width="1px" height="1px">', False),
    ('<img src="http://t.example/p.gif" width="0" height="0">', False),
    ('<img src="http://t.example/p.gif" style="width:1px;height:1px">', False),
    ('<img src="http://t.example/p.gif" width=" 1 " height="1.0">', False),
    ('<img src="http://t.example/rule.png" width="1" height="100">', True),
    ('<img src="http://t.example/a.png" width="1">', True),
    ('<img src="http://t.example/a.png" width="640" height="480">', True),
])
def test_tracking_pixels_are_dropped(markup, kept):
    assert (first_image(clean_html(markup, BASE)) is not None) == kept


def test_text_of_unknown_and_unwrapped_tags_survives():
    markup = ('<font color=red>font</font><center>center</center><my-widget>custom</my-widget>'
              '<blink>blink</blink><object data="x.swf"><param name=a value=b>objfallback'
              '</object><form><label>label</label><button>button</button></form>'
              '<math alttext="x^2"><msup><mi>x</mi><mn>2</mn></msup></math>'
              '<math><mi>y</mi><annotation encoding="application/x-tex">y</annotation></math>')
    text = html_to_text(clean_html(markup, BASE))
    for word in ("font", "center", "custom", "blink", "objfallback", "label", "button", "x^2"):
        assert word in text
    assert text.count("y") == 1  # the TeX annotation is not shown twice


def test_media_keep_controls_and_lose_autoplay():
    out = clean_html('<video src="/v.mp4" autoplay muted loop></video><audio src="/a.mp3"'
                     ' autoplay></audio>', BASE)
    soup = BeautifulSoup(out, "html.parser")
    assert soup.video.has_attr("controls") and soup.audio.has_attr("controls")
    assert "autoplay" not in out and "loop" not in out


def test_attributes_come_out_in_a_stable_order():
    a = clean_html('<img title="t" alt="a" src="http://x.example/i.png" width="5">')
    b = clean_html('<img width="5" src="http://x.example/i.png" alt="a" title="t">')
    assert a == b


def test_output_is_the_same_in_every_process():
    # nh3's set_tag_attribute_values writes attributes in Rust HashMap order, seeded at
    # random in each process (and Python's own hash seed varies too): one process cannot
    # see that. With the old code, 8 processes all agreeing had a 1 in 128 chance.
    code = ("from aggregator.clean import clean_html;"
            "print(clean_html('<img src=http://x.example/a.png alt=a><a href=/b>b</a>"
            "<video src=http://x.example/v.mp4></video>', 'http://x.example/'))")
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": str(n)})
            for n in range(8)]
    outputs = {run.communicate()[0] for run in runs}
    assert all(run.returncode == 0 for run in runs)
    assert len(outputs) == 1 and "<img" in outputs.pop()


def test_characters_illegal_in_xml_are_removed():
    out = clean_html("<p>a\x00b\x0bc\ud800d&#2;e&#xFFFE;f\x1b</p>", BASE)
    assert re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", out) is None
    assert html_to_text(out) == "abcdef"


def test_leading_newline_in_pre_survives_repeated_cleaning():
    # HTML drops one newline right after <pre>; html5ever does not write it back, so a
    # naive clean loses a line on every pass. Clean markup must come out unchanged.
    source = "<pre>\n\n  indented\n</pre>"
    assert clean_html(source) == source
    assert clean_html("<pre>\ncode</pre>") == "<pre>code</pre>"  # the same DOM


def test_double_wrapped_cdata_body_is_kept():
    # Seen in the corpus (geekpark): the whole item body inside a literal CDATA section.
    assert clean_html("<![CDATA[<p>正文</p>]]>") == "<p>正文</p>"


def test_empty_inputs():
    assert clean_html("") == clean_html("   \n") == ""
    assert clean_html(None) == ""  # type: ignore[arg-type]


# --- pathological input ----------------------------------------------------------------


def test_deep_nesting_finishes_and_keeps_the_text():
    deep = "<div>" * 100_000 + "deep text" + "</div>" * 100_000
    out = clean_html(deep, BASE)
    assert "deep text" in out and clean_html(out, BASE) == out


def test_flattened_items_keep_text_and_lose_dangerous_content():
    markup = ("<div>" * 20_000 + "<script>evil()</script><style>x{}</style>"
              "<p>kept &amp; <b>text</b></p><!-- hidden --><iframe>frame</iframe>tail")
    out = clean_html(markup, BASE)
    assert unsafe(out) == []
    assert html_to_text(out) == "kept & text tail"
    assert clean_html(out, BASE) == out


def test_huge_attribute_list_and_many_siblings_finish():
    many_attributes = "<p " + " ".join(f"a{i}=1" for i in range(100_000)) + ">attrs</p>"
    assert html_to_text(clean_html(many_attributes)) == "attrs"
    siblings = "<font>w</font><!--c-->" * 9_000
    assert html_to_text(clean_html(siblings)) == "w" * 9_000


# --- text helpers ----------------------------------------------------------------------


@pytest.mark.parametrize("html, text", [
    ("<p>One</p><p>Two</p>", "One Two"),
    ("<b>H</b>ello <i>w</i>orld", "Hello world"),
    ("a<br>b", "a b"),
    ("<script>x()</script><style>p{}</style>visible", "visible"),
    ("<script/>hidden</script>shown", "shown"),
    ("Tom &amp; Jerry &lt;3", "Tom & Jerry <3"),
    ("  many \n\t spaces&nbsp;here ", "many spaces here"),
    ("中文　全角空格", "中文　全角空格"),
    ("", ""),
])
def test_html_to_text(html, text):
    assert html_to_text(html) == text


@pytest.mark.parametrize("raw, title", [
    ("  Hello   World \n", "Hello World"),
    ("Tom &amp; Jerry", "Tom & Jerry"),
    ("<b>Bold</b> move", "Bold move"),
    ("AT&T", "AT&T"),
    ("&lt;script&gt; is decoded once", "<script> is decoded once"),
    ("&amp;amp;", "&amp;"),
    ("Caf&eacute; &#x1F600;", "Café 😀"),
    ("x &nbsp; y", "x y"),
    ("<script>alert(1)</script>Title", "Title"),
    ("外交部：中美双方正就元首会晤有关具体安排保持密切沟通",) * 2,
    ("中文　标题", "中文　标题"),
    ("ﾊﾝｶｸ and ＦＵＬＬ", "ﾊﾝｶｸ and ＦＵＬＬ"),  # no NFKC folding
    ("a\x00b\x1b", "ab"),
    ("<p></p>", ""),
    ("", ""),
    (None, ""),
])
def test_clean_title(raw, title):
    assert clean_title(raw) == title


def test_excerpt_short_text_is_unchanged():
    assert excerpt("<p>Short <b>text</b>.</p>") == "Short text."


def test_excerpt_cuts_text_never_markup():
    html = "<p>" + "word " * 39 + '<a href="https://x.example/very/long/path">link text</a></p>'
    out = excerpt(html, 200)
    assert len(out) <= 200 and out.endswith("…")
    assert "<" not in out and "href" not in out
    assert html_to_text(html).startswith(out[:-1])


def test_excerpt_word_boundary_and_cjk():
    assert excerpt("alpha beta gamma delta", 12) == "alpha beta…"
    cjk = "财联社" * 100
    assert excerpt(cjk, 50) == cjk[:49] + "…"


def test_excerpt_does_not_split_a_combining_sequence():
    text = "e\u0301" * 10  # é as e + combining acute
    out = excerpt(text, 6)
    assert not out[:-1].endswith("e") and len(out) <= 6


def test_excerpt_rejects_a_useless_limit():
    with pytest.raises(ValueError):
        excerpt("text", 0)


@settings(max_examples=200, deadline=None)
@given(hostile_markup, st.integers(min_value=1, max_value=80))
def test_excerpt_properties(markup, limit):
    text, out = html_to_text(markup), excerpt(markup, limit)
    assert len(out) <= limit
    if out.endswith("…") and out != text:
        assert text.startswith(out[:-1])
    else:
        assert out == text


@pytest.mark.parametrize("html, src", [
    ('<p><img src="/rel.png"><img src="https://x.example/a.jpg?a=1&amp;b=2"></p>',
     "https://x.example/a.jpg?a=1&b=2"),
    ('<img src="http://x.example/1.png"><img src="http://x.example/2.png">',
     "http://x.example/1.png"),
    ("<p>no image</p>", None),
    ('<img src="data:image/png;base64,AAAA">', None),
    ("", None),
])
def test_first_image(html, src):
    assert first_image(html) == src


# --- canonical_url ---------------------------------------------------------------------

CANONICAL = [
    ("HTTPS://Example.COM:443/a?utm_source=x&b=2#frag", "https://example.com/a?b=2"),
    ("http://example.com:80", "http://example.com/"),
    ("http://example.com:8080/x", "http://example.com:8080/x"),
    ("https://e.com/p?spm=a.b.c&id=1&fbclid=zz&gclid=1", "https://e.com/p?id=1"),
    ("https://mp.weixin.qq.com/s?__biz=MzA&mid=1&idx=1&sn=ab&from=timeline&isappinstalled=0",
     "https://mp.weixin.qq.com/s?__biz=MzA&mid=1&idx=1&sn=ab"),
    ("https://e.com/s?x=1&from=groupmessage", "https://e.com/s?x=1"),
    ("https://e.com/?from=rss", "https://e.com/?from=rss"),
    ("https://e.com/p?b=2&a=1", "https://e.com/p?b=2&a=1"),
    ("https://e.com/p?mc_cid=1&mc_eid=2&yclid=3&igshid=4&_hsenc=5&ref_src=twsrc",
     "https://e.com/p"),
    ("https://e.com/p?UTM_Medium=x&utm_campaign=y", "https://e.com/p"),
    ("https://e.com/Case/Path?Q=Keep", "https://e.com/Case/Path?Q=Keep"),
    ("https://e.com/#!/route/1", "https://e.com/#!/route/1"),
    ("http://[::1]:80/x", "http://[::1]/x"),
    ("https://User@Example.com/", "https://User@example.com/"),
    ("  https://e.com/a  ", "https://e.com/a"),
    ("not a url", "not a url"),
    ("http://[bad", "http://[bad"),
    ("", ""),
]


@pytest.mark.parametrize("url, canonical", CANONICAL)
def test_canonical_url(url, canonical):
    assert canonical_url(url) == canonical


@settings(max_examples=300, deadline=None)
@given(st.builds(
    lambda scheme, host, port, path, params, frag: f"{scheme}://{host}{port}{path}"
    + ("?" + "&".join(params) if params else "") + frag,
    st.sampled_from(["http", "HTTPS", "https"]),
    st.sampled_from(["Example.com", "e.org", "[::1]"]),
    st.sampled_from(["", ":80", ":443", ":8080"]), st.sampled_from(["", "/", "/A/b"]),
    st.lists(st.sampled_from(["utm_source=x", "id=1", "from=timeline", "from=rss", "spm=1",
                              "a=%20", "b"]), max_size=4),
    st.sampled_from(["", "#x", "#!/r"])))
def test_canonical_url_is_idempotent_and_drops_tracking(url):
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert "utm_" not in once and "spm=" not in once and "from=timeline" not in once
