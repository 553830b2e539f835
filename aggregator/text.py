"""Text helpers around the clean stage: plain text, titles, excerpts, canonical URLs.

Owns: the visible text of (cleaned) HTML for excerpts, dedup keys and the fidelity
measure; title cleaning; text excerpts that never cut markup; URL canonicalisation for
dedup (tracking parameters and fragments removed).
Must not: do I/O, read the clock or config, keep state between calls — pure functions,
safe in a worker process.
"""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from .clean import _WS_RE, _is_absolute_http, _strip_illegal

__all__ = ["html_to_text", "clean_title", "excerpt", "first_image", "canonical_url"]


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


def html_to_text(html: str) -> str:
    """Visible text, whitespace collapsed: blocks are separated by a space, inline tags
    join (``<b>H</b>ello`` -> ``Hello``)."""
    html = _strip_illegal(html or "")
    if "<" in html or "&" in html:
        parser = _TextParser()
        parser.feed(html)
        parser.close()
        html = _strip_illegal("".join(parser.parts))  # &#2; decodes to an illegal one
    return _WS_RE.sub(" ", html).strip()


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
    text = html_to_text(html_or_text)
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
        if tag == "img":
            src = (dict(attrs).get("src") or "").strip()
            if _is_absolute_http(src):
                self.found = src
                raise self.Found


def first_image(html: str) -> str | None:
    """``src`` of the first ``<img>`` whose URL is absolute http(s), else None."""
    if "<img" not in (html or "").lower():
        return None
    parser = _FirstImage(convert_charrefs=True)
    try:
        parser.feed(html)
        parser.close()
    except _FirstImage.Found:
        return parser.found
    return None


# --- canonical_url ---------------------------------------------------------------------

TRACKING_PARAMETERS = frozenset(
    "spm fbclid gclid dclid mc_cid mc_eid yclid igshid _hsenc _hsmi ref_src isappinstalled"
    .split())  # and every utm_*
# WeChat share links add from=timeline|groupmessage|singlemessage (+ isappinstalled=0);
# ``from`` with other values is often a real parameter, so only these go.
TRACKING_VALUES = {"from": frozenset({"timeline", "groupmessage", "singlemessage"})}
DEFAULT_PORTS = {"http": "80", "https": "443"}


def _is_tracking(parameter: str) -> bool:
    key, _, value = parameter.partition("=")
    key = unquote_plus(key).lower()
    if key.startswith("utm_") or key in TRACKING_PARAMETERS:
        return True
    return unquote_plus(value).lower() in TRACKING_VALUES.get(key, ())


def canonical_url(url: str) -> str:
    """The URL reduced to its identity, for dedup: tracking parameters and the fragment
    dropped (``#!`` routes are identity and stay), scheme and host lower-cased, default
    port dropped, empty http(s) path made ``/``; everything else, parameter order
    included, kept. Unparseable input comes back stripped; never raises."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    scheme, netloc = parts.scheme.lower(), parts.netloc
    if netloc:
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":")
        if not colon or not (port.isascii() and port.isdigit() or port == ""):
            host, port = hostport, ""  # no port: the colon was inside an IPv6 literal
        if DEFAULT_PORTS.get(scheme) == port:
            port = ""
        netloc = f"{userinfo}{at}{host.lower()}" + (f":{port}" if port else "")
    path = parts.path or ("/" if netloc and scheme in DEFAULT_PORTS else "")
    query = "&".join(p for p in parts.query.split("&") if p and not _is_tracking(p))
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, path, query, fragment))
