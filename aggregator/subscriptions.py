"""Sources as OPML: read a subscription list exported by a feed reader, decide which of its
feeds become ``[[sources]]``, and write our sources back out as OPML.

Owns: OPML bytes -> ``Outline`` values (``read_opml``), the pure decision of what an import
adds and what it skips and why (``plan_import``), and our sources -> OPML 2.0 bytes
(``build_opml``). Not to be confused with ``publish/opml.py``, the list of the feeds we
*publish*; this module is about the feeds we *poll*.
Must not: fetch anything (an import of hundreds of feeds would otherwise take minutes and
hammer hosts; the daemon polls the new sources on its schedule), touch the database, or
write config.toml (``config.add_sources_to_file`` does, once for the whole batch).

Decisions:

- Parsing refuses a DTD internal subset or any ``<!ENTITY`` before lxml sees the document
  (billion laughs, HAZARDS.md), checked on the decoded text so a UTF-16 file cannot hide
  it; lxml then runs with ``resolve_entities=False, no_network=True`` and its default
  limits (256 levels of nesting). The encoding comes from the BOM or the XML declaration
  (``encoding.decode_feed_bytes``, which also knows the labels libxml2 does not).
- A feed is an outline with an ``xmlUrl`` (attribute names matched case-insensitively:
  OPML 1.0 exports in the wild write ``xmlurl``), at any depth, whose ``type`` is absent or
  ``rss`` / ``atom`` / ``jsonfeed`` / ``json``. FreshRSS's ``HTML+XPath``-style types are
  web scraping, not feeds: reported and skipped. Namespaced attributes (``miniflux:*``,
  ``frss:*``) are ignored.
- Folders: the top-level enclosing outline's ``text`` (else ``title``) is the category,
  the second level the channel; deeper levels add nothing (our sources have two levels).
  ``build_opml`` writes exactly that shape, so export -> import round-trips name, URL,
  category and channel.
- A feed outside any folder takes ``--category`` when given; otherwise it is skipped and
  reported (with the hint), not guessed: a category names a published feed, so it is the
  operator's choice. Importing the same file again with ``--category`` adds only those,
  the rest being reported as duplicates.
- Duplicates are found on ``url_key``: scheme and host case-insensitive, a trailing ``/``
  on the path and any ``#fragment`` ignored, the query compared exactly. Nothing cleverer
  (``http`` vs ``https``, ``www.``): two URLs we are unsure of are both kept.
- Names: ``title``, else ``text``, else the URL's host; control characters become spaces,
  ends stripped. A name taken (in config.toml or earlier in the file) by another URL gets
  `` (2)``, `` (3)``… so nothing is lost and ``config_from_dict``'s unique-name rule holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from lxml import etree

from .encoding import decode_feed_bytes
from .errors import AggregatorError
from .models import Source

OPML_SPEC = "http://opml.org/spec2.opml"
FEED_TYPES = frozenset({"", "rss", "atom", "jsonfeed", "json"})

# Entity declarations live in a DTD internal subset; refusing both covers every billion
# laughs variant (same rule as parse.py, HAZARDS.md "Parsing").
_ENTITY_TEXT = re.compile(r"<!ENTITY|<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
# The declaration names the file's encoding, which we have already applied: lxml gets UTF-8.
_XML_DECL = re.compile(r"^\s*<\?xml\s[^>]*?\?>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_LIBXML_POSITION = re.compile(r",? line \d+, column \d+$")


class OPMLError(AggregatorError):
    """The file is not an OPML document we can read (CLI exit status 1)."""

    kind = "opml"


@dataclass(frozen=True)
class Outline:
    """One feed outline as the file has it. ``url`` is "" when the outline is typed as a
    feed but has no ``xmlUrl``; ``folders`` are the enclosing folders' names, outermost first."""

    line: int
    url: str
    title: str
    type: str
    folders: tuple[str, ...]


@dataclass(frozen=True)
class NewSource:
    """A ``[[sources]]`` table an import appends."""

    line: int
    name: str
    url: str
    category: str
    channel: str | None = None

    def as_table(self) -> dict[str, str]:
        table = {"name": self.name, "url": self.url, "category": self.category}
        if self.channel:
            table["channel"] = self.channel
        return table


@dataclass(frozen=True)
class Skipped:
    line: int
    url: str
    name: str
    reason: str


@dataclass(frozen=True)
class ImportPlan:
    found: int
    add: tuple[NewSource, ...]
    skipped: tuple[Skipped, ...]


# --- reading ----------------------------------------------------------------------------


def read_opml_file(path: Path) -> tuple[Outline, ...]:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise OPMLError(f"{path}: cannot read: {e.strerror}") from e
    return read_opml(data, str(path))


def read_opml(data: bytes, origin: str) -> tuple[Outline, ...]:
    """Every feed outline of an OPML 1.0/2.0 document, in document order. Raises
    ``OPMLError`` naming ``origin`` and the problem for anything that is not one."""

    def refuse(problem: str) -> OPMLError:
        return OPMLError(f"{origin}: not an OPML file: {problem}")

    if not data.strip():
        raise refuse("the file is empty")
    text = decode_feed_bytes(data, None).text.removeprefix("\ufeff")
    if _ENTITY_TEXT.search(text):
        raise refuse("it has a DTD internal subset or an entity declaration, which are refused "
                      "(billion-laughs protection)")
    # A parser per call: lxml parsers keep state and are not to be shared between threads.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(_XML_DECL.sub("", text, count=1).encode("utf-8"), parser)
    except etree.XMLSyntaxError as e:
        reason = _LIBXML_POSITION.sub("", e.msg or str(e))
        if "Excessive depth" in reason:
            reason = "elements nested deeper than 256 levels"
        line = e.position[0] if e.position else e.lineno
        raise refuse(f"line {line}: not well-formed XML ({reason})") from None
    if etree.QName(root).localname != "opml":
        raise refuse(f"the root element is <{etree.QName(root).localname}>, not <opml>")
    body = next((c for c in root if _is(c, "body")), None)
    if body is None:
        raise refuse("it has no <body> element")

    found: list[Outline] = []
    # Depth-first, in document order, without recursion (libxml2 caps depth anyway).
    stack: list[tuple[etree._Element, tuple[str, ...]]] = [(c, ()) for c in reversed(body) if _is(c, "outline")]
    while stack:
        element, folders = stack.pop()
        attrs = {k.lower(): v for k, v in element.attrib.items() if not k.startswith("{")}
        url = (attrs.get("xmlurl") or "").strip()
        kind = (attrs.get("type") or "").strip().lower()
        children = [c for c in element if _is(c, "outline")]
        if url or kind in ("rss", "atom"):
            title = clean_name(attrs.get("title") or attrs.get("text") or "")
            found.append(Outline(element.sourceline or 0, url, title, kind, folders))
            inner = folders
        else:
            name = clean_name(attrs.get("text") or attrs.get("title") or "")
            inner = (*folders, name) if name else folders
        stack.extend((c, inner) for c in reversed(children))
    return tuple(found)


def _is(element, name: str) -> bool:
    return isinstance(element.tag, str) and etree.QName(element).localname == name


def clean_name(value: str) -> str:
    """Control characters (line breaks, tabs) become one space; the ends are stripped."""
    return _CONTROL.sub(" ", value).strip()


def url_key(url: str) -> str:
    """What two URLs share when they are the same feed for duplicate detection."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def _url_problem(url: str) -> str | None:
    if not url:
        return "the outline has no xmlUrl"
    if any(c.isspace() for c in url) or _CONTROL.search(url):
        return "not a valid URL (it contains spaces or control characters)"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError as e:
        return f"not a valid URL ({e})"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return "not an http(s) URL"
    return None


# --- deciding ---------------------------------------------------------------------------


def plan_import(outlines: Sequence[Outline], existing: Sequence[Source], *, category: str | None = None) -> ImportPlan:
    """What importing ``outlines`` next to the ``existing`` sources adds, and what it skips
    and why. ``category`` is for feeds outside any folder. Pure: same input, same plan."""
    default = clean_name(category) if category else ""
    by_key = {url_key(s.url): f"already the source {s.name!r}" for s in existing}
    names = {s.name for s in existing}
    add: list[NewSource] = []
    skipped: list[Skipped] = []
    for o in outlines:
        problem = _url_problem(o.url)
        if problem is None and o.type not in FEED_TYPES:
            problem = f"outline type {o.type!r} is not an RSS, Atom or JSON feed"
        if problem is None and url_key(o.url) in by_key:
            problem = by_key[url_key(o.url)]
        if problem is None and not (o.folders or default):
            problem = "not in any folder; import it with --category C"
        if problem:
            skipped.append(Skipped(o.line, o.url, o.title, problem))
            continue
        base = o.title or urlsplit(o.url).hostname or o.url
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base} ({n})"
        names.add(name)
        by_key[url_key(o.url)] = f"same feed as line {o.line} ({name!r})"
        cat, channel = (o.folders[0], o.folders[1] if len(o.folders) > 1 else None) if o.folders else (default, None)
        add.append(NewSource(o.line, name, o.url, cat, channel))
    return ImportPlan(len(outlines), tuple(add), tuple(skipped))


# --- writing ----------------------------------------------------------------------------


def build_opml(sources: Sequence[Source], *, title: str) -> bytes:
    """OPML 2.0, UTF-8: one folder per category (sorted), its channel-less sources in
    config order, then one nested folder per channel (sorted). No ``dateCreated``: the same
    sources give the same bytes. ``htmlUrl`` is left out: we do not store a source's site."""
    from .text import strip_illegal_chars  # the one XML-1.0 character filter

    root = etree.Element("opml", version="2.0")
    head = etree.SubElement(root, "head")
    etree.SubElement(head, "title").text = strip_illegal_chars(title)
    etree.SubElement(head, "docs").text = OPML_SPEC
    body = etree.SubElement(root, "body")

    def folder(parent: etree._Element, name: str) -> etree._Element:
        element = etree.SubElement(parent, "outline")
        element.set("text", strip_illegal_chars(name))
        element.set("title", strip_illegal_chars(name))
        return element

    def feed(parent: etree._Element, source: Source) -> None:
        element = etree.SubElement(parent, "outline")
        # lxml keeps attributes in the order set: fixed order, stable bytes.
        element.set("type", "rss")
        element.set("text", strip_illegal_chars(source.name))
        element.set("title", strip_illegal_chars(source.name))
        element.set("xmlUrl", strip_illegal_chars(source.url))

    for category in sorted({s.category for s in sources}):
        members = [s for s in sources if s.category == category]
        parent = folder(body, category)
        for source in members:
            if not source.channel:
                feed(parent, source)
        for channel in sorted({s.channel for s in members if s.channel}):
            sub = folder(parent, channel)
            for source in members:
                if source.channel == channel:
                    feed(sub, source)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding="UTF-8")
