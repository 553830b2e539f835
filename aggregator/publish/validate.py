"""The last check before a published file replaces the old one (validate before swap).

Owns: deciding whether one rendered document may be published (``validate``). The
publisher calls it on every file it is about to write; a refused document keeps the last
good file on disk (see ``site.py``). Feed pages arrive as parts (``Composed``: envelope
and items) and go through ``validate_composed``, the same verdict with each item checked
once per publish run instead of once per page that holds it.

Must not: change the document, read files or the clock, or fetch anything (the XML parser
runs with ``no_network`` and never resolves entities). It checks our own output, so it
is strict about what we promise (UTF-8, no DTD, XML 1.0 characters, the elements readers
need) rather than a full validator of each format: a refusal means a renderer bug or
data the renderers did not expect, and the message says what and where
(``item 3: pubDate 'Mon, 99 Foo' is not an RFC 822 date (line 40)``).

Checks, by file name:

- every file: strict UTF-8;
- ``.rss.xml``, ``.atom.xml``, ``.opml`` and any other ``.xml``: well-formed XML with an
  encoding declaration (if any) of UTF-8, no DOCTYPE (our documents never have one, and
  a DTD lets entities change what readers see), no character XML 1.0 forbids, neither
  raw nor as a character reference (``&#8;``). libxml2 refuses both forms too; the scan
  here runs first so the message names the character and its line;
- RSS 2.0: ``<rss version="2.0">`` with one ``<channel>`` whose ``title``, ``link`` and
  ``description`` are not empty and which links to itself (``atom:link rel="self"``);
  every item has a title or a description (RSS 2.0) and a ``guid`` (our own promise:
  readers fall back to guessing identity without it); every ``pubDate`` and
  ``lastBuildDate`` is an RFC 822 date (RFC 5322 §3.3 form, four-digit year, English
  names, a day of week that matches) with a year in 1970..9999: RFC 822 years were two
  digits, and ``email.utils`` reads ``0001`` as 2001, so a year-1 date (a broken upstream
  clock, an importer's default) would reach readers as a wrong but plausible date;
- Atom 1.0 (RFC 4287): ``<feed>`` with ``id``, ``title``, ``updated`` and ``link
  rel="self"``; an author on the feed or on every entry (§4.1.1); every entry with
  ``id``, ``title`` and ``updated``; every ``updated`` / ``published`` an RFC 3339
  date-time (§3.3: upper-case ``T`` and ``Z``);
- JSON Feed 1.x: a JSON object (no ``NaN`` / ``Infinity``, which JSON does not have) with
  a ``https://jsonfeed.org/version/1…`` version, a string ``title`` and an ``items`` list;
  every item an object with a non-empty string ``id`` and a string ``content_html`` or
  ``content_text``; dates RFC 3339; URLs, titles and summaries strings; authors and hubs
  objects of the right shape; no string with a character XML 1.0 forbids (the renderer
  strips them as for the XML twins: many readers put the text into XML or HTML);
- OPML: ``<opml>`` with ``<head>`` and ``<body>``, every outline with a ``text``;
- ``.html``: no NUL, an ``<html`` start and a ``</html>`` end (a light check that the page
  was rendered whole).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from lxml import etree

from aggregator.errors import PublishError
from aggregator.publish.pages import Composed

ATOM_NS = "http://www.w3.org/2005/Atom"
_A = "{" + ATOM_NS + "}"


class _Refused(Exception):
    """One problem found; ``validate`` adds the file name."""


def validate(rel_path: str, data: bytes) -> None:
    """Raise :class:`PublishError` (``"<rel_path>: <problem>"``) when ``data`` must not be
    published as ``rel_path``; return None when it may."""
    check = next((c for suffix, c in _CHECKS if rel_path.endswith(suffix)), _utf8)
    try:
        check(data)
    except _Refused as e:
        raise PublishError(f"{rel_path}: {e}") from None


def validate_composed(rel_path: str, doc: Composed, checked: set) -> None:
    """The verdict of ``validate(rel_path, doc.data)``, at a fraction of its cost when the
    same items recur in many documents (a publish run puts each article into four or more
    feeds). ``checked``: one set per run, of the items passed so far and their context.

    An RSS, Atom or JSON Feed document of our layout (the renderers' tail, items last in
    their container) is checked as its envelope -- ``head + tail``, the page without items,
    which gets every check of a whole document -- and each item once per context:

    - XML: the item alone, in the smallest document that gives it its context (the
      envelope's XML declaration and a container with the namespaces in scope in the
      envelope's ``<channel>`` / ``<feed>``), must parse as exactly one child of that
      container, an ``item`` / ``entry``, and nothing else; that child then gets the
      per-item checks. The item is thereby one balanced element, so N of them side by
      side parse as N such elements, in that envelope too (it has no DTD, so no entity
      but XML's own can mean something else there). What an item's checks depend on
      besides its own bytes is its context -- the XML declaration, the namespaces in
      scope and (Atom) whether the feed has an author -- and an item's pass counts only
      for the same context. (Checked inside the whole envelope instead, each item
      parsed the envelope again: RSS + Atom of a 4,239-article cold publish 0.34 s CPU,
      0.30 s this way.);
    - JSON: the array the head leaves open must be the envelope's ``items``, and each item
      one JSON object on its own that passes the per-item checks, the XML-character test
      included (no context: nothing outside an item changes what it means).

    Every check of a whole document is about the feed level or about one item, so when
    the envelope and every item pass here the whole document passes ``validate`` too.
    Whenever this route refuses, ``validate`` on the whole document decides, with its own
    message (item number and line as readers see them).
    """
    for suffix, route in _COMPOSED:
        if rel_path.endswith(suffix):
            break
    else:
        validate(rel_path, doc.data)
        return
    try:
        route(doc, checked)
    except _Refused:
        validate(rel_path, doc.data)


# --- text ---------------------------------------------------------------------------------

# XML 1.0 §2.2 Char, complemented. Surrogates cannot come out of strict UTF-8 decoding,
# but a JSON escape (``"\\ud800"``) makes one.
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: the same characters as JSON escapes (\b, \f, \u0008, \ud800, \uffff ...): a superset
#: test, since an escaped backslash before "b" or "u0008" also matches and only costs the
#: exact walk
_ESCAPED_ILLEGAL = re.compile(r"\\(?:[bf]|u(?:00(?:0[0-8bcef]|1[0-9a-f])|d[89a-f][0-9a-f]{2}|fff[ef]))",
                              re.IGNORECASE)
# Bounded digits (Python refuses int() of over 4,300 digits); a longer reference is out of
# range anyway, and libxml2 refuses it below.
_CHAR_REF = re.compile(r"&#(?:x0*([0-9a-fA-F]{1,8})|0*([0-9]{1,10}));")


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise _Refused(f"line {line}: not UTF-8 (byte 0x{data[e.start]:02X} at offset {e.start})") from None


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _xml_char(code: int) -> bool:
    return (code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
            or 0x10000 <= code <= 0x10FFFF)


def _check_xml_chars(text: str) -> None:
    bad = _ILLEGAL.search(text)
    if bad:
        raise _Refused(f"line {_line(text, bad.start())}: character U+{ord(bad.group()):04X} is not allowed in XML 1.0")
    for ref in _CHAR_REF.finditer(text):
        code = int(ref.group(1), 16) if ref.group(1) else int(ref.group(2))
        if not _xml_char(code):
            raise _Refused(f"line {_line(text, ref.start())}: character reference {ref.group()} "
                           f"is not allowed in XML 1.0")


# --- XML ----------------------------------------------------------------------------------

_DECLARATION = re.compile(r"<\?xml\s[^>]*?\?>")
_ENCODING = re.compile(r"""\sencoding\s*=\s*["']([^"']*)["']""")
_LIBXML_POSITION = re.compile(r", line \d+, column \d+$")


def _xml(data: bytes) -> etree._Element:
    """The root of a well-formed, UTF-8, DTD-free XML document of XML 1.0 characters."""
    text = _utf8(data)
    text = text.removeprefix("\ufeff")
    if text.startswith("<?xml"):
        declaration = _DECLARATION.match(text)
        encoding = _ENCODING.search(declaration.group()) if declaration else None
        if encoding and encoding.group(1).lower() != "utf-8":
            raise _Refused(f"line 1: declared encoding {encoding.group(1)!r}, not UTF-8")
    # A parser per call: lxml parsers keep state and must not be shared between threads.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        # libxml2 refuses XML-illegal characters, raw or as references, too; the scan
        # (only on failure: it costs as much as the parse) names the character and line.
        _check_xml_chars(text)
        reason = _LIBXML_POSITION.sub("", e.msg or str(e))
        line, column = e.position if e.position else (e.lineno, 0)
        raise _Refused(f"line {line}, column {column}: not well-formed ({reason})") from None
    if root.getroottree().docinfo.doctype:
        raise _Refused("has a DOCTYPE: our documents never carry a DTD")
    return root


def _in_scope(element: etree._Element) -> tuple[tuple[str, str], ...]:
    """The namespace declarations in scope at ``element`` (prefix "" for the default)."""
    return tuple(sorted((prefix or "", uri) for prefix, uri in element.nsmap.items()))


def _text_of(element: etree._Element | None) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


# --- RSS 2.0 ------------------------------------------------------------------------------

_RFC822 = re.compile(
    r"(?:(Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"(\d{4}) (\d\d):(\d\d)(?::(\d\d))? (GMT|UTC?|[ECMP][SD]T|[+-]\d{4})"
)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _rfc822(value: str, what: str) -> None:
    match = _RFC822.fullmatch(value)
    try:
        moment = parsedate_to_datetime(value) if match else None
    except (TypeError, ValueError, OverflowError):  # e.g. 31 Feb, hour 25
        moment = None
    if match is None or moment is None:
        raise _Refused(f"{what} {value!r} is not an RFC 822 date")
    year = int(match.group(4))
    if not 1970 <= year <= 9999:
        raise _Refused(f"{what} {value!r} has year {year}, outside 1970..9999")
    if match.group(1) and match.group(1) != _WEEKDAYS[moment.weekday()]:
        raise _Refused(f"{what} {value!r}: that day is a {_WEEKDAYS[moment.weekday()]}")


def _check_rss(data: bytes) -> None:
    _rss_feed(data)


def _rss_feed(data: bytes) -> tuple[etree._Element, etree._Element]:
    """Every check of an RSS document; its root and channel."""
    root = _xml(data)
    if root.tag != "rss" or root.get("version") != "2.0":
        raise _Refused(f"root is <{root.tag} version={root.get('version')!r}>, not <rss version=\"2.0\">")
    channels = root.findall("channel")
    if len(channels) != 1:
        raise _Refused(f"has {len(channels)} <channel> elements, not 1")
    channel = channels[0]
    for name in ("title", "link", "description"):
        if not _text_of(channel.find(name)):
            raise _Refused(f"channel: <{name}> is missing or empty")
    if not any(link.get("rel") == "self" and link.get("href") for link in channel.iterfind(_A + "link")):
        raise _Refused('channel: no <atom:link rel="self">')
    for name in ("pubDate", "lastBuildDate"):
        for element in channel.iterfind(name):
            _rfc822((element.text or "").strip(), f"channel: {name}")
    for number, item in enumerate(channel.iterfind("item"), 1):
        _rss_item(item, number)
    return root, channel


def _rss_item(item: etree._Element, number: int) -> None:
    try:
        if not (_text_of(item.find("title")) or _text_of(item.find("description"))):
            raise _Refused("has neither a title nor a description")
        if not _text_of(item.find("guid")):
            raise _Refused("has no <guid>")
        for element in item.iterfind("pubDate"):
            _rfc822((element.text or "").strip(), "pubDate")
    except _Refused as e:
        raise _Refused(f"item {number}: {e} (line {item.sourceline})") from None


def _composed_rss(doc: Composed, checked: set) -> None:
    channel = _rss_feed(_composed_envelope(doc, _RSS_TAIL))[1]
    context = ("rss", _declaration(doc.head), _in_scope(channel))
    for item in doc.items:
        if (context, item) in checked:
            continue
        start, end = _wrapper(*context)
        alone = _xml(start + item + end)
        if not (len(alone) == 1 and len(alone[0]) == 1 and alone[0][0].tag == "item"):
            raise _Refused("an item is not one <item>")
        _rss_item(alone[0][0], 1)
        checked.add((context, item))


# --- Atom 1.0 -----------------------------------------------------------------------------

# RFC 3339 §5.6 date-time as RFC 4287 §3.3 restricts it (upper-case T and Z).
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)")


def _is_rfc3339(value: str) -> bool:
    if not _RFC3339.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:  # month 13, second 60, offset +25:00...
        return False
    return True


def _atom_dates(element: etree._Element, where: str) -> None:
    for name in ("updated", "published"):
        for date in element.iterfind(_A + name):
            value = (date.text or "").strip()
            if not _is_rfc3339(value):
                raise _Refused(f"{where}{name} {value!r} is not an RFC 3339 date-time (line {date.sourceline})")


def _check_atom(data: bytes) -> None:
    _atom_feed(data)


def _atom_feed(data: bytes) -> tuple[etree._Element, bool]:
    """Every check of an Atom document; its root and whether it has a feed-level author."""
    root = _xml(data)
    if root.tag != _A + "feed":
        raise _Refused(f"root is <{root.tag}>, not an Atom <feed>")
    for name in ("id", "title", "updated"):
        if not _text_of(root.find(_A + name)):
            raise _Refused(f"feed: <{name}> is missing or empty")
    if not any(link.get("rel") == "self" and link.get("href") for link in root.iterfind(_A + "link")):
        raise _Refused('feed: no <link rel="self">')
    _atom_dates(root, "feed: ")
    feed_author = root.find(_A + "author") is not None
    for number, entry in enumerate(root.iterfind(_A + "entry"), 1):
        _atom_entry(entry, number, feed_author)
    return root, feed_author


def _atom_entry(entry: etree._Element, number: int, feed_author: bool) -> None:
    where = f"entry {number}: "
    for name in ("id", "title", "updated"):
        if not _text_of(entry.find(_A + name)):
            raise _Refused(f"{where}<{name}> is missing or empty (line {entry.sourceline})")
    if not feed_author and entry.find(_A + "author") is None:
        raise _Refused(f"{where}no <author>, and the feed has none (line {entry.sourceline})")
    _atom_dates(entry, where)


def _composed_atom(doc: Composed, checked: set) -> None:
    root, feed_author = _atom_feed(_composed_envelope(doc, _ATOM_TAIL))
    context = ("atom", _declaration(doc.head), _in_scope(root))
    for item in doc.items:
        if (context, feed_author, item) in checked:
            continue
        start, end = _wrapper(*context)
        alone = _xml(start + item + end)
        if not (len(alone) == 1 and alone[0].tag == _A + "entry"):
            raise _Refused("an item is not one <entry>")
        _atom_entry(alone[0], 1, feed_author)
        checked.add((context, feed_author, item))


# --- JSON Feed ----------------------------------------------------------------------------

_FEED_URLS = ("home_page_url", "feed_url", "next_url", "icon", "favicon")
_FEED_STRINGS = ("description", "user_comment", "language")
_ITEM_URLS = ("url", "external_url", "image", "banner_image")
_ITEM_STRINGS = ("title", "content_html", "content_text", "summary", "language")


def _no_constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value`` (keys included) with where it is."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield f"{path}.{key}" if path else key, key
            yield from _strings(child, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _strings(child, f"{path}[{index}]")


def _authors(value: Any, where: str) -> None:
    if not isinstance(value, list):
        raise _Refused(f"{where}authors is not a list")
    for author in value:
        if not isinstance(author, dict) or not any(isinstance(author.get(k), str) for k in ("name", "url", "avatar")):
            raise _Refused(f"{where}author {author!r} has no name, url or avatar")


def _json_fields(obj: dict, urls: tuple[str, ...], strings: tuple[str, ...], where: str) -> None:
    for key in (*urls, *strings):
        if key in obj and not isinstance(obj[key], str):
            raise _Refused(f"{where}{key} is {type(obj[key]).__name__}, not a string")
    if "authors" in obj:
        _authors(obj["authors"], where)


def _json_text(data: bytes) -> tuple[str, Any]:
    text = _utf8(data)
    if text.startswith("\ufeff"):  # RFC 8259 §8.1: MUST NOT add a byte order mark
        raise _Refused("starts with a byte order mark")
    try:
        return text, json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise _Refused(f"line {e.lineno}, column {e.colno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise _Refused("not valid JSON (nested too deeply)") from None


def _check_json(data: bytes) -> None:
    text, doc = _json_text(data)
    if not isinstance(doc, dict):
        raise _Refused(f"is a JSON {type(doc).__name__}, not an object")
    version = doc.get("version")
    if not (isinstance(version, str) and version.startswith("https://jsonfeed.org/version/1")):
        raise _Refused(f"version {version!r} is not a JSON Feed 1.x version URL")
    if not isinstance(doc.get("title"), str):
        raise _Refused("title is missing or not a string")
    items = doc.get("items")
    if not isinstance(items, list):
        raise _Refused("items is missing or not a list")
    _json_fields(doc, _FEED_URLS, _FEED_STRINGS, "")
    if "expired" in doc and not isinstance(doc["expired"], bool):
        raise _Refused("expired is not true or false")
    hubs = doc.get("hubs", [])
    if not isinstance(hubs, list) or not all(
            isinstance(h, dict) and isinstance(h.get("type"), str) and isinstance(h.get("url"), str) for h in hubs):
        raise _Refused("hubs is not a list of objects with a type and a url")
    for number, item in enumerate(items, 1):
        _json_item(item, f"item {number}: ")
    _json_chars(text, doc)


def _json_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _Refused(f"{where}is a {type(item).__name__}, not an object")
    if not (isinstance(item.get("id"), str) and item["id"].strip()):
        raise _Refused(f"{where}id is missing, empty or not a string")
    if not any(isinstance(item.get(k), str) for k in ("content_html", "content_text")):
        raise _Refused(f"{where}has neither content_html nor content_text")
    _json_fields(item, _ITEM_URLS, _ITEM_STRINGS, where)
    for key in ("date_published", "date_modified"):
        if key in item and not (isinstance(item[key], str) and _is_rfc3339(item[key])):
            raise _Refused(f"{where}{key} {item[key]!r} is not an RFC 3339 date-time")
    tags = item.get("tags", [])
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise _Refused(f"{where}tags is not a list of strings")


def _json_chars(text: str, doc: Any) -> None:
    """No string in ``doc`` (parsed from ``text``) holds a character XML 1.0 forbids."""
    if not (_ILLEGAL.search(text) or _ESCAPED_ILLEGAL.search(text)):
        return  # the common case: no string can hold one; the walk below only says where
    for path, value in _strings(doc, ""):
        bad = _ILLEGAL.search(value)
        if bad:
            where = re.sub(r"^items\[(\d+)\]\.?", lambda m: f"item {int(m.group(1)) + 1}: ", path)
            raise _Refused(f"{where} contains U+{ord(bad.group()):04X}, which XML 1.0 does not allow")


def _composed_json(doc: Composed, checked: set) -> None:
    # The items go into the array the head leaves open and the tail closes ("[" cannot be
    # inside a string there: the tail has no quote to end one). That array must be the
    # document's "items" -- the last such member, as json.loads reads duplicates -- and
    # not, say, "hubs" or "authors", whose checks an item would fail: a probe value put
    # there must come out as the only item.
    _check_json(_composed_envelope(doc, _JSON_TAIL, separator=b","))
    if not doc.head.endswith(b"[") or json.loads(doc.head + b"0" + doc.tail).get("items") != [0]:
        raise _Refused("not a document of our layout")
    for item in doc.items:
        if item in checked:
            continue
        text, value = _json_text(item)
        _json_item(value, "item 1: ")
        _json_chars(text, value)
        checked.add(item)


# --- OPML and HTML ------------------------------------------------------------------------


def _check_opml(data: bytes) -> None:
    root = _xml(data)
    if root.tag != "opml":
        raise _Refused(f"root is <{root.tag}>, not <opml>")
    for name in ("head", "body"):
        if root.find(name) is None:
            raise _Refused(f"no <{name}>")
    for outline in root.iter("outline"):
        if not outline.get("text"):
            raise _Refused(f"line {outline.sourceline}: <outline> without a text")


_HTML_START = re.compile(r"<html[\s>]", re.IGNORECASE)
_HTML_END = re.compile(r"</html\s*>\s*$", re.IGNORECASE)


def _check_html(data: bytes) -> None:
    text = _utf8(data)
    if "\x00" in text:
        raise _Refused(f"line {_line(text, text.index(chr(0)))}: NUL character")
    if not _HTML_START.search(text):
        raise _Refused("no <html> start tag")
    if not _HTML_END.search(text):
        raise _Refused("does not end with </html>")


_CHECKS: tuple[tuple[str, Callable[[bytes], Any]], ...] = (
    (".rss.xml", _check_rss),
    (".atom.xml", _check_atom),
    (".json", _check_json),
    (".opml", _check_opml),
    (".xml", _xml),
    (".html", _check_html),
)

# --- composed documents -------------------------------------------------------------------

#: the ends of the renderers' documents (feeds.py, json_feed.py): items come right before
_RSS_TAIL = b"  </channel>\n</rss>\n"
_ATOM_TAIL = b"</feed>\n"
_JSON_TAIL = b"]}\n"


def _composed_envelope(doc: Composed, tail: bytes, *, separator: bytes = b"") -> bytes:
    """``head + tail``, when ``doc`` has the layout its route knows (a fixed tail closing
    the container, then the root); anything else is left to ``validate``."""
    if doc.tail != tail or doc.separator != separator:
        raise _Refused("not a document of our layout")
    return doc.head + doc.tail


_HEAD_DECLARATION = re.compile(rb"<\?xml\s[^>]*?\?>")


def _declaration(head: bytes) -> bytes:
    """The XML declaration the head starts with (anything else is left to ``validate``)."""
    found = _HEAD_DECLARATION.match(head)
    if found is None:
        raise _Refused("not a document of our layout")
    return found.group()


#: what a double-quoted attribute value cannot hold as is (whitespace: attribute values
#: are normalised, a reference keeps the character)
_ATTRIBUTE_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", '"': "&quot;", "\t": "&#9;", "\n": "&#10;",
                                    "\r": "&#13;"})


@functools.lru_cache(maxsize=64)
def _wrapper(kind: str, declaration: bytes, in_scope: tuple[tuple[str, str], ...]) -> tuple[bytes, bytes]:
    """The smallest document that puts an item in its context: the same XML declaration,
    and a container (RSS ``<rss><channel>``, Atom ``<feed>``) with the same namespaces in
    scope. An item's verdict there is its verdict in the page (nothing else of the page
    reaches into an item: no DTD, no entities but XML's own), and parsing it costs the
    item's bytes only, not the page's envelope again for every item."""
    declarations = "".join(f' xmlns{":" if prefix else ""}{prefix}="{uri.translate(_ATTRIBUTE_ESCAPES)}"'
                           for prefix, uri in in_scope)
    if kind == "rss":
        start, end = f"<rss><channel{declarations}>", "</channel></rss>\n"
    else:
        start, end = f"<feed{declarations}>", "</feed>\n"
    return declaration + b"\n" + start.encode("utf-8"), end.encode("utf-8")


_COMPOSED: tuple[tuple[str, Callable[[Composed, set], None]], ...] = (
    (".rss.xml", _composed_rss),
    (".atom.xml", _composed_atom),
    (".json", _composed_json),
)
