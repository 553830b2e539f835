"""Clean stage: untrusted item HTML -> safe HTML fragment (text helpers: ``text.py``).

Owns: applying the rules of ``cleanrules.py`` (allowlist, trackers, share widgets, empty
wrappers, iframe players: data tables there): URL resolution against the item's base,
tracking-parameter removal, lazy-image repair, tracking-pixel removal.
Must not: do I/O, read the clock or config, keep state between calls. Every function is
pure and safe in a worker process or thread.

``clean_html`` (HAZARDS.md "Cleaning (nh3 / ammonia)"), one pass:

1. Bound the work: html5ever is super-quadratic in nesting depth, so an input with more
   than ``MAX_START_TAGS`` start tags or ``MAX_INPUT_CHARS`` characters is *flattened*:
   linear regexes cut out comments and ``DROP_WITH_CONTENT`` elements, drop every tag, and
   the text comes back as escaped ``<p>`` paragraphs. Text is kept; links and images go.
2. Rewrite the tree lxml's HTML parser reads (lxml reads entities in attributes as
   browsers do; ``html.parser`` turns ``?a=1&region=us`` into ``?a=1®ion=us``): drop
   ``DROP_WITH_CONTENT`` and share widgets with their content, keep allowed iframes
   (emptied), repair lazy images, drop 1x1 pixels and tracker images, resolve URLs and
   strip their tracking parameters, filter ``srcset``, rename (``RENAME``) or unwrap tags
   outside ``ALLOWED_TAGS`` so their text survives, keep allowed attributes only, in
   sorted order; then unwrap the wrappers left with nothing to show. One walk decides
   each element and writes it out (``_walk``), in the HTML BeautifulSoup wrote when it
   did this (issue 8: bs4 building and writing its tree was most of the CPU of a cold
   cycle; on the corpus and every test input the HTML handed to nh3 is the same, byte
   for byte, at a quarter of the cost).
3. nh3 is the authority: it re-parses that with html5ever, applies the same allowlist,
   re-checks every URL (``_cleaner``'s filter: nh3 never checks ``srcset`` and keeps
   ``cite="javascript:"``, so ``cite`` is not allowed at all) and adds
   ``rel="noopener noreferrer"`` to links.

``clean_html`` repeats the pass until the output stops changing (it is idempotent): neither
lxml nor html5ever round-trips every tree. That confirming pass cost as much as the first
and changes almost nothing (8 of the corpus's 7,312 bodies), so it only runs when
``_settled`` cannot tell from the output alone that the pass would give it back unchanged
(about one body in a hundred: a structure one of the parsers reads another way, a block in
an inline element, a ``<pre>`` starting with a newline, an attribute the rewrite changes).

Decisions:
- Schemes: http and https; also ``mailto`` on ``href``. ``data:`` is refused everywhere,
  images included: in feeds it is mostly a lazy-loading placeholder, ``data:image/svg+xml``
  can carry script, and inline blobs bloat every republished feed.
- Relative URLs are resolved when ``base_url`` is an absolute http(s) URL, else kept
  relative; protocol-relative ``//host/x`` always becomes ``https://host/x``.
- Images get ``referrerpolicy="no-referrer"`` (Chinese sites refuse hotlinked images sent
  with a Referer) and ``loading="lazy"``; video and audio get ``controls``.
- ``<noscript>`` is unwrapped (readers run no script); an image in it that repeats a
  repaired lazy image outside it is dropped.
- ``<object>``, ``<applet>``, ``<form>``, ``<button>``, ``<label>`` lose the tag and keep
  their content (fallback content and labels are visible); ``<math>`` becomes its
  ``alttext`` or its text without annotations; ``<svg>`` is dropped whole.
- A CDATA section in the HTML is unwrapped: browsers hide it, but in feeds it is a body
  wrapped twice (whole items of the corpus would be empty).
- Link and image URLs lose ``text.strip_tracking``'s parameters and nothing else. Tracker
  hosts only drop images: a link is visible, the reader decides to follow it.
- An ``<iframe>`` is kept only when its src is https on an ``iframe_hosts`` player, with
  ``IFRAME_POLICY`` (sandbox, lazy, referrer policy) and no content: its fallback text is
  never shown where frames work, so it is not content (nor in the fidelity reference).
- Share widgets' text ("Share this:", "Tweet") is site chrome, not content.
"""

from __future__ import annotations

import re
from functools import lru_cache
from html import escape, unescape
from urllib.parse import urljoin

import nh3
from lxml import etree

from .cleanrules import (ALLOWED_ATTRIBUTES, ALLOWED_TAGS, BLOCK_WRAPPERS, DEFAULT_IFRAME_HOSTS,
                         DROP_WITH_CONTENT, EMPTY_WRAPPERS, IFRAME_ATTRIBUTES, IFRAME_POLICY,
                         IMAGE_POLICY, LAZY_SRC_ATTRIBUTES, MAX_INPUT_CHARS, MAX_START_TAGS,
                         PLACEHOLDER_RE, RENAME, URL_ATTRIBUTES, iframe_rules,
                         is_allowed_iframe_src, is_pixel, is_share_widget, is_tracker_image)
from .text import _MEDIA_SCHEMES, _URL_TAB_NL_RE, _WS_RE, _is_absolute_http, _strip_illegal
from .text import parse_srcset, strip_tracking

__all__ = ["clean_html", "DEFAULT_IFRAME_HOSTS"]

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_C0_AND_SPACE = "".join(map(chr, range(0x21)))  # URL standard: stripped at both ends
_ASCII_WHITESPACE = " \t\n\r\f"
_GONE = "x-gone"  # a name nh3 does not allow: it keeps the content and drops the tag
Rules = tuple[tuple[str, str], ...]  # cleanrules.iframe_rules


def _resolve(value: str, base: str | None, schemes: tuple[str, ...]) -> str | None:
    """The URL, absolute when ``base`` is given and without tracking parameters, if its
    scheme is allowed; else None.

    Read the way browsers read it (entities are already decoded by the parser), so that
    ``jav&#x09;ascript:`` and `` JaVaScRiPt:`` are both seen as ``javascript:``."""
    url = value.strip(_C0_AND_SPACE)
    if "\t" in url or "\n" in url or "\r" in url:
        url = _URL_TAB_NL_RE.sub("", url)
    if not url:
        return None
    if match := _SCHEME_RE.match(url):
        if match.group(1).lower() not in schemes:
            return None
    elif url[:2] in ("//", "\\\\", "/\\", "\\/"):  # browsers read \ as / in http(s) URLs
        url = "https://" + url.lstrip("/\\")
    elif base:
        try:
            url = urljoin(base, url)
        except ValueError:
            return None
    return strip_tracking(url)


def _filter_srcset(value: str, base: str | None) -> str | None:
    kept = []
    for url, descriptor in parse_srcset(value):
        url = _resolve(url, base, _MEDIA_SCHEMES)
        # a URL ending in "," would read as a separator next time (strip_tracking can
        # leave one: "a.png?x=1,&utm_source=y")
        if url and not url.endswith(",") and url.split() == [url]:  # no whitespace
            kept.append(f"{url} {descriptor}".rstrip())
    return ", ".join(kept) or None


def _largest_candidate(srcset: str) -> str | None:
    def size(candidate: tuple[str, str]) -> float:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([wx])", candidate[1])
        return float(match.group(1)) * (1 if match.group(2) == "w" else 1e-6) if match else 0
    candidates = parse_srcset(srcset)
    return max(candidates, key=size)[0] if candidates else None


def _iframe_src(value: str | None, base: str | None, rules: Rules) -> str | None:
    url = _resolve(value or "", base, ("https",)) if rules else None
    return url if url and is_allowed_iframe_src(url, rules) else None


def _rules(iframe_hosts: frozenset[str]) -> Rules:
    """``iframe_rules``, read once per allowlist (a set or list is read every time)."""
    if isinstance(iframe_hosts, frozenset):
        return _frozen_rules(iframe_hosts)
    return iframe_rules(iframe_hosts)


@lru_cache(maxsize=16)  # one per iframe allowlist: an immutable table, not call state
def _frozen_rules(iframe_hosts: frozenset[str]) -> Rules:
    return iframe_rules(iframe_hosts)


@lru_cache(maxsize=16)  # one per iframe allowlist: an immutable table, not call state
def _cleaner(rules: Rules) -> nh3.Cleaner:
    """nh3 with our allowlist; ``<iframe>`` allowed only when ``rules`` lists hosts."""

    def attribute_filter(tag: str, attr: str, value: str) -> str | None:
        """Every URL checked again, as html5ever read our serialisation."""
        if tag == "iframe" and attr == "src":
            return _iframe_src(value, None, rules)
        if attr in URL_ATTRIBUTES:
            return _resolve(value, None, URL_ATTRIBUTES[attr])
        if attr == "srcset":
            return _filter_srcset(value, None)
        return value

    tags, attributes = set(ALLOWED_TAGS), {t: set(a) for t, a in ALLOWED_ATTRIBUTES.items()}
    # The policies are written by _rewrite and only allowed here with their one value:
    # set_tag_attribute_values writes several attributes in Rust HashMap order, which
    # changes from one process to the next (the output would not be deterministic).
    policies = dict(IMAGE_POLICY)
    if rules:
        tags.add("iframe")
        attributes["iframe"] = set(IFRAME_ATTRIBUTES)
        policies["iframe"] = IFRAME_POLICY
    return nh3.Cleaner(
        tags=tags,
        clean_content_tags=(set(DROP_WITH_CONTENT) - tags) | {"math", "noscript", "xmp"},
        attributes=attributes,
        attribute_filter=attribute_filter,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer",
        tag_attribute_values={tag: {k: {v} for k, v in attrs.items()}
                              for tag, attrs in policies.items()},
        set_tag_attribute_values={"video": {"controls": ""}, "audio": {"controls": ""}},
        strip_comments=True,
    )


_IFRAME_SIZE_RE = re.compile(r"\d{1,5}%?")


def _iframe_attributes(attrs: dict, src: str) -> dict:
    kept = dict(IFRAME_POLICY, src=src)
    for key in ("width", "height"):
        if _IFRAME_SIZE_RE.fullmatch(value := str(attrs.get(key) or "").strip()):
            kept[key] = value
    if "allowfullscreen" in attrs:
        kept["allowfullscreen"] = ""
    return dict(sorted(kept.items()))


def _allowed_attributes(name: str, attrs: dict, base: str | None) -> dict:
    allowed = ALLOWED_ATTRIBUTES.get(name, ())
    kept = dict(IMAGE_POLICY.get(name, {}))
    for key, value in attrs.items():
        if key not in allowed:
            continue
        if key in URL_ATTRIBUTES:
            value = _resolve(value, base, URL_ATTRIBUTES[key])
        elif key == "srcset":
            value = _filter_srcset(value, base)
        if value is not None:
            kept[key] = value
    return dict(sorted(kept.items()))  # deterministic whatever the source order


# --- parsing: lxml's tree, or the same parse through its events ------------------------

def _parser(**target) -> etree.HTMLParser:
    return etree.HTMLParser(recover=True, huge_tree=True, remove_comments=True,
                            remove_pis=True, **target)


class _Node:
    """An element as ``_EventTree`` builds it: the part of lxml's element API that
    ``_walk`` and ``_math_text`` use."""

    __slots__ = ("attrib", "children", "tag", "tail", "text")

    def __init__(self, tag: str, attrib: dict) -> None:
        self.tag, self.attrib, self.children = tag, attrib, []
        self.text: str | None = None
        self.tail: str | None = None

    def __iter__(self):
        return iter(self.children)

    def __reversed__(self):
        return reversed(self.children)

    def __len__(self) -> int:
        return len(self.children)


class _EventTree:
    """lxml parser target building ``_Node`` trees from the parser's events, for the two
    shapes lxml's own tree does not keep: libxml2 stops building its tree past a depth
    (silently: the rest of the document is lost), and a ``</html>`` ends the root, so that
    what follows becomes other top-level elements, kept without the text between them.
    The events have it all. Text outside any ``<html>`` that is only whitespace becomes
    one newline or space, as bs4 (our previous parser) kept it: ``a</html> b`` reads
    "a b"."""

    def __init__(self) -> None:
        self.document = _Node("", {})
        self.open = [self.document]
        self.html = 0  # open <html> elements
        self.buffer: list[str] = []

    def _flush(self) -> None:
        text = "".join(self.buffer)
        self.buffer.clear()
        if not text:
            return
        if not self.html and not text.strip(_ASCII_WHITESPACE):
            text = "\n" if "\n" in text else " "
        parent = self.open[-1]
        if parent.children:
            last = parent.children[-1]
            last.tail = (last.tail or "") + text
        else:
            parent.text = (parent.text or "") + text

    def start(self, tag: str, attrib: dict) -> None:
        self._flush()
        node = _Node(tag, dict(attrib))
        self.open[-1].children.append(node)
        self.open.append(node)
        self.html += tag == "html"

    def end(self, tag: str) -> None:
        self._flush()
        self.html -= self.open.pop().tag == "html"

    def data(self, data: str) -> None:
        self.buffer.append(data)

    def close(self) -> _Node:
        self._flush()
        return self.document


# This deep, lxml's tree may have lost the rest of the document (libxml2 2.14 stops
# building it past 256 levels, or 2,048 with huge_tree): it is read again from the events.
_TREE_DEPTH = 256
_TOO_DEEP = "boolean(" + "/".join(["*"] * (_TREE_DEPTH - 1)) + ")"  # from the root, level 1


def _parse(html: str) -> tuple[str | None, list]:
    """The text before the first element and the top-level elements (their ``tail`` is the
    text after them), as lxml's HTML parser reads them (as browsers read entities in
    attributes: ``html.parser`` turns ``?a=1&region=us`` into ``?a=1®ion=us``), without
    comments and processing instructions: lxml's tree when it has them all, else
    ``_EventTree``'s."""
    html = html.removeprefix("\ufeff")  # as bs4 did: lxml drops one more
    parser = _parser()
    parser.feed(html)
    try:
        root = parser.close()
    except etree.XMLSyntaxError:  # nothing but comments, a doctype or whitespace
        root = None
    if root is None:  # (lxml raises or not, depending on which)
        return None, []
    # Nearly every level takes a start tag: counting "<" is cheaper than the XPath.
    if root.getnext() is None and (html.count("<") < _TREE_DEPTH // 2 or not root.xpath(_TOO_DEEP)):
        return None, [root]
    parser = _parser(target=_EventTree())
    parser.feed(html)
    document = parser.close()
    return document.text, document.children


# --- the rewrite, written out as it goes ----------------------------------------------

def _repair_image(attrs: dict, base: str | None) -> bool:
    """Give the image (its attributes, changed in place) a real ``src`` and a filtered
    ``srcset``; False if it has to go."""
    if is_pixel(attrs):
        return False
    raw_srcset = attrs.get("data-srcset") or attrs.get("srcset")
    srcset = _filter_srcset(raw_srcset, base) if raw_srcset else None
    raw_src, src = (attrs.get("src") or "").strip(), None
    if raw_src and not raw_src.lower().startswith("data:") and not PLACEHOLDER_RE.search(raw_src):
        src = _resolve(raw_src, base, _MEDIA_SCHEMES)
    for name in LAZY_SRC_ATTRIBUTES:
        if not src and attrs.get(name):
            src = _resolve(attrs[name], base, _MEDIA_SCHEMES)
    src = src or (_largest_candidate(srcset) if srcset else None)
    if not src or is_tracker_image(src):
        return False
    attrs["src"] = src
    attrs.pop("srcset", None)
    if srcset:
        attrs["srcset"] = srcset
    return True


def _math_text(math) -> str:
    """MathML as text: its ``alttext``, else its text without annotations (TeX source)."""
    if alttext := math.attrib.get("alttext"):
        return alttext
    parts, stack = [math.text or ""], list(reversed(math))
    while stack:  # not recursive: nesting can be 10,000 deep
        node = stack.pop()
        if isinstance(node, str):  # a tail, due after its element's content
            parts.append(node)
            continue
        if node.tail:
            stack.append(node.tail)
        if node.tag not in DROP_WITH_CONTENT and not node.tag.startswith("annotation"):
            parts.append(node.text or "")
            stack.extend(reversed(node))
    return "".join(parts)


# Elements HTML writes without an end tag (bs4's list, our previous serialiser: the HTML
# nh3 reads stays the same): "<br/>" when empty.
_VOID = frozenset({"area", "base", "basefont", "bgsound", "br", "col", "command", "embed",
                   "frame", "hr", "image", "img", "input", "isindex", "keygen", "link",
                   "menuitem", "meta", "nextid", "param", "source", "spacer", "track", "wbr"})
_MAY_BE_BLANK = EMPTY_WRAPPERS | {_GONE}
_END = object()  # on the walk's stack: the element on top of ``open_`` ends here


def _escape(text: str) -> str:
    if "&" in text or "<" in text or ">" in text:  # most text has none: no copies
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text


def _start_tag(name: str, attrs: dict | None, void: bool = False) -> str:
    """Attributes in the order given (sorted by the rewrite); a value with a double quote
    is single-quoted unless it also has a single quote (then its double quotes are
    escaped)."""
    if not attrs:
        return f"<{name}/>" if void else f"<{name}>"
    parts = [name]
    for key, value in attrs.items():
        value = _escape(value)
        if '"' not in value:
            parts.append(f'{key}="{value}"')
        elif "'" not in value:
            parts.append(f"{key}='{value}'")
        else:
            parts.append(key + '="' + value.replace('"', "&quot;") + '"')
    return "<" + " ".join(parts) + ("/>" if void else ">")


def _rewrite(before: str | None, roots: list, base: str | None, rules: Rules) -> str:
    """The tree rewritten, as HTML.

    One walk that decides each element and writes it (no tree edit: lxml refuses the
    control characters entities can produce, ``<math alttext="&#12;">``). Its content is
    written before it is known whether the element shows anything: an ``EMPTY_WRAPPERS``
    element, or an unwrapped one, with nothing to show (only whitespace and other blank
    wrappers in it) has its start tag replaced when it ends, by the unwrapping name and,
    for a block, a space so that the words around it do not join (``a<div></div>b`` shows
    two lines). Its whitespace stays. ``&nbsp;`` and U+3000 are not blank: HTML collapses
    ASCII whitespace only, so ``<p>&nbsp;</p>`` is a deliberate empty line; nor is any
    whitespace in a ``<pre>``.

    An image in ``<noscript>`` that repeats one outside it (a lazy image's twin) goes;
    the images outside are only all known at the end, so a tree with such a twin is
    walked a second time."""
    outside: set[str] = set()  # image URLs seen outside <noscript>
    html, twins = _walk(before, roots, base, rules, outside, set())
    if twins:
        html, _ = _walk(before, roots, base, rules, set(), twins)
    return html


def _walk(before: str | None, roots: list, base: str | None, rules: Rules, outside: set[str],
          twins: set[str]) -> tuple[str, set[str]]:
    """``_rewrite``'s walk; fills ``outside``, drops the images in <noscript> with a URL in
    ``twins`` and returns the twins it found. Not recursive: nesting can be deep."""
    pieces = [_escape(before)] if before else []
    # per open element: [start piece index, name, blank so far, its whitespace, <noscript>?]
    open_: list[list] = []
    stack = list(reversed(roots))
    found = set()
    while stack:
        node = stack.pop()
        if node is _END:
            index, name, blank, _, _ = open_.pop()
            if blank:
                pieces[index] = "<x-gone> " if name in BLOCK_WRAPPERS else "<x-gone>"
                pieces.append("</x-gone>")
            else:
                pieces.append(f"</{name}>")
            node = stack.pop()  # the element that ended, for its tail
        else:
            name, attrs, text = node.tag, node.attrib, node.text
            noscript = bool(open_) and open_[-1][4]
            widget = (("class" in attrs or "id" in attrs) and name not in ("html", "body")
                      and is_share_widget(attrs))
            blank = None  # None: the element stays open for its content
            if name == "iframe" and (src := _iframe_src(attrs.get("src"), base, rules)):
                # emptied: its fallback content is not shown where frames work
                pieces.append(_start_tag("iframe", _iframe_attributes(attrs, src)) + "</iframe>")
                blank = False
            elif name in DROP_WITH_CONTENT or name == "math" or widget:
                # a widget had a box: a space keeps the words around it apart
                text = _math_text(node) if name == "math" else " " if widget else ""
                pieces.append(f"<{_GONE}>{_escape(text)}</{_GONE}>")
                blank = not text.strip(_ASCII_WHITESPACE)
            else:
                if name == "img":
                    attrs = dict(attrs)
                    if not _repair_image(attrs, base):
                        name = _GONE
                    elif not noscript:
                        outside.add(attrs["src"])
                name = RENAME.get(name, name)
                if name not in ALLOWED_TAGS:  # html, body, font, noscript, custom tags...:
                    name, attrs = _GONE, None  # the content stays
                elif attrs or name == "img":
                    attrs = _allowed_attributes(name, attrs, base)
                if name == "img" and noscript:
                    found.add(src := attrs.get("src"))
                    if src in twins:  # the <noscript> twin of a lazy image
                        name, attrs = _GONE, None
                elif name == "source" and not attrs:  # nothing left to play or show
                    name = _GONE
                if name in _VOID and not text and not len(node):
                    pieces.append(_start_tag(name, attrs, void=True))
                    blank = False
                else:
                    space = "" if name == "pre" else _ASCII_WHITESPACE  # kept as is in <pre>
                    open_.append([len(pieces), name, name in _MAY_BE_BLANK, space,
                                  noscript or node.tag == "noscript"])
                    pieces.append(_start_tag(name, attrs) if attrs else f"<{name}>")
                    if text:
                        pieces.append(_escape(text))
                        if text.strip(space):
                            open_[-1][2] = False
                    stack += (node, _END)
                    if len(node):
                        stack.extend(reversed(node))
                    continue
        # the element ended: its tail and whether it showed anything count in its parent
        tail = node.tail
        if tail:
            pieces.append(_escape(tail))
        if open_ and open_[-1][2] and (blank is False or tail and tail.strip(open_[-1][3])):
            open_[-1][2] = False
    return "".join(pieces), found & outside


# --- when the confirming pass would change nothing --------------------------------------

# HTML as html5ever writes it (nh3 0.3): text with & < > and U+00A0 escaped, attribute values
# double-quoted with & " < > and U+00A0 escaped, nothing else escaped, no comment. Anything
# else ("&#39;", a raw ">" in text, a single-quoted value) would be written another way; CR is
# read as LF by both parsers.
_SETTLED_SHAPE_RE = re.compile(
    r"(?:[^<>&\r\xa0]++|&(?:amp|lt|gt|nbsp);"
    r'|<[a-z][a-z0-9]*+(?: [a-z]++="(?:[^"<>&\r\xa0]++|&(?:amp|quot|lt|gt|nbsp);)*+")*+>'
    r"|</[a-z][a-z0-9]*+>)*+")
# A tag, then whether the text after it has ASCII whitespace, and its first other character.
_SETTLED_TOKEN_RE = re.compile(r"<(/?)([a-z0-9]+)([^>]*)>([ \t\n\f]?)[ \t\n\f]*+([^<]?)[^<]*+")
_SETTLED_ATTRIBUTE_RE = re.compile(r' ([a-z]+)="([^"]*)"')
_REL = ("rel", "noopener noreferrer")  # nh3 writes it last on every <a> (link_rel)

# The allowlist without <source> (void for html5ever, not for libxml2) and <video>, <audio>
# (nh3 adds their controls).
_SETTLED_TAGS = ALLOWED_TAGS - {"source", "video", "audio"}
_SETTLED_VOID = _VOID & _SETTLED_TAGS  # br, col, hr, img: void for both parsers
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
# libxml2 2.14 closes the open element (key) when one of these starts in it (its
# htmlStartClose table, for the tags above): <b><p> reads <b></b><p>.
_LIBXML_CLOSED_BY = {
    "a": "a table td th", "b": "p td th", "i": "p td th", "u": "p td th", "s": "p", "small": "p",
    "strike": "p", "span": "td th", "caption": "col colgroup tbody tfoot thead tr",
    "colgroup": "colgroup tbody tfoot thead tr", "dd": "dt", "dt": "dd dl", "dl": "li", "li": "li",
    **dict.fromkeys(_HEADINGS, "li p table"),
    "p": "blockquote caption col colgroup dd div dl dt h1 h2 h3 h4 h5 h6 hr li ol p pre table tbody "
         "td tfoot th tr ul",
    "pre": "dd dl dt li table ul", "tbody": "tbody tfoot", "tfoot": "tbody", "thead": "tbody tfoot",
    "td": "tbody td tfoot th tr", "th": "tbody td tfoot th tr", "tr": "tbody tfoot tr", "ul": "pre",
}
# html5ever closes an open <p> (in button scope) when one of these starts, at any depth below
# it (the HTML standard's list, "in body", for the tags above; <table> as in no-quirks mode):
# <p><span><div> reads <p><span></span></p><div>.
_CLOSES_P = _HEADINGS | frozenset({
    "article", "aside", "blockquote", "details", "div", "dl", "dd", "dt", "figcaption", "figure",
    "footer", "header", "hr", "li", "ol", "p", "pre", "section", "summary", "table", "ul"})
# Where the standard wants these: elsewhere html5ever moves them, drops them or closes an
# element for them (a <tr> in a <table> gets a <tbody>, an <li> in an <li> closes it).
_PARENTS = {"li": ("ul", "ol"), "dd": ("dl",), "dt": ("dl",), "rt": ("ruby",), "rp": ("ruby",),
            "caption": ("table",), "colgroup": ("table",), "thead": ("table",),
            "tbody": ("table",), "tfoot": ("table",), "tr": ("thead", "tbody", "tfoot"),
            "td": ("tr",), "th": ("tr",), "col": ("colgroup",)}
# These hold only their parts (_PARENTS) and whitespace: html5ever moves anything else out
# of the table ("foster parenting").
_TABLE_PARTS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "colgroup"})


def _children(parent: str) -> frozenset[str]:
    closed_by = _LIBXML_CLOSED_BY.get(parent, "").split()
    return frozenset(
        child for child in _SETTLED_TAGS
        if child not in closed_by
        and (parent in _PARENTS[child] if child in _PARENTS else parent not in _TABLE_PARTS)
        and not (child in _HEADINGS and parent in _HEADINGS))  # html5ever closes the outer one


# parent ("body": none) -> the tags both parsers leave in it (the ancestor rules: _settled)
_CHILDREN = {parent: _children(parent) for parent in _SETTLED_TAGS | {"body"}}


def _attribute_value(raw: str) -> str:
    """The value html5ever wrote (``_SETTLED_SHAPE_RE``): its five references, &amp; last."""
    return (raw.replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
            .replace("&nbsp;", "\xa0").replace("&amp;", "&"))


def _attributes_settled(name: str, raw: str, base: str | None) -> bool:
    """True when the rewrite writes these attributes (``raw``, as html5ever wrote them) back
    unchanged and nh3 keeps them as they are: computed by the rewrite's own functions."""
    pairs = _SETTLED_ATTRIBUTE_RE.findall(raw)
    if "&" in raw:
        pairs = [(key, _attribute_value(value)) for key, value in pairs]
    attrs = dict(pairs)
    if len(attrs) < len(pairs):  # a repeated attribute: the parsers keep the first
        return False
    if name == "a":  # nh3's rel, after the rewrite's attributes
        if pairs[-1] != _REL:
            return False
        del attrs["rel"], pairs[-1]
        return not attrs or list(_allowed_attributes(name, attrs, base).items()) == pairs
    if name == "img":
        repaired = dict(attrs)
        if not _repair_image(repaired, base):
            return False
        attrs = _allowed_attributes(name, repaired, base)
        # nh3's filter reads the srcset again, without the base
        if "srcset" in attrs and _filter_srcset(attrs["srcset"], None) != attrs["srcset"]:
            return False
        return list(attrs.items()) == pairs
    return list(_allowed_attributes(name, attrs, base).items()) == pairs


def _settled(html: str, base: str | None) -> bool:
    """True when ``_step`` would give ``html`` back unchanged, so the confirming pass can be
    skipped: a sufficient condition (False: run the pass), read from the text alone.

    ``html`` is written as html5ever writes it (``_SETTLED_SHAPE_RE``), with nothing _step
    strips, within the flattening bounds, its tags nest as written, and it holds only:

    - ``_SETTLED_TAGS``, each in a parent both parsers leave it in (``_CHILDREN``: no start
      tag libxml2 closes its parent for, table parts and list items where the standard wants
      them, no text but whitespace in table parts), no block (``_CLOSES_P``) below an open
      ``<p>`` and no ``<a>`` in an ``<a>``: lxml and html5ever both read the tree the tags
      show (well nested, no implied tag, nothing foster-parented, no active formatting
      element to reconstruct), at a depth where lxml's tree is whole;
    - no ``<pre>`` starting with a newline (html5ever drops one, _step writes one more);
    - no wrapper (``EMPTY_WRAPPERS``) that shows nothing: the rewrite would unwrap it;
    - on each tag, the attributes the rewrite writes for them (its own functions decide,
      ``_attributes_settled``), in its sorted order, then nh3's ``rel`` on ``<a>``. A URL
      ``_resolve`` leaves as it is also stays as it is without the base (it has a scheme,
      or there is no base), so nh3's filter keeps it too.

    Then the rewrite writes that tree back (``<html>`` and ``<body>`` as ``x-gone``), nh3
    keeps all of it, adds the same ``rel`` and writes ``html`` again. html5ever's escaping
    and libxml2's start-close table are those of the versions in use: the equivalence tests
    (tests/test_clean_speed_equivalence.py) hold the claim against ``_step`` itself."""
    if (len(html) > MAX_INPUT_CHARS or html.count("<") > MAX_START_TAGS or html.strip() != html
            or _strip_illegal(html) != html or html.startswith("\ufeff") or "<pre>\n" in html
            or not _SETTLED_SHAPE_RE.fullmatch(html)):
        return False
    names, blank = ["body"], [False]  # open elements; wrappers that show nothing yet
    for end, name, raw, space, visible in _SETTLED_TOKEN_RE.findall(html):
        if end:
            if len(names) == 1 or names.pop() != name or blank.pop():
                return False
            blank[-1] = False  # it showed something, so its parent does
        else:
            if (name not in _CHILDREN[names[-1]] or name in _CLOSES_P and "p" in names
                    or name == "a" and "a" in names):
                return False
            if raw:
                if not _attributes_settled(name, raw, base):
                    return False
            elif name == "a" or name == "img":  # nh3 or the rewrite would add attributes
                return False
            if name in _SETTLED_VOID:
                blank[-1] = False
            else:
                names.append(name)
                blank.append(name in EMPTY_WRAPPERS)
                if len(names) > _TREE_DEPTH // 2:
                    return False
        if visible or space:
            if names[-1] in _TABLE_PARTS:
                if visible:
                    return False
            elif visible or names[-1] == "pre":  # all whitespace shows in a <pre>
                blank[-1] = False
    return len(names) == 1


# --- clean_html ------------------------------------------------------------------------

_START_TAG_RE = re.compile(r"<[A-Za-z]")
_LEADING_PI_RE = re.compile(r"\A(?:\s*<\?[^>]*(?:>|\Z))+")
_CDATA_RE = re.compile(r"<!\[CDATA\[(.*?)(?:\]\]>|\Z)", re.S)
# Linear on any input: every unterminated construct runs to the end (\Z) in one match.
_FLAT_DROP_RE = re.compile(
    r"<!--.*?(?:-->|\Z)|<(script|style|template|iframe|noembed|noframes|title|textarea|"
    r"select|svg)\b[^>]*(?:>|\Z).*?(?:</\1\s*>|\Z)", re.I | re.S)
_FLAT_BLOCK_RE = re.compile(
    r"</?(?:p|div|br|li|h[1-6]|tr|table|blockquote|pre|section|article|header|footer|"
    r"aside|ul|ol|dl|dt|dd|figure|figcaption|hr|center|details|summary)\b[^>]*(?:>|\Z)", re.I)
_FLAT_TAG_RE = re.compile(r"</?[A-Za-z][^>]*(?:>|\Z)|<[!?][^>]*(?:>|\Z)")


def _flatten(html: str) -> str:
    """Text paragraphs only, by linear regexes: no parser ever sees the input."""
    text = _FLAT_TAG_RE.sub("", _FLAT_BLOCK_RE.sub("\n", _FLAT_DROP_RE.sub("", html)))
    lines = (_strip_illegal(_WS_RE.sub(" ", line).strip()) for line in unescape(text).split("\n"))
    paragraphs = (f"<p>{escape(line, quote=False)}</p>" for line in lines if line)
    return _cleaner(()).clean("\n".join(paragraphs))


def _step(html: str, base: str | None, rules: Rules) -> str:
    """One cleaning pass (see the module docstring)."""
    # A leading "<?xml ...?>" is a bogus comment in HTML; an unterminated one is all there is.
    html = _LEADING_PI_RE.sub("", _CDATA_RE.sub(r"\1", _strip_illegal(html)))
    if len(html) > MAX_INPUT_CHARS or (html.count("<") > MAX_START_TAGS  # cheap bound first
                                       and len(_START_TAG_RE.findall(html)) > MAX_START_TAGS):
        return _flatten(html)
    if "<" in html:
        html = _rewrite(*_parse(html), base, rules)
    # html5ever drops a newline right after <pre> when parsing and does not write one
    # back, so a leading newline would be lost on every pass. Character references can
    # produce characters _strip_illegal removed from the input (&#2;).
    cleaned = _cleaner(rules).clean(html)
    return _strip_illegal(cleaned.replace("<pre>\n", "<pre>\n\n")).strip()


def clean_html(html: str, base_url: str | None = None, *,
               iframe_hosts: frozenset[str] = DEFAULT_IFRAME_HOSTS) -> str:
    """Untrusted HTML fragment -> safe HTML fragment (see the module docstring).

    ``iframe_hosts``: the players kept as iframes, "host" or "host/path-prefix" entries
    (empty: no iframe at all); a malformed entry raises ValueError (cleanrules.iframe_rules).
    """
    base = base_url.strip() if base_url and _is_absolute_http(base_url.strip()) else None
    rules = _rules(iframe_hosts)
    out = _step(html or "", base, rules)
    # Again until nothing changes: lxml re-parses clean HTML by its own nesting rules
    # (<b><p> becomes <b></b><p>) and html5ever's output does not always parse back to the
    # same tree (an <li> foster-parented into an <li>). Output that is known to come back
    # unchanged (_settled: nearly all of it) is not run through the pass again.
    for _ in range(3):
        if _settled(out, base):
            return out
        again = _step(out, base, rules)
        if again == out:
            return out
        out = again
    return _flatten(out)  # never seen: paragraphs of text always settle
