"""Fast parse path: well-formed RSS 0.90 / 0.91 / 0.92 / 1.0 / 2.0 and Atom 0.3 / 1.0 -> ParsedFeed.

Owns: reading an already decoded and vetted document (``parse.parse_feed`` has refused DTD
entities and HTML pages and defused bad character references) with lxml, and reproducing,
for the fields ``parse._to_parsed_feed`` reads, exactly the result feedparser's strict (SAX)
parser would produce; then the same mapping as the feedparser path, so both paths give
equal ``ParsedFeed`` values.
Must not: guess. Anything outside a conservative envelope returns None ("not sure: use
feedparser"): not well-formed XML (or any libxml2 complaint, e.g. an entity a DOCTYPE might
define), a DOCTYPE that feedparser's ``replace_doctype`` would not remove cleanly, an XML
declaration left in the text, a root other than <rss> (version 2.0, 0.91, 0.92 or none:
feedparser's ``_start_rss`` treats them alike), Atom 1.0 or 0.3 <feed> or <rdf:RDF>, a version
other than those (an RDF document without the RSS 0.90/1.0 namespace has none),
SVG/MathML/xlink, markup inside XML content other than XHTML, elements inside XHTML content
whose end feedparser still handles (HTML5 <source>, <title>, ...), base64 content (by type
or Atom 0.3 mode), namespace prefixes bound to more than one URI, and every element
feedparser has a handler for that this module does not reproduce (GML, GeoRSS <where>,
creativeCommons, ...).
Also no I/O and no clock (the rules of ``parse`` apply unchanged).

Why a re-implementation rather than driving feedparser's handlers from lxml: the cost of a
cold poll cycle is in feedparser's mixin (attribute normalisation, FeedParserDict look-ups,
deep copies of content parameters, regexes per element), not in expat. So this module is a
port of that mixin reduced to its observable behaviour for the whitelisted handlers, kept
deliberately close to feedparser 6.0's code (same names, same state variables: element
stack, depth, title depth, property depth map, content parameters, ``_summaryKey``,
``hasContent``) because its quirks are part of the result (a second <description> becomes
content, a guid that is a permalink becomes the link, a shallower title wins, stray text
lands in a stale stack entry, ...). Guards that make equality provable:
* every element name feedparser dispatches to a handler (``_start_x``/``_end_x`` on its
  ``StrictFeedParser``) must have a port here, else None: a new feedparser handler cannot
  be silently treated as an unknown element;
* the corpus test (tests/test_fastparse.py) compares both paths field by field on every
  real and ill-formed corpus file, so a drift in a feedparser upgrade fails there.
Dates go through feedparser's own ``_parse_date``; looks-like-HTML, content-type mapping,
cp1252 mapping and URI fixing are feedparser's own functions, called, not copied.
"""

from __future__ import annotations

import functools
import re
import sys
import xml.sax.saxutils
from collections.abc import Sequence

from feedparser.api import StrictFeedParser
from feedparser.datetimes import _parse_date
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.namespaces.georss import (
    _parse_georss_box,
    _parse_georss_line,
    _parse_georss_point,
    _parse_georss_polygon,
)
from feedparser.sanitizer import replace_doctype
from feedparser.urls import _urljoin, make_safe_absolute_uri
from feedparser.util import FeedParserDict
from lxml import etree

from aggregator import parse as _parse
from aggregator.models import ParsedFeed

_ATOM_NS = "http://www.w3.org/2005/Atom"
_ATOM03_NS = "http://purl.org/atom/ns#"
_RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_RSS090_NS = "http://my.netscape.com/rdf/simple/0.9/"
_RSS10_NS = "http://purl.org/rss/1.0/"
# UserLand's RSS 2.0 namespaces (".../rss2"), which feedparser reads as no namespace at all.
_USERLAND = "backend.userland.com/rss"
_USERLAND_NS = "http://backend.userland.com/rss"
_XML_NS = "http://www.w3.org/XML/1998/namespace"
_XHTML_TYPE = "application/xhtml+xml"
_RSS_VERSIONS = {"2.0": "rss20", "0.91": "rss091u", "0.92": "rss092", None: "rss"}
# The document elements read here: RSS 0.9x/2.0, Atom 1.0 and 0.3, and RDF (RSS 0.90/1.0,
# whose version feedparser takes from the namespace declarations, see track_namespace).
_ROOTS = frozenset({f"{{{_ATOM_NS}}}feed", f"{{{_ATOM03_NS}}}feed", f"{{{_RDF_NS}}}RDF"})
_ACCEPTED_VERSIONS = frozenset(_RSS_VERSIONS.values()) | {"atom10", "atom03", "rss10", "rss090"}
# feedparser's namespace table (lower-cased URI -> its canonical prefix).
_MATCH_NS = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
# URIs whose declaration changes feedparser's attribute handling: xlink adds an xmlns
# attribute to the next element; SVG/MathML switch its serializer into another mode.
_REFUSED_NS = frozenset({"http://www.w3.org/1999/xlink", "http://www.w3.org/2000/svg",
                         "http://www.w3.org/1998/math/mathml"})
_FP_HANDLERS = frozenset(n for n in dir(StrictFeedParser) if n.startswith(("_start_", "_end_")))
# FeedParserDict renames these keys on assignment, and reads these specially: an unknown
# element of one of these names is refused, except RSS 1.0's <items> (its rdf:Seq of item
# URIs), which lands under "entries" of the feed dict, a key no field reads (the entries
# are the parser's own list).
_KEYMAP = FeedParserDict.keymap
_SPECIAL_KEYS = (frozenset(_KEYMAP) | {"category", "enclosures", "license"}) - {"items"}
_CAN_BE_RELATIVE_URI = _FeedParserMixin.can_be_relative_uri
_HTML_TYPES = _FeedParserMixin.html_types
_looks_like_html = _FeedParserMixin.looks_like_html
_map_content_type = _FeedParserMixin.map_content_type
_strattrs = _FeedParserMixin.strattrs
_QUERY_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_C1 = re.compile("[\x80-\x9f]")
_XML_DECL = re.compile(r"<\?xml[\s?]", re.IGNORECASE)
# replace_doctype's split at the first element (br"<\w": ASCII on bytes) and convert_to_utf8's
# declaration, which feedparser writes in front of the document it parses.
_FIRST_TAG = re.compile(r"<[A-Za-z0-9_]")
_FP_DECLARATION = "<?xml version='1.0' encoding='utf-8'?>\n"
_PLAIN_PROLOG = re.compile(r"(?:\s+|<\?[^<>]*\?>|<!--[^<>]*-->|<!DOCTYPE[^<>\[]*>)*<[A-Za-z0-9_]")
_PARSER = etree.XMLParser(recover=False, resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=False)


# What _Walker.start did with an element, for _Walker.end.
_HANDLED, _SERIALIZED, _SKIPPED = 0, 1, 2


class _Unsupported(Exception):
    """The document leaves the envelope this module reproduces exactly."""


def fast_parse(text: str, url: str, warnings: Sequence[str] = ()) -> ParsedFeed | None:
    """The ParsedFeed ``parse.parse_feed`` would return for ``text``, or None when this
    module cannot be sure of producing exactly that (the caller then runs feedparser).

    ``text`` is the document at the point parse_feed hands it to feedparser (decoded,
    vetted, character references defused); ``warnings`` are the ones parse_feed collected
    so far (decoding, replaced references). Never raises for any input text."""
    try:
        result = _read(text)
    except (_Unsupported, etree.LxmlError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, RecursionError, UnicodeError):
        return None
    if result is None:
        return None
    version, feed, entries = result
    fp_result = {"bozo": False, "version": version, "feed": feed, "entries": entries}
    try:
        return _parse._to_parsed_feed(fp_result, url, None, list(warnings), None)
    except Exception:  # noqa: BLE001 - the feedparser path then decides (and words) any error
        return None


def _read(text: str):
    # The same bytes feedparser is given: BOM and the document's own declaration removed.
    text = _parse._XML_DECL_TEXT.sub(r"\1", text.lstrip("\ufeff"), count=1)
    if _XML_DECL.search(text[:2048]):
        return None  # a declaration that was not at the start: feedparser's handling differs
    root = etree.fromstring(text.encode("utf-8"), _PARSER)
    if len(_PARSER.error_log):
        return None
    if root.tag == "rss" or (root.tag.endswith("}rss") and _USERLAND in root.tag.lower()):
        if root.get("version") not in _RSS_VERSIONS:
            return None
    elif root.tag not in _ROOTS:
        return None
    doctype_version = _doctype_version(text, bool(root.getroottree().docinfo.doctype))
    walker = _Walker()
    # Looking up each element's bindings (lxml's nsmap) costs as much as the rest of the
    # walk; when "xmlns" occurs in the text only as often as the root declares namespaces,
    # no other element declares one and the root's bindings are all there is.
    nested_ns = text.count("xmlns") != len(root.nsmap)
    if not nested_ns:
        for prefix, uri in root.nsmap.items():
            walker.track_namespace(prefix, uri)
    walker.walk(root, sys.getrecursionlimit() - 100, {} if nested_ns else None)
    if walker.version not in _ACCEPTED_VERSIONS:
        return None
    # feedparser.parse: the DOCTYPE's version, else the one its parser settled on.
    return doctype_version or walker.version, walker.feeddata, walker.entries


def _doctype_version(text: str, has_doctype: bool) -> str | None:
    """feedparser's ``replace_doctype``, which runs before its XML parser: it removes a
    DOCTYPE found at a line start before the first element (its regexes, on feedparser's
    own bytes: its declaration, a newline, then ``text``) and reports "rss091n" when the
    DOCTYPE names Netscape. Accepted only when the prolog before the document element is
    plain (whitespace, processing instructions and comments without markup characters
    inside, at most one DOCTYPE without internal subset), so that what the regexes find is
    the DOCTYPE lxml saw and expat then parses the document without one."""
    first = _FIRST_TAG.search(text)
    head = text[:first.end()] if first else text
    if "<!DOCTYPE" not in head:
        if has_doctype:
            raise _Unsupported("DOCTYPE after markup-like text")
        return None
    if not (has_doctype and _PLAIN_PROLOG.fullmatch(head) and head.count("<!DOCTYPE") == 1):
        raise _Unsupported("DOCTYPE in an unusual prolog")
    version, stripped, _ = replace_doctype((_FP_DECLARATION + head).encode("utf-8"))
    if b"<!DOCTYPE" in stripped:
        raise _Unsupported("DOCTYPE that feedparser's parser sees")
    return version


@functools.lru_cache(maxsize=256)
def _next_base(baseuri: str, declared: str) -> str:
    """unknown_starttag's base tracking: made absolute only once a base is known (and then
    only with a safe scheme); cached because every element of an xml:base scope repeats it."""
    if baseuri:
        return make_safe_absolute_uri(baseuri, declared) or baseuri
    return _urljoin(baseuri, declared)


def _set(context: dict, key: str, value) -> None:
    """FeedParserDict.__setitem__: some keys are stored under another name."""
    mapped = _KEYMAP.get(key, key)
    context[mapped[0] if isinstance(mapped, list) else mapped] = value


def _enforce_href(attrs_d: dict) -> dict:
    href = attrs_d.get("url", attrs_d.get("uri", attrs_d.get("href", None)))
    if href:
        attrs_d.pop("url", None)
        attrs_d.pop("uri", None)
        attrs_d["href"] = href
    return attrs_d


class _Walker:
    """feedparser's _FeedParserMixin + _StrictFeedParser state machine, for the handlers
    ported below (names as in feedparser; see the module docstring)."""

    def __init__(self) -> None:
        self.feeddata: dict = {}
        self.entries: list[dict] = []
        self.depth_maps: list[dict] = []  # property_depth_map, one per entry
        self.version = ""
        self.namespacemap: dict = {}
        self.namespaces_in_use: dict = {}
        self.bound: dict = {}  # prefix -> URI, to refuse rebinding (scoping is not reproduced)
        self.infeed = self.inentry = self.incontent = self.intextinput = 0
        self.inimage = self.inauthor = self.incontributor = self.inpublisher = self.insource = 0
        self.sourcedata: dict = {}
        self.contentparams: dict = {}
        self._summaryKey = None
        self.elementstack: list = []
        self.title_depth = -1
        self.depth = 0
        self.hasContent = 0
        self.guidislink = 0
        self.baseuri = ""  # no Content-Location is passed to feedparser (see parse.parse_feed)
        self.basestack: list[str] = []
        self._dispatch_cache: dict = {}
        self.psc_chapters_flag = False

    # --- driving: lxml tree -> SAX-like events ----------------------------------------

    def walk(self, el, budget: int, parent_ns: dict | None) -> None:
        """SAX order: prefix mappings, start, text, children (each followed by its tail),
        end. ``parent_ns`` is None when no element below the root declares a namespace."""
        if budget <= 0:
            raise _Unsupported("too deep")
        ns = None
        if parent_ns is not None:
            ns = el.nsmap
            for prefix, uri in ns.items():
                if parent_ns.get(prefix) != uri:
                    self.track_namespace(prefix, uri)
        kind = self.start(el)
        if el.text:
            self.handle_data(el.text)
        for child in el:
            if isinstance(child.tag, str):
                self.walk(child, budget - 1, ns)
            elif not isinstance(child, (etree._Comment, etree._ProcessingInstruction)):
                raise _Unsupported("entity reference node")
            if child.tail:
                self.handle_data(child.tail)
        self.end(el, kind)

    def track_namespace(self, prefix, uri: str) -> None:
        """_FeedParserMixin.track_namespace, for declarations whose effect does not depend on
        the order or repetition of declarations (lxml gives an element's new bindings, not
        every xmlns attribute in document order): a prefix bound to one URI only, and each
        name in namespaces_in_use (the table that names elements of unknown namespaces)
        bound to one URI only."""
        if not uri:
            return
        self._dispatch_cache.clear()
        loweruri = uri.lower()
        if loweruri in _REFUSED_NS:
            raise _Unsupported(f"namespace {uri}")
        if prefix is not None and self.bound.setdefault(prefix, uri) != uri:
            raise _Unsupported(f"prefix {prefix} rebound")
        if not self.version:  # the first of these declarations (in document order) decides
            if prefix is None and loweruri == _RSS090_NS:
                self.version = "rss090"
            elif loweruri == _RSS10_NS:
                self.version = "rss10"
            elif loweruri == _ATOM_NS.lower():
                self.version = "atom10"
        if _USERLAND in loweruri:  # "match any backend.userland.com namespace"
            uri = loweruri = _USERLAND_NS
        known = loweruri in _MATCH_NS
        key = _MATCH_NS[loweruri] if known else (prefix or "")
        if key:
            old = self.namespaces_in_use.get(key)
            if old is not None and old != uri and not (known and old.lower() in _MATCH_NS):
                raise _Unsupported(f"{key} names two namespaces")
            if not known and any(v == uri and k != key for k, v in self.namespaces_in_use.items()):
                raise _Unsupported(f"two prefixes for {uri}")
        if known:
            self.namespacemap[prefix] = key
        self.namespaces_in_use[key] = uri

    def _tag(self, qname: str) -> str:
        """_StrictFeedParser.startElementNS's element name ("dc:creator", "title", ...)."""
        if qname[0] != "{":
            return qname.lower()
        namespace, localname = qname[1:].split("}", 1)
        lowernamespace = namespace.lower()
        if _USERLAND in lowernamespace:
            namespace = lowernamespace = _USERLAND_NS
        prefix = _MATCH_NS.get(lowernamespace)
        localname = localname.lower()
        if prefix:
            return prefix.lower() + ":" + localname
        if prefix is None:  # an unknown namespace: the first prefix declared for it
            for name, value in self.namespaces_in_use.items():
                if name and value == namespace:
                    return name + ":" + localname
        return localname

    def _attrs(self, el) -> list[tuple[str, str]]:
        """startElementNS's attribute dict, then _normalize_attributes. Its two passes, in
        document order: each name under feedparser's canonical prefix of its namespace
        ("rdf:about"; no prefix for an unknown namespace), then each under its qualified name
        as expat reports it with namespace_prefixes on ("r:about", the document's prefix);
        a later key of equal lower-cased name overwrites an earlier one."""
        items = el.attrib.items()
        attrs_d: dict = {}
        for key, value in items:
            if key[0] == "{":
                namespace, local = key[1:].split("}", 1)
                prefix = _MATCH_NS.get(namespace.lower(), "")
                key = prefix + ":" + local if prefix else local
            attrs_d[key.lower()] = value
        for key, value in items:
            if key[0] == "{":
                namespace, local = key[1:].split("}", 1)
                key = self._attribute_prefix(namespace) + ":" + local
            attrs_d[key.lower()] = value
        return [(k, v.lower() if k in ("rel", "type") else v) for k, v in attrs_d.items()]

    def _attribute_prefix(self, uri: str) -> str:
        """The prefix a namespaced attribute was written with (lxml keeps only the URI): the
        one prefix the document binds to that URI; two of them are refused as ambiguous."""
        if uri == _XML_NS:
            return "xml"
        prefixes = [prefix for prefix, bound in self.bound.items() if bound == uri]
        if len(prefixes) != 1:
            raise _Unsupported(f"attribute of {uri}, bound to {len(prefixes)} prefixes")
        return prefixes[0]

    def start(self, el) -> int:
        """unknown_starttag; _SERIALIZED when the element was written into XHTML content,
        _SKIPPED for feedparser's TypePad rule (see below), else _HANDLED."""
        self.depth += 1
        attrs = self._attrs(el) if el.attrib else []
        attrs_d = dict(attrs)
        # xml:base (or a bare "base" attribute, as feedparser reads it): only made absolute
        # once a base is known, and kept on the stack for the element's scope.
        attr_base = attrs_d.get("xml:base", attrs_d.get("base"))
        if attr_base or self.baseuri:
            self.baseuri = _next_base(self.baseuri, attr_base or self.baseuri)
        self.basestack.append(self.baseuri)
        tag, prefix, suffix, start, _ = self._dispatch(el.tag)
        if self.incontent:
            kind = self.contentparams.get("type")
            if kind != _XHTML_TYPE:
                if not kind or kind.endswith("xml"):
                    raise _Unsupported("markup inside XML content")
                # "typepad does this 10/2007": a <div> inside escaped or plain text content
                # (Blogger's Atom 0.3 <info mode="xml" type="text/html">) is skipped, its text
                # kept; any other element makes feedparser re-type the content as XHTML ("it
                # declared itself as escaped markup, but it isn't really") and serialize it.
                if tag in ("xhtml:div", "div"):
                    return _SKIPPED
                self.contentparams["type"] = _XHTML_TYPE
            local = tag.split(":", 1)[-1]
            # feedparser still calls the end handler of a serialized element (e.g. _end_title,
            # _end_source for HTML5 <source>); SVG and MathML switch its serializer's mode.
            if local in ("svg", "math") or "_end_" + prefix + suffix in _FP_HANDLERS:
                raise _Unsupported(f"{tag} inside XHTML content")
            self.handle_data(f"<{local}{_strattrs(attrs)}>", escape=False)
            return _SERIALIZED
        if not prefix and tag not in ("title", "link", "description", "name"):
            self.intextinput = 0
        if not prefix and tag not in ("title", "link", "description", "url", "href", "width", "height"):
            self.inimage = 0
        if start is not None:
            start(self, attrs_d)
            return _HANDLED
        unknown_tag = prefix + suffix
        if not attrs_d:
            self.push(unknown_tag, 1)
        else:
            _set(self._get_context(), unknown_tag, attrs_d)
        return _HANDLED

    def _dispatch(self, qname: str):
        """(feedparser's tag, mapped prefix + "_", suffix, start handler, end handler) for an
        lxml tag; cached until the next namespace declaration changes the mapping."""
        found = self._dispatch_cache.get(qname)
        if found is None:
            tag = self._tag(qname)
            prefix, suffix = tag.split(":", 1) if ":" in tag else ("", tag)
            prefix = self.namespacemap.get(prefix, prefix)
            if prefix:
                prefix += "_"
            handlers = []
            for name in ("_start_" + prefix + suffix, "_end_" + prefix + suffix):
                method = getattr(_Walker, name, None)
                if method is None and name in _FP_HANDLERS:
                    raise _Unsupported(name)
                handlers.append(method)
            if handlers[0] is None and prefix + suffix in _SPECIAL_KEYS:
                raise _Unsupported(prefix + suffix)
            found = self._dispatch_cache[qname] = (tag, prefix, suffix, handlers[0], handlers[1])
        return found

    def end(self, el, kind: int) -> None:
        """unknown_endtag."""
        if kind == _SERIALIZED:  # its end handler does not exist, and pop() finds another name
            self.handle_data(f"</{etree.QName(el).localname.lower()}>", escape=False)
        else:
            tag, prefix, suffix, _, end = self._dispatch(el.tag)
            if end is not None:
                end(self)
            else:
                self.pop(prefix + suffix)
            if self.incontent:
                content_type = self.contentparams.get("type", "xml")
                if kind == _SKIPPED and not content_type.endswith("xml"):
                    # feedparser returns here, before its scope bookkeeping: the div's base
                    # stays on the stack and the depth one higher for the rest of the document.
                    return
                if content_type != _XHTML_TYPE:
                    raise _Unsupported("markup inside a text construct")
                self.handle_data(f"</{tag.split(':')[-1]}>", escape=False)
        # feedparser restores the enclosing base only when that one is not empty.
        if self.basestack:
            self.basestack.pop()
            if self.basestack and self.basestack[-1]:
                self.baseuri = self.basestack[-1]
        self.depth -= 1

    def resolve_uri(self, uri: str) -> str:
        return _urljoin(self.baseuri or "", uri)

    def handle_data(self, text: str, escape: bool = True) -> None:
        if not self.elementstack:
            return
        if escape and self.contentparams.get("type") == _XHTML_TYPE:
            text = xml.sax.saxutils.escape(text)
        self.elementstack[-1][2].append(text)

    # --- the mixin's core ---------------------------------------------------------------

    def push(self, element: str, expecting_text) -> None:
        self.elementstack.append([element, expecting_text, []])

    def pop(self, element: str, strip_whitespace: bool = True):
        if not self.elementstack or self.elementstack[-1][0] != element:
            return None
        element, expecting_text, pieces = self.elementstack.pop()
        if self.version == "atom10" and self.contentparams.get("type", "text") == _XHTML_TYPE:
            pieces = _strip_div(pieces)
        output = "".join(pieces)
        if strip_whitespace:
            output = output.strip()
        if not expecting_text:
            return output
        if self.contentparams.get("base64", 0):
            raise _Unsupported("base64 content")
        # (a guid with isPermaLink="false" is not a URI and is not resolved)
        if element in _CAN_BE_RELATIVE_URI and output and (element != "id" or self.guidislink):
            output = self.resolve_uri(output)
        if (not self.version.startswith("atom") and self.contentparams.get("type") == "text/plain"
                and _looks_like_html(output)):
            self.contentparams["type"] = "text/html"
        self.contentparams.pop("mode", None)
        self.contentparams.pop("base64", None)
        if not output.isascii():  # both steps below leave ASCII text as it is
            try:  # feedparser's repair of UTF-8 read as ISO-8859-1 (its encoding is always utf-8)
                output = output.encode("iso-8859-1").decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                pass
            if _C1.search(output):  # _cp1252 maps only C1 controls (U+0080-U+009F)
                output = output.translate(_cp1252)
        if element in ("category", "tags", "itunes_keywords"):
            return output
        if element == "title" and -1 < self.title_depth <= self.depth:
            return output
        if self.inentry and not self.insource:
            entry = self.entries[-1]
            if element == "content":
                entry.setdefault("content", []).append(dict(self.contentparams, value=output))
            elif element == "link":
                if not self.inimage:
                    output = output.replace("&amp;", "&")
                    output = _QUERY_ENTITY.sub(r"&\g<1>", output)
                    entry["link"] = output
                    if output:
                        entry["links"][-1]["href"] = output
            else:
                if element == "description":
                    element = "summary"
                depth_map = self.depth_maps[-1]
                old_value_depth = depth_map.get(element)
                if old_value_depth is None or self.depth <= old_value_depth:
                    depth_map[element] = self.depth
                    _set(entry, element, output)
                if self.incontent:
                    _set(entry, element + "_detail", dict(self.contentparams, value=output))
        elif self.infeed or self.insource:
            context = self._get_context()
            if element == "description":
                element = "subtitle"
            _set(context, element, output)
            if element == "link":
                output = _QUERY_ENTITY.sub(r"&\g<1>", output)
                context[element] = output
                context["links"][-1]["href"] = output
            elif self.incontent:
                _set(context, element + "_detail", dict(self.contentparams, value=output))
        return output

    def push_content(self, tag: str, attrs_d: dict, default_content_type: str, expecting_text) -> None:
        self.incontent += 1
        kind = _map_content_type(attrs_d.get("type", default_content_type))
        # feedparser's _is_base64: Atom 0.3 mode="base64", and any type but text/*, */xml and
        # *+xml, is base64-decoded. (Its other modes, "escaped" and "xml", change nothing.)
        if attrs_d.get("mode") == "base64" or not (kind.startswith("text/") or kind.endswith(("+xml", "/xml"))):
            raise _Unsupported("base64 content")
        self.contentparams = {"type": kind, "language": None, "base": self.baseuri, "base64": 0}
        self.push(tag, expecting_text)

    def pop_content(self, tag: str):
        value = self.pop(tag)
        self.incontent -= 1
        self.contentparams.clear()
        return value

    def _get_context(self) -> dict:
        if self.insource:
            return self.sourcedata
        if self.inimage and "image" in self.feeddata:
            return self.feeddata["image"]
        if self.intextinput:
            return self.feeddata["textinput"]
        if self.inentry:
            return self.entries[-1]
        return self.feeddata

    def _save(self, key: str, value, overwrite: bool = False) -> None:
        context = self._get_context()
        if overwrite:
            _set(context, key, value)
        else:
            context.setdefault(key, value)

    def _save_author(self, key: str, value, prefix: str = "author") -> None:
        context = self._get_context()
        context.setdefault(prefix + "_detail", {})
        context[prefix + "_detail"][key] = value
        self._sync_author_detail()
        context.setdefault("authors", [{}])
        context["authors"][-1][key] = value

    def _save_contributor(self, key: str, value) -> None:
        context = self._get_context()
        context.setdefault("contributors", [{}])
        context["contributors"][-1][key] = value

    def _sync_author_detail(self, key: str = "author") -> None:
        context = self._get_context()
        detail = context.get(f"{key}s", [{}])[-1]
        if detail:
            name, email = detail.get("name"), detail.get("email")
            if name and email:
                context[key] = f"{name} ({email})"
            elif name:
                context[key] = name
            elif email:
                context[key] = email
            return
        author, email = context.get(key), None
        if not author:
            return
        emailmatch = _EMAIL.search(author)
        if emailmatch:
            email = emailmatch.group(0)
            author = author.replace(email, "").replace("()", "").replace("<>", "")
            author = author.replace("&lt;&gt;", "").strip()
            if author and author[0] == "(":
                author = author[1:]
            if author and author[-1] == ")":
                author = author[:-1]
            author = author.strip()
        if author or email:
            context.setdefault(f"{key}_detail", detail)
        if author:
            detail["name"] = author
        if email:
            detail["email"] = email

    def _add_tag(self, term, scheme, label) -> None:
        context = self._get_context()
        tags = context.setdefault("tags", [])
        if not term and not scheme and not label:
            return
        value = {"term": term, "scheme": scheme, "label": label}
        if value not in tags:
            tags.append(value)

    # --- handlers (feedparser/namespaces/_base.py, dc.py, itunes.py, mediarss.py) -----------

    def _start_rss(self, attrs_d: dict) -> None:
        if not self.version or not self.version.startswith("rss"):
            attr_version = attrs_d.get("version", "")
            self.version = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}.get(
                attr_version) or ("rss20" if attr_version.startswith("2.") else "rss")

    def _start_channel(self, attrs_d: dict) -> None:
        self.infeed = 1
        self._cdf_common(attrs_d)

    @staticmethod
    def _cdf_common(attrs_d: dict) -> None:
        if "lastmod" in attrs_d or "href" in attrs_d:
            raise _Unsupported("CDF attributes")

    def _start_feed(self, attrs_d: dict) -> None:
        self.infeed = 1
        if not self.version:
            self.version = {"0.1": "atom01", "0.2": "atom02", "0.3": "atom03"}.get(
                attrs_d.get("version"), "atom")

    def _end_channel(self) -> None:
        self.infeed = 0

    _end_feed = _end_channel

    def _start_image(self, attrs_d: dict) -> None:
        context = self._get_context()
        if not self.inentry:
            context.setdefault("image", {})
        self.inimage = 1
        self.title_depth = -1
        self.push("image", 0)

    def _end_image(self) -> None:
        self.pop("image")
        self.inimage = 0

    def _start_textinput(self, attrs_d: dict) -> None:
        context = self._get_context()
        context.setdefault("textinput", {})
        self.intextinput = 1
        self.title_depth = -1
        self.push("textinput", 0)

    _start_textInput = _start_textinput

    def _end_textinput(self) -> None:
        self.pop("textinput")
        self.intextinput = 0

    _end_textInput = _end_textinput

    def _start_author(self, attrs_d: dict) -> None:
        self.inauthor = 1
        self.push("author", 1)
        context = self._get_context()
        context.setdefault("authors", [])
        context["authors"].append({})

    _start_managingeditor = _start_dc_author = _start_dc_creator = _start_itunes_author = _start_author

    def _end_author(self) -> None:
        self.pop("author")
        self.inauthor = 0
        self._sync_author_detail()

    _end_managingeditor = _end_dc_author = _end_dc_creator = _end_itunes_author = _end_author

    def _start_contributor(self, attrs_d: dict) -> None:
        self.incontributor = 1
        context = self._get_context()
        context.setdefault("contributors", [])
        context["contributors"].append({})
        self.push("contributor", 0)

    def _end_contributor(self) -> None:
        self.pop("contributor")
        self.incontributor = 0

    def _start_dc_contributor(self, attrs_d: dict) -> None:
        self.incontributor = 1
        context = self._get_context()
        context.setdefault("contributors", [])
        context["contributors"].append({})
        self.push("name", 0)

    def _end_dc_contributor(self) -> None:
        self._end_name()
        self.incontributor = 0

    def _start_name(self, attrs_d: dict) -> None:
        self.push("name", 0)

    _start_itunes_name = _start_name

    def _end_name(self) -> None:
        value = self.pop("name")
        if self.inpublisher:
            self._save_author("name", value, "publisher")
        elif self.inauthor:
            self._save_author("name", value)
        elif self.incontributor:
            self._save_contributor("name", value)
        elif self.intextinput:
            self._get_context()["name"] = value

    _end_itunes_name = _end_name

    def _start_width(self, attrs_d: dict) -> None:
        self.push("width", 0)

    def _end_width(self) -> None:
        self._end_dimension("width")

    def _start_height(self, attrs_d: dict) -> None:
        self.push("height", 0)

    def _end_height(self) -> None:
        self._end_dimension("height")

    def _end_dimension(self, key: str) -> None:
        value = self.pop(key)
        if value is None:
            raise _Unsupported("unbalanced dimension")
        try:
            number = int(value)
        except ValueError:
            number = 0
        if self.inimage:
            self._get_context()[key] = number

    def _start_url(self, attrs_d: dict) -> None:
        self.push("href", 1)

    _start_homepage = _start_uri = _start_url

    def _end_url(self) -> None:
        value = self.pop("href")
        if self.inauthor:
            self._save_author("href", value)
        elif self.incontributor:
            self._save_contributor("href", value)

    _end_homepage = _end_uri = _end_url

    def _start_email(self, attrs_d: dict) -> None:
        self.push("email", 0)

    _start_itunes_email = _start_email

    def _end_email(self) -> None:
        value = self.pop("email")
        if self.inpublisher:
            self._save_author("email", value, "publisher")
        elif self.inauthor:
            self._save_author("email", value)
        elif self.incontributor:
            self._save_contributor("email", value)

    _end_itunes_email = _end_email

    def _start_subtitle(self, attrs_d: dict) -> None:
        self.push_content("subtitle", attrs_d, "text/plain", 1)

    _start_tagline = _start_itunes_subtitle = _start_subtitle

    def _end_subtitle(self) -> None:
        self.pop_content("subtitle")

    _end_tagline = _end_itunes_subtitle = _end_subtitle

    def _start_rights(self, attrs_d: dict) -> None:
        self.push_content("rights", attrs_d, "text/plain", 1)

    _start_copyright = _start_dc_rights = _start_rights

    def _end_rights(self) -> None:
        self.pop_content("rights")

    _end_copyright = _end_dc_rights = _end_rights

    def _start_item(self, attrs_d: dict) -> None:
        self.entries.append({})
        self.depth_maps.append({})
        self.push("item", 0)
        self.inentry = 1
        self.guidislink = 0
        self.title_depth = -1
        # RSS 1.0: the item's URI is its id (read through the prefix the document bound to
        # RDF's canonical one, as feedparser's _get_attribute does).
        about = attrs_d.get(self.namespacemap.get("rdf", "rdf") + ":about")
        if about:
            _set(self._get_context(), "id", about)
        self._cdf_common(attrs_d)

    _start_entry = _start_item

    def _end_item(self) -> None:
        self.pop("item")
        self.inentry = 0
        self.hasContent = 0

    _end_entry = _end_item

    def _start_language(self, attrs_d: dict) -> None:
        self.push("language", 1)

    _start_dc_language = _start_language

    def _end_language(self) -> None:
        self.pop("language")  # feedparser keeps it as self.lang: no field read here uses it

    _end_dc_language = _end_language

    def _start_webmaster(self, attrs_d: dict) -> None:
        self.push("publisher", 1)

    _start_dc_publisher = _start_webmaster

    def _end_webmaster(self) -> None:
        self.pop("publisher")
        self._sync_author_detail("publisher")

    _end_dc_publisher = _end_webmaster

    def _start_published(self, attrs_d: dict) -> None:
        self.push("published", 1)

    _start_issued = _start_pubdate = _start_dcterms_issued = _start_published

    def _end_published(self) -> None:
        value = self.pop("published")
        self._save("published_parsed", _parse_date(value), overwrite=True)

    _end_issued = _end_pubdate = _end_dcterms_issued = _end_published

    def _start_updated(self, attrs_d: dict) -> None:
        self.push("updated", 1)

    _start_modified = _start_lastbuilddate = _start_dc_date = _start_dcterms_modified = _start_updated

    def _end_updated(self) -> None:
        value = self.pop("updated")
        self._save("updated_parsed", _parse_date(value), overwrite=True)

    _end_modified = _end_lastbuilddate = _end_dc_date = _end_dcterms_modified = _end_updated

    def _start_created(self, attrs_d: dict) -> None:
        self.push("created", 1)

    _start_dcterms_created = _start_created

    def _end_created(self) -> None:
        value = self.pop("created")
        self._save("created_parsed", _parse_date(value), overwrite=True)

    _end_dcterms_created = _end_created

    def _start_expirationdate(self, attrs_d: dict) -> None:
        self.push("expired", 1)

    def _end_expirationdate(self) -> None:
        self._save("expired_parsed", _parse_date(self.pop("expired")), overwrite=True)

    def _start_category(self, attrs_d: dict) -> None:
        term = attrs_d.get("term")
        scheme = attrs_d.get("scheme", attrs_d.get("domain"))
        label = attrs_d.get("label")
        self._add_tag(term, scheme, label)
        self.push("category", 1)

    _start_keywords = _start_dc_subject = _start_category

    def _start_media_category(self, attrs_d: dict) -> None:
        attrs_d.setdefault("scheme", "http://search.yahoo.com/mrss/category_schema")
        self._start_category(attrs_d)

    def _start_itunes_category(self, attrs_d: dict) -> None:
        self._add_tag(attrs_d.get("text"), "http://www.itunes.com/", None)
        self.push("category", 1)

    def _end_category(self) -> None:
        value = self.pop("category")
        if not value:
            return
        tags = self._get_context()["tags"]
        if value and len(tags) and not tags[-1]["term"]:
            tags[-1]["term"] = value
        else:
            self._add_tag(value, None, None)

    _end_keywords = _end_dc_subject = _end_media_category = _end_itunes_category = _end_category

    def _end_itunes_keywords(self) -> None:
        self._end_term_list("itunes_keywords", "http://www.itunes.com/")

    def _end_media_keywords(self) -> None:
        self._end_term_list("media_keywords", None)

    def _start_tags(self, attrs_d: dict) -> None:
        self.push("tags", 1)

    def _end_tags(self) -> None:
        self._end_term_list("tags", None, keep_empty=True)

    def _end_term_list(self, element: str, scheme, keep_empty: bool = False) -> None:
        value = self.pop(element)
        if value is None:  # feedparser: AttributeError on None.split -> a no-op pop
            return
        for term in value.split(","):
            if keep_empty or term.strip():
                self._add_tag(term.strip(), scheme, None)

    def _start_cloud(self, attrs_d: dict) -> None:
        self._get_context()["cloud"] = attrs_d

    def _start_link(self, attrs_d: dict) -> None:
        attrs_d.setdefault("rel", "alternate")
        if attrs_d["rel"] == "self":
            attrs_d.setdefault("type", "application/atom+xml")
        else:
            attrs_d.setdefault("type", "text/html")
        context = self._get_context()
        attrs_d = _enforce_href(attrs_d)
        if "href" in attrs_d:
            attrs_d["href"] = self.resolve_uri(attrs_d["href"])
        expecting_text = self.infeed or self.inentry or self.insource
        context.setdefault("links", [])
        if not (self.inentry and self.inimage):
            context["links"].append(dict(attrs_d))
        if "href" in attrs_d:
            if attrs_d.get("rel") == "alternate" and _map_content_type(attrs_d.get("type")) in _HTML_TYPES:
                context["link"] = attrs_d["href"]
        else:
            self.push("link", expecting_text)

    def _end_link(self) -> None:
        self.pop("link")

    def _start_guid(self, attrs_d: dict) -> None:
        self.guidislink = attrs_d.get("ispermalink", "true") == "true"
        self.push("id", 1)

    _start_id = _start_guid

    def _end_guid(self) -> None:
        value = self.pop("id")
        self._save("guidislink", self.guidislink and "link" not in self._get_context())
        if self.guidislink:
            self._save("link", value)

    _end_id = _end_guid

    def _start_title(self, attrs_d: dict) -> None:
        self.push_content("title", attrs_d, "text/plain", self.infeed or self.inentry or self.insource)

    _start_dc_title = _start_media_title = _start_title

    def _end_title(self) -> None:
        value = self.pop_content("title")
        if not value:
            return
        self.title_depth = self.depth

    _end_dc_title = _end_title

    def _end_media_title(self) -> None:
        title_depth = self.title_depth
        self._end_title()
        self.title_depth = title_depth

    def _start_description(self, attrs_d: dict) -> None:
        context = self._get_context()
        if "summary" in context and not self.hasContent:
            self._summaryKey = "content"
            self._start_content(attrs_d)
        else:
            self.push_content("description", attrs_d, "text/html", self.infeed or self.inentry or self.insource)

    _start_dc_description = _start_media_description = _start_description

    def _start_abstract(self, attrs_d: dict) -> None:
        self.push_content("description", attrs_d, "text/plain", self.infeed or self.inentry or self.insource)

    def _end_description(self) -> None:
        if self._summaryKey == "content":
            self._end_content()
        else:
            self.pop_content("description")
        self._summaryKey = None

    _end_abstract = _end_dc_description = _end_media_description = _end_description

    def _start_info(self, attrs_d: dict) -> None:
        self.push_content("info", attrs_d, "text/plain", 1)

    _start_feedburner_browserfriendly = _start_info

    def _end_info(self) -> None:
        self.pop_content("info")

    _end_feedburner_browserfriendly = _end_info

    def _start_generator(self, attrs_d: dict) -> None:
        if attrs_d:
            attrs_d = _enforce_href(attrs_d)
            if "href" in attrs_d:
                attrs_d["href"] = self.resolve_uri(attrs_d["href"])
        self._get_context()["generator_detail"] = dict(attrs_d)
        self.push("generator", 1)

    def _end_generator(self) -> None:
        value = self.pop("generator")
        context = self._get_context()
        if "generator_detail" in context:
            context["generator_detail"]["name"] = value

    def _start_summary(self, attrs_d: dict) -> None:
        context = self._get_context()
        if "summary" in context and not self.hasContent:
            self._summaryKey = "content"
            self._start_content(attrs_d)
        else:
            self._summaryKey = "summary"
            self.push_content(self._summaryKey, attrs_d, "text/plain", 1)

    _start_itunes_summary = _start_summary

    def _end_summary(self) -> None:
        if self._summaryKey == "content":
            self._end_content()
        else:
            self.pop_content(self._summaryKey or "summary")
        self._summaryKey = None

    _end_itunes_summary = _end_summary

    def _start_enclosure(self, attrs_d: dict) -> None:
        attrs_d = _enforce_href(attrs_d)
        context = self._get_context()
        attrs_d["rel"] = "enclosure"
        context.setdefault("links", []).append(dict(attrs_d))

    def _start_source(self, attrs_d: dict) -> None:
        if "url" in attrs_d:
            self.sourcedata["href"] = attrs_d["url"]
        self.push("source", 1)
        self.insource = 1
        self.title_depth = -1

    def _end_source(self) -> None:
        self.insource = 0
        value = self.pop("source")
        if value:
            self.sourcedata["title"] = value
        self._get_context()["source"] = dict(self.sourcedata)
        self.sourcedata = {}

    def _start_content(self, attrs_d: dict) -> None:
        self.hasContent = 1
        self.push_content("content", attrs_d, "text/plain", 1)
        src = attrs_d.get("src")
        if src:
            self.contentparams["src"] = src
        self.push("content", 1)

    def _start_content_encoded(self, attrs_d: dict) -> None:
        self.hasContent = 1
        self.push_content("content", attrs_d, "text/html", 1)

    _start_fullitem = _start_content_encoded

    def _end_content(self) -> None:
        kind = self.contentparams.get("type")
        if kind is None:
            raise _Unsupported("content parameters lost")
        copy_to_summary = _map_content_type(kind) in ({"text/plain"} | _HTML_TYPES)
        value = self.pop_content("content")
        if copy_to_summary:
            self._save("summary", value)

    _end_content_encoded = _end_fullitem = _end_content

    def _start_newlocation(self, attrs_d: dict) -> None:
        self.push("newlocation", 1)

    def _end_newlocation(self) -> None:
        if self.pop("newlocation") is None:
            raise _Unsupported("unbalanced newlocation")

    def _start_itunes_owner(self, attrs_d: dict) -> None:
        self.inpublisher = 1
        self.push("publisher", 0)

    def _end_itunes_owner(self) -> None:
        self.pop("publisher")
        self.inpublisher = 0
        self._sync_author_detail("publisher")

    def _start_itunes_image(self, attrs_d: dict) -> None:
        self.push("itunes_image", 0)
        if attrs_d.get("href"):
            self._get_context()["image"] = {"href": attrs_d.get("href")}
        elif attrs_d.get("url"):
            self._get_context()["image"] = {"href": attrs_d.get("url")}

    _start_itunes_link = _start_itunes_image

    def _end_itunes_block(self) -> None:
        self._end_flag("itunes_block")

    def _end_itunes_explicit(self) -> None:
        self._end_flag("itunes_explicit")

    def _end_flag(self, element: str) -> None:
        # The value itself is read by no field here; the pop (and its store) is what matters.
        self.pop(element, False)

    # psc (Podlove simple chapters) and GeoRSS simple geometries: feedparser keeps them in
    # keys no field reads ("psc_chapters", "where"); ported for their effect on the element
    # stack and for the inputs on which feedparser raises (refused here).
    def _start_psc_chapters(self, attrs_d: dict) -> None:
        context = self._get_context()
        if "psc_chapters" not in context:
            self.psc_chapters_flag = True
            context["psc_chapters"] = {"chapters": []}

    def _end_psc_chapters(self) -> None:
        self.psc_chapters_flag = False

    def _start_psc_chapter(self, attrs_d: dict) -> None:
        if self.psc_chapters_flag:
            context = self._get_context()
            if attrs_d.get("start") is None or "psc_chapters" not in context:
                raise _Unsupported("psc:chapter feedparser fails on")  # TypeError / KeyError there
            context["psc_chapters"]["chapters"].append(attrs_d)

    def _start_georssgeom(self, attrs_d: dict) -> None:
        self.push("geometry", 0)
        self._get_context()["where"] = {}

    _start_georss_point = _start_georss_line = _start_georss_polygon = _start_georss_box = _start_georssgeom

    def _end_georss_point(self) -> None:
        self._end_georss(_parse_georss_point)

    def _end_georss_line(self) -> None:
        self._end_georss(_parse_georss_line)

    def _end_georss_polygon(self) -> None:
        self._end_georss(_parse_georss_polygon)

    def _end_georss_box(self) -> None:
        self._end_georss(_parse_georss_box)

    def _end_georss(self, parse_geometry) -> None:
        value = self.pop("geometry")
        if value is None:
            raise _Unsupported("georss geometry feedparser fails on")  # AttributeError there
        geometry = parse_geometry(value)
        if geometry:
            context = self._get_context()
            if "where" not in context:
                raise _Unsupported("georss geometry in a changed context")  # KeyError there
            context["where"].update(geometry)

    def _start_media_group(self, attrs_d: dict) -> None:
        pass  # feedparser: "don't do anything, but don't break the enclosed tags either"

    def _start_media_content(self, attrs_d: dict) -> None:
        context = self._get_context()
        context.setdefault("media_content", [])
        context["media_content"].append(attrs_d)

    def _start_media_thumbnail(self, attrs_d: dict) -> None:
        context = self._get_context()
        context.setdefault("media_thumbnail", [])
        self.push("url", 1)
        context["media_thumbnail"].append(attrs_d)

    def _end_media_thumbnail(self) -> None:
        url = self.pop("url")
        context = self._get_context()
        if url is not None and url.strip() and "url" not in context["media_thumbnail"][-1]:
            context["media_thumbnail"][-1]["url"] = url

    # media:credit / rating / restriction / license / player: feedparser keeps their values
    # in keys no field reads; only their push/pop (stack and stores) is reproduced.
    def _start_media_credit(self, attrs_d: dict) -> None:
        self.push("credit", 1)

    def _end_media_credit(self) -> None:
        self.pop("credit")

    def _start_media_rating(self, attrs_d: dict) -> None:
        self.push("rating", 1)

    def _end_media_rating(self) -> None:
        self.pop("rating")

    def _start_media_restriction(self, attrs_d: dict) -> None:
        self.push("restriction", 1)

    def _end_media_restriction(self) -> None:
        self.pop("restriction")

    def _start_media_license(self, attrs_d: dict) -> None:
        self.push("license", 1)

    def _end_media_license(self) -> None:
        self.pop("license")

    def _start_media_player(self, attrs_d: dict) -> None:
        self.push("media_player", 0)

    def _end_media_player(self) -> None:
        self.pop("media_player")


_EMAIL = re.compile(r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))"""
                    r"""([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?""")


def _strip_div(pieces: list[str]) -> list[str]:
    """feedparser's pop() for Atom xhtml: drop an enclosing <div> around all the content."""
    pieces = list(pieces)
    while pieces and len(pieces) > 1 and not pieces[-1].strip():
        del pieces[-1]
    while pieces and len(pieces) > 1 and not pieces[0].strip():
        del pieces[0]
    if pieces and (pieces[0] == "<div>" or pieces[0].startswith("<div ")) and pieces[-1] == "</div>":
        depth = 0
        for piece in pieces[:-1]:
            if piece.startswith("</"):
                depth -= 1
                if depth == 0:
                    break
            elif piece.startswith("<") and not piece.endswith("/>"):
                depth += 1
        else:
            pieces = pieces[1:-1]
    return pieces
