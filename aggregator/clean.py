"""Clean stage: untrusted item HTML -> safe HTML fragment (text helpers: ``text.py``).

Owns: the HTML allowlist (tags, attributes, URL schemes: data tables below), URL resolution
against the item's base, lazy-image repair, tracking-pixel removal.
Must not: do I/O, read the clock or config, keep state between calls. Every function is
pure and safe in a worker process or thread.

``clean_html`` (HAZARDS.md "Cleaning (nh3 / ammonia)"), one pass:

1. Bound the work: html5ever is super-quadratic in nesting depth, so an input with more
   than ``MAX_START_TAGS`` start tags or ``MAX_INPUT_CHARS`` characters is *flattened*:
   linear regexes cut out comments and ``DROP_WITH_CONTENT`` elements, drop every tag, and
   the text comes back as escaped ``<p>`` paragraphs. Text is kept; links and images go.
2. Rewrite with BeautifulSoup on lxml (lxml reads entities in attributes as browsers do;
   ``html.parser`` turns ``?a=1&region=us`` into ``?a=1®ion=us``): drop
   ``DROP_WITH_CONTENT`` with its content, repair lazy images, drop 1x1 pixels, resolve
   URLs, filter ``srcset``, rename (``RENAME``) or unwrap tags outside ``ALLOWED_TAGS`` so
   their text survives, keep allowed attributes only, in sorted order.
3. nh3 is the authority: it re-parses that with html5ever, applies the same allowlist,
   re-checks every URL (``_nh3_attribute_filter``: nh3 never checks ``srcset`` and keeps
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
"""

from __future__ import annotations

import re
from html import escape, unescape
from urllib.parse import urljoin, urlsplit

import nh3
from bs4 import BeautifulSoup
from bs4.builder import LXMLTreeBuilder

__all__ = ["clean_html"]

# --- the allowlist, as data ------------------------------------------------------------

MAX_START_TAGS = 10_000  # HAZARDS: this cap bounded the worst nesting shape to ~0.15 s
MAX_INPUT_CHARS = 2_000_000  # bs4 is linear but slow: ~0.5 s for 2 MB of attributes

ALLOWED_TAGS = frozenset(
    "p br h1 h2 h3 h4 h5 h6 ul ol li dl dt dd blockquote q pre code kbd samp var table thead "
    "tbody tfoot tr th td caption colgroup col figure figcaption a img picture source video "
    "audio strong em b i u s strike del ins sub sup small mark abbr cite time hr span div "
    "section article header footer aside details summary ruby rt rp".split())

# No class/id/style/on*; no cite anywhere (nh3 keeps cite="javascript:...").
ALLOWED_ATTRIBUTES = {tag: frozenset(attrs.split()) for tag, attrs in {
    "a": "href title", "img": "src alt title width height srcset sizes",
    "source": "src srcset type media sizes", "video": "src poster width height", "audio": "src",
    "td": "colspan rowspan", "th": "colspan rowspan", "col": "span", "colgroup": "span",
    "ol": "start", "time": "datetime", "abbr": "title", "del": "datetime", "ins": "datetime",
}.items()}
IMAGE_POLICY = {"img": {"loading": "lazy", "referrerpolicy": "no-referrer"}}
URL_ATTRIBUTES = {"href": ("http", "https", "mailto"), "src": ("http", "https"),
                  "poster": ("http", "https")}
_MEDIA_SCHEMES = ("http", "https")

# Removed with everything inside: never rendered as text (script, style, template; raw-text
# iframe/noembed/noframes; title is display:none), form widgets holding data rather than
# prose, void elements pointing elsewhere, and SVG (a script surface; its text is graphics).
DROP_WITH_CONTENT = frozenset(
    "script style template iframe frame frameset noembed noframes title textarea select "
    "datalist option input meta link base embed param svg".split())

# Outside the allowlist, but their box matters for reading: keep the structure.
RENAME = {"center": "div", "main": "div", "nav": "div", "address": "div", "hgroup": "div",
          "fieldset": "div", "form": "div", "legend": "div", "dir": "ul", "menu": "ul",
          "listing": "pre", "xmp": "pre", "plaintext": "pre", "tt": "code", "big": "span"}

# Lazy-loading scripts keep the real image in one of these and a placeholder in ``src``.
LAZY_SRC_ATTRIBUTES = ("data-src", "data-original", "data-actualsrc", "data-lazy-src",
                       "data-url", "data-original-src")
_PLACEHOLDER_RE = re.compile(
    r"(?:^|/)(?:blank|spacer|pixel|transparent|placeholder|loading|lazy|grey|gray|clear|"
    r"1x1|empty)[\w.-]*\.(?:gif|png|svg|jpe?g|webp)(?:[?#]|$)", re.I)

# --- characters and URLs ---------------------------------------------------------------

# Not allowed in XML 1.0 (feedgen raises on them: HAZARDS "Publishing"); nh3 (Rust
# strings) raises on lone surrogates.
_ILLEGAL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_WS_RE = re.compile(r"[^\S\u3000]+")  # whitespace runs, except CJK ideographic space
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_URL_TAB_NL_RE = re.compile(r"[\t\n\r]")  # URL standard: removed anywhere
_C0_AND_SPACE = "".join(map(chr, range(0x21)))  # URL standard: stripped at both ends


def _strip_illegal(text: str) -> str:
    return _ILLEGAL_CHARS_RE.sub("", text)


def _is_absolute_http(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. a broken IPv6 literal
        return False
    return parts.scheme.lower() in _MEDIA_SCHEMES and bool(parts.netloc)


def _resolve(value: str, base: str | None, schemes: tuple[str, ...]) -> str | None:
    """The URL, absolute when ``base`` is given, if its scheme is allowed; else None.

    Read the way browsers read it (entities are already decoded by the parser), so that
    ``jav&#x09;ascript:`` and `` JaVaScRiPt:`` are both seen as ``javascript:``."""
    url = _URL_TAB_NL_RE.sub("", value.strip(_C0_AND_SPACE))
    if not url:
        return None
    match = _SCHEME_RE.match(url)
    if match:
        return url if match.group(1).lower() in schemes else None
    if url[:2] in ("//", "\\\\", "/\\", "\\/"):  # browsers read \ as / in http(s) URLs
        return "https://" + url.lstrip("/\\")
    if base:
        try:
            return urljoin(base, url)
        except ValueError:
            return None
    return url


def _parse_srcset(value: str) -> list[tuple[str, str]]:
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


def _filter_srcset(value: str, base: str | None) -> str | None:
    kept = []
    for url, descriptor in _parse_srcset(value):
        url = _resolve(url, base, _MEDIA_SCHEMES)
        if url and not any(c.isspace() for c in url):
            kept.append(f"{url} {descriptor}".rstrip())
    return ", ".join(kept) or None


def _largest_candidate(srcset: str) -> str | None:
    def size(candidate: tuple[str, str]) -> float:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([wx])", candidate[1])
        return float(match.group(1)) * (1 if match.group(2) == "w" else 1e-6) if match else 0
    candidates = _parse_srcset(srcset)
    return max(candidates, key=size)[0] if candidates else None


def _nh3_attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Every URL checked again, as html5ever read our serialisation."""
    if attr in URL_ATTRIBUTES:
        return _resolve(value, None, URL_ATTRIBUTES[attr])
    if attr == "srcset":
        return _filter_srcset(value, None)
    return value


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(DROP_WITH_CONTENT) | {"math", "noscript", "xmp"},
    attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_nh3_attribute_filter,
    url_schemes={"http", "https", "mailto"},
    link_rel="noopener noreferrer",
    # The image policy is written by _rewrite and only allowed here with its one value:
    # set_tag_attribute_values writes two attributes in Rust HashMap order, which changes
    # from one process to the next (the output would not be deterministic).
    tag_attribute_values={tag: {k: {v} for k, v in attrs.items()}
                          for tag, attrs in IMAGE_POLICY.items()},
    set_tag_attribute_values={"video": {"controls": ""}, "audio": {"controls": ""}},
    strip_comments=True,
)

# --- the bs4 rewrite -------------------------------------------------------------------

_DIMENSION_RE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(?:px)?\s*", re.I)
_STYLE_DIMENSION_RE = re.compile(
    r"(?<![-\w])(width|height)\s*:\s*(\d+(?:\.\d*)?)\s*(?:px)?\s*(?:;|$)", re.I)


def _is_pixel(img) -> bool:
    """1x1 (or 0x0) images are tracking beacons (FeedBurner, WordPress stats, ...)."""
    dimensions = {}
    for name in ("width", "height"):
        if match := _DIMENSION_RE.fullmatch(img.get(name) or ""):
            dimensions[name] = float(match.group(1))
    for name, number in _STYLE_DIMENSION_RE.findall(img.get("style") or ""):
        dimensions[name.lower()] = float(number)
    return len(dimensions) == 2 and max(dimensions.values()) <= 1


def _repair_image(img, base: str | None) -> bool:
    """Give the image a real ``src`` and a filtered ``srcset``; False if it has to go."""
    if _is_pixel(img):
        return False
    raw_srcset = img.get("data-srcset") or img.get("srcset")
    srcset = _filter_srcset(raw_srcset, base) if raw_srcset else None
    raw_src, src = (img.get("src") or "").strip(), None
    if raw_src and not raw_src.lower().startswith("data:") and not _PLACEHOLDER_RE.search(raw_src):
        src = _resolve(raw_src, base, _MEDIA_SCHEMES)
    for name in LAZY_SRC_ATTRIBUTES:
        if not src and img.get(name):
            src = _resolve(img[name], base, _MEDIA_SCHEMES)
    src = src or (_largest_candidate(srcset) if srcset else None)
    if not src:
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


def _remove_tag(node) -> None:
    """Rename the element to one nh3 strips while keeping its content (empty it first to
    drop the content too). bs4's extract() and unwrap() scan all the siblings, which is
    quadratic on wide or deep trees: 10,000 nested unwraps took 9 s."""
    node.name, node.attrs = "x-gone", {}
    node.can_be_empty_element = False  # "<x-gone/>" would open an element in HTML


def _rewrite(soup: BeautifulSoup, base: str | None) -> None:
    """One walk over the tree (bs4's ``find_all`` per rule, and ``.decomposed``, which goes
    through ``Tag.__getattr__``, i.e. a search, were most of the time)."""
    outside: set[str] = set()  # image URLs seen outside <noscript>
    in_noscript = []
    stack = [(soup, False)]
    while stack:
        parent, under_noscript = stack.pop()
        for node in parent.contents:
            name = node.name
            if name is None:  # text
                continue
            if name in DROP_WITH_CONTENT or name == "math":
                text = _math_text(node) if name == "math" else ""
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
    return _CLEANER.clean("\n".join(paragraphs))


def _step(html: str, base: str | None) -> str:
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
        soup = BeautifulSoup(html, builder=builder)
        _rewrite(soup, base)
        html = soup.decode()
    # html5ever drops a newline right after <pre> when parsing and does not write one
    # back, so a leading newline would be lost on every pass. Character references can
    # produce characters _strip_illegal removed from the input (&#2;).
    return _strip_illegal(_CLEANER.clean(html).replace("<pre>\n", "<pre>\n\n")).strip()


def clean_html(html: str, base_url: str | None = None) -> str:
    """Untrusted HTML fragment -> safe HTML fragment (see the module docstring)."""
    base = base_url.strip() if base_url and _is_absolute_http(base_url.strip()) else None
    out = _step(html or "", base)
    # Again until nothing changes: lxml re-parses clean HTML by its own nesting rules
    # (<b><p> becomes <b></b><p>) and html5ever's output does not always parse back to the
    # same tree (an <li> foster-parented into an <li>).
    for _ in range(3):
        again = _step(out, base)
        if again == out:
            return out
        out = again
    return _flatten(out)  # never seen: paragraphs of text always settle
