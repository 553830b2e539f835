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
2. Rewrite with BeautifulSoup on lxml (lxml reads entities in attributes as browsers do;
   ``html.parser`` turns ``?a=1&region=us`` into ``?a=1®ion=us``): drop
   ``DROP_WITH_CONTENT`` and share widgets with their content, keep allowed iframes
   (emptied), repair lazy images, drop 1x1 pixels and tracker images, resolve URLs and
   strip their tracking parameters, filter ``srcset``, rename (``RENAME``) or unwrap tags
   outside ``ALLOWED_TAGS`` so their text survives, keep allowed attributes only, in
   sorted order; then unwrap the wrappers left with nothing to show.
3. nh3 is the authority: it re-parses that with html5ever, applies the same allowlist,
   re-checks every URL (``_cleaner``'s filter: nh3 never checks ``srcset`` and keeps
   ``cite="javascript:"``, so ``cite`` is not allowed at all) and adds
   ``rel="noopener noreferrer"`` to links.

``clean_html`` repeats the pass until the output stops changing (it is idempotent), which
doubles the cost of an item: neither lxml nor html5ever round-trips every tree.

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
from bs4 import BeautifulSoup, Tag
from bs4.builder import LXMLTreeBuilder

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
    url = _URL_TAB_NL_RE.sub("", value.strip(_C0_AND_SPACE))
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
        if url and not url.endswith(",") and not any(c.isspace() for c in url):
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


# --- the bs4 rewrite -------------------------------------------------------------------

def _repair_image(img, base: str | None) -> bool:
    """Give the image a real ``src`` and a filtered ``srcset``; False if it has to go."""
    if is_pixel(img.attrs):
        return False
    raw_srcset = img.get("data-srcset") or img.get("srcset")
    srcset = _filter_srcset(raw_srcset, base) if raw_srcset else None
    raw_src, src = (img.get("src") or "").strip(), None
    if raw_src and not raw_src.lower().startswith("data:") and not PLACEHOLDER_RE.search(raw_src):
        src = _resolve(raw_src, base, _MEDIA_SCHEMES)
    for name in LAZY_SRC_ATTRIBUTES:
        if not src and img.get(name):
            src = _resolve(img[name], base, _MEDIA_SCHEMES)
    src = src or (_largest_candidate(srcset) if srcset else None)
    if not src or is_tracker_image(src):
        return False
    img["src"] = src
    img.attrs.pop("srcset", None)
    if srcset:
        img["srcset"] = srcset
    return True


def _math_text(math) -> str:
    """MathML as text: its ``alttext``, else its text without annotations (TeX source)."""
    if math.get("alttext"):
        return math["alttext"]
    parts, stack = [], list(reversed(math.contents))
    while stack:  # not recursive: nesting can be 10,000 deep
        node = stack.pop()
        if node.name is None:
            parts.append(str(node))
        elif node.name not in DROP_WITH_CONTENT and not node.name.startswith("annotation"):
            stack.extend(reversed(node.contents))
    return "".join(parts)


class _TreeBuilder(LXMLTreeBuilder):
    """bs4 on lxml, dropping comments, processing instructions and doctypes as they are
    parsed: removing them afterwards scans their siblings each time (bs4's ``extract``),
    which is quadratic on 10,000 comments in a row."""

    def comment(self, text):
        pass

    def pi(self, target, data):
        pass

    def doctype(self, name, pubid, system):
        pass


class _Tag(Tag):
    """A bs4 tag equal only to itself. bs4 compares tags by content, recursively, and its
    serialiser asks ``c.parent != stack_top`` for every node: ``<div>`` x 4,500 then
    ``</div><p></p>`` x 4,500 recursed 4,500 levels deep (RecursionError)."""

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__


def _remove_tag(node) -> None:
    """Rename the element to one nh3 strips while keeping its content (empty it first to
    drop the content too). bs4's extract() and unwrap() scan all the siblings, which is
    quadratic on wide or deep trees: 10,000 nested unwraps took 9 s."""
    node.name, node.attrs = _GONE, {}
    node.can_be_empty_element = False  # "<x-gone/>" would open an element in HTML


def _rewrite(soup: BeautifulSoup, base: str | None, rules: Rules) -> None:
    """One walk over the tree (bs4's ``find_all`` per rule, and ``.decomposed``, which goes
    through ``Tag.__getattr__``, i.e. a search, were most of the time)."""
    outside: set[str] = set()  # image URLs seen outside <noscript>
    in_noscript = []
    elements = []  # every element, each after its parent
    stack = [(soup, False)]
    while stack:
        parent, under_noscript = stack.pop()
        for node in parent.contents:
            name = node.name
            if name is None:  # text
                continue
            elements.append(node)
            if name == "iframe" and (src := _iframe_src(node.get("src"), base, rules)):
                node.clear()  # fallback content: not shown where frames work
                node.attrs = _iframe_attributes(node.attrs, src)
                continue
            widget = name not in ("html", "body") and is_share_widget(node.attrs)
            if name in DROP_WITH_CONTENT or name == "math" or widget:
                # a widget had a box: a space keeps the words around it apart
                text = _math_text(node) if name == "math" else " " if widget else ""
                node.clear()
                if text:
                    node.append(text)
                _remove_tag(node)
                continue
            if name == "img":
                if not _repair_image(node, base):
                    _remove_tag(node)
                    continue
                (in_noscript.append(node) if under_noscript else outside.add(node["src"]))
            name = RENAME.get(name, name)
            if name in ALLOWED_TAGS:
                node.name, node.attrs = name, _allowed_attributes(name, node.attrs, base)
                if name == "source" and not node.attrs:  # nothing left to play or show
                    _remove_tag(node)
            else:  # html, body, font, noscript, custom tags...: keep the content
                _remove_tag(node)
            stack.append((node, under_noscript or name == "noscript"))
    for img in in_noscript:
        if img["src"] in outside:  # the <noscript> twin of a lazy image
            _remove_tag(img)
    _unwrap_blank(elements)


def _unwrap_blank(elements: list) -> None:
    """Unwrap the ``EMPTY_WRAPPERS`` with nothing to show (only whitespace and other blank
    wrappers in them), children before parents. Their whitespace stays, and a block gets
    a space so that the words around it do not join (``a<div></div>b`` shows two lines).
    ``&nbsp;`` and U+3000 are not blank: HTML collapses ASCII whitespace only, so
    ``<p>&nbsp;</p>`` is a deliberate empty line; nor is any whitespace in a ``<pre>``."""
    blank: set[int] = set()
    for node in reversed(elements):
        name = node.name
        if name != _GONE and name not in EMPTY_WRAPPERS:
            continue  # an image, a line break, a cell, an iframe...: something to show
        space = "" if name == "pre" else _ASCII_WHITESPACE  # kept as is in <pre>
        if all(id(child) in blank if child.name else not child.strip(space)
               for child in node.contents):
            blank.add(id(node))
            if name in BLOCK_WRAPPERS:
                node.insert(0, " ")
            _remove_tag(node)


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
    # A leading "<?xml ...?>" is a bogus comment in HTML, and bs4 warns about it.
    html = _LEADING_PI_RE.sub("", _CDATA_RE.sub(r"\1", _strip_illegal(html)))
    if len(html) > MAX_INPUT_CHARS or len(_START_TAG_RE.findall(html)) > MAX_START_TAGS:
        return _flatten(html)
    if "<" in html:
        # preserve_whitespace_tags: bs4 otherwise shrinks whitespace-only strings to "\n"
        # or " ", which the next pass's html5ever does not reproduce.
        builder = _TreeBuilder(multi_valued_attributes=None, huge_tree=True,
                               preserve_whitespace_tags={"html"})
        soup = BeautifulSoup(html, builder=builder, element_classes={Tag: _Tag})
        _rewrite(soup, base, rules)
        html = soup.decode()
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
    rules = iframe_rules(iframe_hosts)
    out = _step(html or "", base, rules)
    # Again until nothing changes: lxml re-parses clean HTML by its own nesting rules
    # (<b><p> becomes <b></b><p>) and html5ever's output does not always parse back to the
    # same tree (an <li> foster-parented into an <li>).
    for _ in range(3):
        again = _step(out, base, rules)
        if again == out:
            return out
        out = again
    return _flatten(out)  # never seen: paragraphs of text always settle
