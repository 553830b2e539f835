"""Text helpers around the clean stage: plain text, titles, excerpts, canonical URLs.

Owns: the visible text of (cleaned) HTML for excerpts, dedup keys and the fidelity
measure; title cleaning; text excerpts that never cut markup; the characters XML 1.0
forbids; srcset tokenising; the tracking-parameter table, used by ``strip_tracking`` (body links and images,
in the clean stage) and ``canonical_url`` (dedup keys: also drops fragments, lower-cases
hosts).
Must not: do I/O, read the clock or config, keep state between calls — pure functions,
safe in a worker process.
"""

from __future__ import annotations

import re
import unicodedata
from html import unescape
from html.parser import HTMLParser
from urllib.parse import unquote_plus, urlsplit, urlunsplit

__all__ = ["html_to_text", "clean_title", "excerpt", "text_excerpt", "first_image", "parse_srcset",
           "strip_tracking", "canonical_url", "strip_illegal_chars"]


# --- characters ------------------------------------------------------------------------

# XML 1.0 §2.2 Char, complemented: C0 controls but TAB/LF/CR, lone surrogates, U+FFFE/FFFF.
# One of them in a feedgen field kills the whole feed (HAZARDS "Publishing"); nh3 (Rust
# strings) raises on lone surrogates, and in a post one cannot even be encoded as UTF-8.
_ILLEGAL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_WS_RE = re.compile(r"[^\S\u3000]+")  # whitespace runs, except CJK ideographic space
_MEDIA_SCHEMES = ("http", "https")


def _strip_illegal(text: str) -> str:
    # Cleaning's filter: every surrogate code point goes, paired or not (nh3 refuses them;
    # the cleaned bytes are pinned by the equivalence tests). strip_illegal_chars below,
    # for what the outputs write, first joins a pair into the character it stands for.
    return _ILLEGAL_CHARS_RE.sub("", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def strip_illegal_chars(text: str) -> str:
    """Remove the characters XML 1.0 forbids (and that cannot be UTF-8 encoded): the one
    filter every output (posts, feeds, OPML, index page) applies to what it writes."""
    if not _ILLEGAL_CHARS_RE.search(text):  # nearly every text: one scan, no copy
        return text
    if _SURROGATE.search(text):
        # A *pair* of surrogate code points (JSON "\ud83d\ude00", 'surrogatepass'
        # decoding) is one real character: join it first, so only lone halves are lost.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _ILLEGAL_CHARS_RE.sub("", text)


def _is_absolute_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 literal
        return False
    return parts.scheme.lower() in _MEDIA_SCHEMES and bool(parts.netloc)


# --- text ------------------------------------------------------------------------------

# Content never shown. Only elements whose end tag is required: an unclosed <option>
# would hide the rest of the text.
_TEXT_SKIP = frozenset("script style template iframe noembed noframes title textarea select "
                       "datalist svg".split())
_TEXT_BLOCKS = frozenset(
    "p br div li ul ol dl dt dd h1 h2 h3 h4 h5 h6 blockquote pre table thead tbody tfoot tr "
    "td th caption figure figcaption hr section article header footer aside details summary "
    "center main nav address form fieldset legend".split())


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _TEXT_SKIP:
            self.skipping.append(tag)
        elif tag in _TEXT_BLOCKS and not self.skipping:
            self.parts.append(" ")

    handle_startendtag = handle_starttag  # "/>" means nothing in HTML: <script/> opens

    def handle_endtag(self, tag):
        if tag in self.skipping:
            while self.skipping.pop() != tag:
                pass
        elif tag in _TEXT_BLOCKS and not self.skipping:
            self.parts.append(" ")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


# A start or end tag in the one shape every HTML tokenizer reads alike (html.parser of
# any Python version, the HTML standard's tokenizer): ASCII name, attributes separated by
# ASCII whitespace, values quoted or plain. The cleaned bodies nh3 serializes are all
# markup of this shape; anything else (comments, "<" in text, <a/b>…) takes html.parser.
_WS = r"[\t\n\r\f ]"
_SIMPLE_TAG_RE = re.compile(
    rf"<(?:/([a-zA-Z][a-zA-Z0-9-]*){_WS}*"
    rf"|([a-zA-Z][a-zA-Z0-9-]*)(?:{_WS}+[a-zA-Z_:][-a-zA-Z0-9_:.]*"
    rf"""(?:{_WS}*={_WS}*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*{_WS}*/?)>""")
# Elements whose content html.parser may not read as markup: script and style; since
# the 2025 security releases also title and textarea (RCDATA) and the raw-text elements
# of the HTML standard. Its own rules decide there, whatever the Python version.
_PARSER_MODES = frozenset({
    "script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes", "noscript", "plaintext",
    *HTMLParser.CDATA_CONTENT_ELEMENTS, *getattr(HTMLParser, "RCDATA_CONTENT_ELEMENTS", ()),
})


def _feed_simple(parser: _TextParser, pieces: list[str]) -> bool:
    """Drive ``parser``'s handlers over the ``pieces`` of ``_SIMPLE_TAG_RE.split(html)``
    without html.parser's tokenizer (pure Python, regex by regex; 1.7 s under the profiler
    for the corpus's 14,572 texts, issue 8): each text between two tags decoded with
    ``html.unescape`` as html.parser does. False, with the parser left half-fed, when the
    markup is not all of that shape; the caller then starts over with html.parser."""
    for i in range(0, len(pieces) - 1, 3):
        text, end, start = pieces[i], pieces[i + 1], pieces[i + 2]
        if "<" in text or (end or start).lower() in _PARSER_MODES:
            return False
        if text:
            parser.handle_data(unescape(text))
        if start:
            parser.handle_starttag(start.lower(), [])
        else:
            parser.handle_endtag(end.lower())
    if "<" in pieces[-1]:
        return False
    if pieces[-1]:
        parser.handle_data(unescape(pieces[-1]))
    return True


# Tags whose handling depends on the tags around them (skipped content, parser modes).
_CONTEXTUAL = _TEXT_SKIP | _PARSER_MODES


def _visible_text(html: str) -> str:
    """``_TextParser``'s text of ``html``, whitespace not yet collapsed.

    Most texts (every body the clean stage writes) are markup of the simple shape with
    no element whose content is skipped: each tag then stands for " " (a block) or ""
    whatever is around it, and the pieces of the split are replaced in place, a few
    C-level passes instead of a handler call per tag (``_feed_simple``, which does the
    same one piece at a time, takes the others; html.parser the rest). The shape is
    known when every "<" is the start of one of the split's tags: a "<" in a text, or in
    an attribute value, makes the count differ."""
    pieces = _SIMPLE_TAG_RE.split(html)  # text, end name, start name, text, ...
    if html.count("<") == len(pieces) // 3:
        ends, starts = pieces[1::3], pieces[2::3]
        lowered = {name: name.lower() for name in {*ends, *starts} if name}
        if _CONTEXTUAL.isdisjoint(lowered.values()):
            between = {name: " " if low in _TEXT_BLOCKS else "" for name, low in lowered.items()}
            between[None] = ""  # the other name group of each tag
            pieces[1::3] = map(between.__getitem__, ends)
            pieces[2::3] = map(between.__getitem__, starts)
            if "&" in html:
                pieces[::3] = [unescape(text) if "&" in text else text for text in pieces[::3]]
            return "".join(pieces)
    parser = _TextParser()
    if not _feed_simple(parser, pieces):
        parser = _TextParser()
        parser.feed(html)
        parser.close()
    return "".join(parser.parts)


def html_to_text(html: str) -> str:
    """Visible text, whitespace collapsed: blocks are separated by a space, inline tags
    join (``<b>H</b>ello`` -> ``Hello``)."""
    html = _strip_illegal(html or "")
    if "<" in html or "&" in html:
        # Only a character reference can bring back a character _strip_illegal removed
        # (&#2;): without "&", every character of the text is one of the input's.
        html = _strip_illegal(_visible_text(html)) if "&" in html else _visible_text(html)
    if "\u3000" in html:
        return _WS_RE.sub(" ", html).strip()
    # The same without a regex (3x faster): str.split() cuts at exactly the characters
    # re's \s matches (both are Py_UNICODE_ISSPACE) and drops the ends, as strip() does.
    return " ".join(html.split())


def clean_title(raw: str | None) -> str:
    """A title as plain text: entities decoded once, tags stripped, whitespace collapsed."""
    return html_to_text(raw or "")


# Characters that belong to the grapheme before them: combining marks, joiners, variation
# selectors, skin tones, emoji tags.
_CONTINUATION_RE = re.compile(
    "[\u200c\u200d\ufe00-\ufe0f\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f]")


def excerpt(html_or_text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of plain text, made from the text, never from markup
    (HAZARDS "Publishing"); cut at a nearby word boundary, ending with ``…`` when cut."""
    if limit < 1:
        raise ValueError("excerpt limit must be at least 1")
    return _cut(html_to_text(html_or_text), limit)


# A text that begins with a tag or a comment and closes a tag somewhere is a whole HTML
# document escaped twice by its feed (reddit: "&amp;lt;div class=&amp;quot;md&amp;quot;&amp;gt;"),
# not prose that mentions a tag.
_ESCAPED_MARKUP_RE = re.compile(r"\s*<(?:!--|[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>)[\s\S]*</[A-Za-z]")


def text_excerpt(text: str, limit: int = 200) -> str:
    """At most ``limit`` characters of a plain ``text`` (what ``html_to_text`` made), cut
    as ``excerpt`` cuts. A "<" in it is the article's own words (a post about HTML: "Use
    <b> for bold", an IRC log's "<nick>", an address "<a@b.org>"), not read as a tag —
    unless the whole text is markup its feed escaped twice (it begins with a tag or a
    comment and closes one): that is read as HTML, as readers show it. A character
    reference left in the text is decoded once more for the same reason ("&amp;ldquo;")."""
    if limit < 1:
        raise ValueError("excerpt limit must be at least 1")
    if "<" in text and _ESCAPED_MARKUP_RE.match(text):
        return excerpt(text, limit)
    if "&" in text and unescape(text) != text:
        text = html_to_text(text.replace("<", "&lt;"))
    return _cut(text, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    end = limit - 1
    space = text.rfind(" ", 0, end + 1)
    if space >= limit * 0.6:  # scripts without spaces (CJK) are cut anywhere
        end = space
    while end > 0 and (_CONTINUATION_RE.match(text[end]) or text[end - 1] == "\u200d"
                       or unicodedata.category(text[end]) in ("Mn", "Mc", "Me")):
        end -= 1
    return text[:end].rstrip(" ,;:、，") + "…"


class _FirstImage(HTMLParser):
    class Found(Exception):
        pass

    def handle_starttag(self, tag, attrs):
        if tag == "img" and (src := _picture(dict(attrs))):
            self.found = src
            raise self.Found


# Emoji, smilies, avatars and spacer images are not an article's picture (WordPress serves
# its emoji from s.w.org/images/core/emoji/, forums their smilies from /smilies/).
_ICON_RE = re.compile(r"(?:^|[/_.-])(?:emoji|emoticons?|smil(?:e|ey|ies)|icons?|avatars?|spacer|blank|1x1)(?:[/_.-]|$)", re.I)
ICON_MAX_PX = 48


def _is_icon(src: str, width: str | None, height: str | None) -> bool:
    for value in (width, height):
        digits = re.match(r"\s*(\d+)", value or "")
        if digits and int(digits.group(1)) <= ICON_MAX_PX:
            return True
    return _ICON_RE.search(src.split("?", 1)[0].lower()) is not None


def _picture(attrs: dict[str, str | None]) -> str | None:
    """The ``src`` of an ``<img>`` with these attributes, when first_image takes it."""
    src = (attrs.get("src") or "").strip()
    if _is_absolute_http(src) and not _is_icon(src, attrs.get("width"), attrs.get("height")):
        return src
    return None


# "<img" in html.lower(), without the lower-cased copy: no character but i/I, m/M and g/G
# lower-cases to i, m or g, except U+0130 İ, whose "i" + combining dot no "m" can follow.
_IMG_OPEN_RE = re.compile("<[iI][mM][gG]")
# One attribute of a tag of the simple shape (``_SIMPLE_TAG_RE``), as html.parser reads it
# there: the name lower-cased, quotes dropped, the value unescaped; no "=", no value.
_SIMPLE_ATTR_RE = re.compile(
    rf"""{_WS}+([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:{_WS}*={_WS}*("[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")


def _simple_first_image(html: str) -> str | None:
    """first_image without html.parser while every tag up to the picture is of the simple
    shape and none switches html.parser's mode (the cleaned bodies; html.parser reads
    their tags as ``_SIMPLE_TAG_RE`` does, in the same order). "" when one is not: the
    caller then asks html.parser."""
    at = html.find("<")
    while at != -1:
        tag = _SIMPLE_TAG_RE.match(html, at)
        if tag is None:
            return ""
        end, start = tag.group(1, 2)
        name = (end or start).lower()
        if name in _PARSER_MODES:
            return ""
        if start and name == "img":
            attrs: dict[str, str | None] = {}
            for key, value in _SIMPLE_ATTR_RE.findall(tag.group()):  # the last of a name counts
                if value[:1] in ("'", '"'):
                    value = value[1:-1]
                elif not value:  # no "="
                    value = None
                attrs[key.lower()] = unescape(value) if value else value
            if src := _picture(attrs):
                return src
        at = html.find("<", tag.end())
    return None


def first_image(html: str) -> str | None:
    """``src`` of the first ``<img>`` whose URL is absolute http(s) and that is not an icon
    (at most 48 px wide or high, or an emoji/smiley/avatar/spacer path), else None."""
    if not html or not _IMG_OPEN_RE.search(html):
        return None
    found = _simple_first_image(html)
    if found != "":
        return found
    parser = _FirstImage(convert_charrefs=True)
    try:
        parser.feed(html)
        parser.close()
    except _FirstImage.Found:
        return parser.found
    return None


def parse_srcset(value: str) -> list[tuple[str, str]]:
    """(url, descriptor) pairs, tokenised as the HTML standard does: a URL is a run of
    non-space characters, so commas inside URLs survive."""
    candidates, i, n = [], 0, len(value)
    while i < n:
        while i < n and (value[i].isspace() or value[i] == ","):
            i += 1
        start = i
        while i < n and not value[i].isspace():
            i += 1
        url, descriptor = value[start:i], ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = i
            while i < n and value[i] != ",":
                i += 1
            descriptor = " ".join(value[start:i].split())
        if url:
            candidates.append((url, descriptor))
    return candidates


# --- tracking parameters and canonical_url ---------------------------------------------

TRACKING_PARAMETERS = frozenset(
    "spm fbclid gclid dclid mc_cid mc_eid yclid igshid _hsenc _hsmi ref_src isappinstalled"
    .split())  # and every utm_*
# WeChat share links add from=timeline|groupmessage|singlemessage (+ isappinstalled=0);
# ``from`` with other values is often a real parameter, so only these go.
TRACKING_VALUES = {"from": frozenset({"timeline", "groupmessage", "singlemessage"})}
DEFAULT_PORTS = {"http": "80", "https": "443"}
_URL_TAB_NL_RE = re.compile(r"[\t\n\r]")  # URL standard: removed anywhere


def _is_tracking(parameter: str) -> bool:
    key, _, value = parameter.partition("=")
    if "%" in key or "+" in key:  # else unquote_plus returns it as it is
        key = unquote_plus(key)
    key = key.lower()
    if key.startswith("utm_") or key in TRACKING_PARAMETERS:
        return True
    values = TRACKING_VALUES.get(key)  # the value decoded only for the keys it decides
    return values is not None and unquote_plus(value).lower() in values


def strip_tracking(url: str) -> str:
    """``url`` without its tracking parameters (``TRACKING_PARAMETERS``, ``utm_*``,
    ``TRACKING_VALUES``); every other character, parameter order and empty parameters
    included, kept as it was, and a URL without tracking parameters comes back unchanged.

    Split as browsers split (the URL standard): the fragment starts at the first ``#``,
    the query at the first ``?`` before it. No parsing, so it never raises."""
    if "?" not in url:  # most links and image URLs
        return url
    head, hash_, fragment = url.partition("#")
    path, question, query = head.partition("?")
    if not question:
        return url
    kept = "&".join(p for p in query.split("&") if not _is_tracking(p))
    if kept == query:
        return url
    return path + ("?" + kept if kept else "") + hash_ + fragment


def canonical_url(url: str) -> str:
    """The URL reduced to its identity, for dedup: ``strip_tracking``, then the fragment
    dropped (``#!`` routes are identity and stay), scheme and host lower-cased, http taken
    as https, default port dropped, empty parameters dropped, empty http(s) path made ``/``; everything
    else, parameter order included, kept. Unparseable input comes back stripped; never
    raises."""
    # stripped again: a path can end in whitespace once the query is gone ("/\f?utm_x=1")
    url = strip_tracking(_URL_TAB_NL_RE.sub("", (url or "").strip())).strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    original, netloc = parts.scheme.lower(), parts.netloc
    # A site that moves to https serves the same stories: one identity (issue 5).
    scheme = "https" if original == "http" else original
    if netloc:
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":")
        if not colon or not (port.isascii() and port.isdigit() or port == ""):
            host, port = hostport, ""  # no port: the colon was inside an IPv6 literal
        if port and port in (DEFAULT_PORTS.get(original), DEFAULT_PORTS.get(scheme)):
            port = ""
        netloc = f"{userinfo}{at}{host.lower()}" + (f":{port}" if port else "")
    path = parts.path or ("/" if netloc and scheme in DEFAULT_PORTS else "")
    query = "&".join(p for p in parts.query.split("&") if p)
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, path, query, fragment))
