"""RSSHub routes and instances: ``rsshub://`` URLs, the instance failover order, and a cheap
"is this answer a feed at all?" check.

A source written as ``rsshub://cls/depth/1000?limit=5`` names an RSSHub *route*, not a server;
the configured instances (``rsshub_instances``, public ones like https://rsshub.app or a
self-hosted one behind a path prefix) are tried in turn until one answers with a feed.

Owns:
  * the ``rsshub://`` syntax: ``is_route``, ``check_route`` and ``check_query`` (why a route
    or a source's ``rsshub = {...}`` table is unusable) and ``route_url`` (route + instance +
    parameters -> the URL to fetch);
  * instance health as data (``InstanceHealth``) and the pure rules over it: ``backoff``,
    ``order_instances``, ``after_success``, ``after_failure``; ``InstancePool`` shares those
    rules between the fetch threads of one cycle;
  * which errors are the instance's fault (``is_instance_failure``) and ``broken_feed``, the
    check that a 200 answer is a feed before trusting that instance with it.
Must not: fetch, touch the database, or read the clock (``now`` is always an argument; the
store loads and saves ``InstanceHealth`` records, fetch.py does the HTTP).

Query parameters are RSSHub's documented common parameters (docs.rsshub.app, "Parameters";
their meaning is implemented in RSSHub's lib/middleware/parameter.ts). Anything else in a
route's query is refused: an access ``key``/``code`` does not belong in a source URL that is
logged and shown, and a typo (``fliter=``) would otherwise be silently ignored by RSSHub.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, unquote, urlencode

if TYPE_CHECKING:  # lxml is imported by the check itself: config loading must stay light
    from lxml import etree

SCHEME = "rsshub://"

QUERY_KEYS: frozenset[str] = frozenset({
    "limit", "filter", "filter_title", "filter_description", "filter_author", "filter_time",
    "filterout", "filterout_title", "filterout_description", "filterout_author",
    "filter_case_sensitive", "mode", "sorted", "opencc", "brief",
})

# RSSHub reads these with Number.parseInt; a value it cannot read is an error there
# (``brief``: "Invalid parameter brief") or silently ignored (``limit``), so refuse it here.
_POSITIVE_INT = re.compile(r"[1-9][0-9]*")
# parameter.ts: ``brief`` must match /[1-9]\d{2,}/ -- at least 100 characters.
_BRIEF_MIN = 100
# Characters kept as they are in a route's path: RFC 3986 pchar plus "/" and "%" (a route
# may already be percent-encoded; quoting it again would turn %E4 into %25E4).
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")

# Backoff: the first failure demotes an instance for a minute, and each further consecutive
# failure doubles that. The cap is 6 hours because backoff only reorders instances (a sick one
# is still tried, last, before a source fails), so a long backoff buys nothing except keeping
# a recovered instance at the back of the queue; 6 h is a few poll cycles at the usual
# 30-120 min intervals, and public instances that come back usually stay up for days.
_BACKOFF_BASE = timedelta(minutes=1)
_BACKOFF_CAP = timedelta(hours=6)


def is_route(url: str) -> bool:
    """Whether ``url`` is an RSSHub route (``rsshub://...``; the scheme is case-insensitive,
    as URL schemes are, RFC 3986 §3.1)."""
    return url[: len(SCHEME)].lower() == SCHEME


def check_route(url: str) -> str | None:
    """Why an ``rsshub://`` URL cannot be used, or None when it can.

    The route is appended to an instance URL that may carry a path prefix, so anything that
    could climb out of it (``..``), name another server, or be read differently by another
    HTTP stack (spaces, backslashes) is refused instead of being "fixed"."""
    if not is_route(url):
        return f"not an RSSHub route: it must start with {SCHEME}"
    rest = url[len(SCHEME):]
    if "#" in rest:
        return "an RSSHub route has no #fragment (RSSHub never sees it); remove it"
    if _WHITESPACE_OR_CONTROL.search(rest):
        return "an RSSHub route must not contain spaces or control characters (write a space as %20)"
    if "\\" in rest:
        return "an RSSHub route must not contain backslashes"
    path, _, query = rest.partition("?")
    path = path.strip("/")  # rsshub:///cls and a trailing slash are harmless spellings
    if not path:
        return "empty RSSHub route: write it like rsshub://github/issue/DIYgod/RSSHub"
    host_reason = _names_a_server(path)
    if host_reason:
        return host_reason
    segments = path.split("/")
    if any(unquote(s) in (".", "..") for s in segments):
        return "an RSSHub route must not contain '.' or '..' segments"
    if any(not s for s in segments):
        return "an RSSHub route must not contain empty segments ('//')"
    return _check_route_query(query)


def _names_a_server(path: str) -> str | None:
    """A route pasted with its server (``rsshub://https://rsshub.app/cls``,
    ``rsshub://rsshub.app/cls``): the instance comes from the configuration, not the route.
    Route namespaces are RSSHub folder names, which have no ':' and are not host names; a
    dotted first segment is only taken for a host when it starts with www. or names an
    RSSHub server, so a namespace with a dot in it is not refused."""
    first = path.split("/", 1)[0].lower()
    if "://" in path or ":" in first:
        return "an RSSHub route names no scheme or server: write rsshub://namespace/path, the instance is configured"
    if "." in first and (first.startswith("www.") or "rsshub" in first):
        return (f"an RSSHub route names no server ({first!r}): write rsshub://namespace/path "
                "and list the server in rsshub_instances")
    return None


def _check_route_query(query: str) -> str | None:
    if not query:
        return None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError as e:
        return f"malformed query in RSSHub route: {e}"
    seen: set[str] = set()
    for key, value in pairs:
        if key in seen:
            return f"query parameter {key!r} is repeated in the RSSHub route"
        seen.add(key)
        reason = _check_param(key, value)
        if reason:
            return reason
    return None


def check_query(params: Mapping) -> str | None:
    """Why a source's ``rsshub = {limit = 20, ...}`` table cannot be used, or None.

    Values are TOML scalars: str, int or bool (bool is sent as ``true``/``false``, the
    spelling RSSHub compares with). ``limit`` must be a positive integer, not a string."""
    if not isinstance(params, Mapping):
        return f"rsshub must be a table of RSSHub parameters, not {type(params).__name__}"
    for key, value in params.items():
        if not isinstance(key, str):
            return f"RSSHub parameter names are strings, not {key!r}"
        if isinstance(value, float) or not isinstance(value, str | int):  # bool is an int
            return f"RSSHub parameter {key!r} must be a string, integer or boolean, not {type(value).__name__}"
        if key == "limit" and (isinstance(value, bool) or not isinstance(value, int)):
            return f"RSSHub parameter 'limit' must be a positive integer, not {value!r}"
        reason = _check_param(key, _param_text(value))
        if reason:
            return reason
    return None


def _check_param(key: str, value: str) -> str | None:
    """One parameter as RSSHub will read it (a string), from a route or a settings table."""
    if key not in QUERY_KEYS:
        return f"unknown RSSHub parameter {key!r} (known: {', '.join(sorted(QUERY_KEYS))})"
    if key == "limit" and not _POSITIVE_INT.fullmatch(value):
        return f"RSSHub parameter 'limit' must be a positive integer, not {value!r}"
    if key == "filter_time" and not _POSITIVE_INT.fullmatch(value):
        return f"RSSHub parameter 'filter_time' is a number of seconds, not {value!r}"
    if key == "brief" and not (_POSITIVE_INT.fullmatch(value) and int(value) >= _BRIEF_MIN):
        return f"RSSHub parameter 'brief' is a number of characters of at least {_BRIEF_MIN}, not {value!r}"
    if key == "mode" and value.lower() != "fulltext":
        return f"RSSHub parameter 'mode' can only be 'fulltext', not {value!r}"
    return None


def _param_text(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def route_url(instance: str, url: str, params: Mapping | Sequence[tuple[str, object]] = ()) -> str:
    """The URL to fetch ``url`` (an ``rsshub://`` route) from ``instance``.

    ``params`` (a source's ``rsshub`` table, as a dict or as pairs) override the same key in
    the route's own query. Order is deterministic -- the route's keys where they were, then
    the new keys sorted -- so the same source always yields the same URL (and the same
    conditional-GET validators stay attached to it). Values are percent-encoded with
    ``quote`` (``%20``, never ``+``): RSSHub reads ``filter`` as a regular expression, where
    a literal ``+`` matters, and CJK keywords become UTF-8 percent-escapes.

    Raises ValueError for a route or parameters that ``check_route``/``check_query`` refuse:
    config validation rejects those first, so reaching here with one is a bug."""
    reason = check_route(url) or check_query(dict(params))
    if reason:
        raise ValueError(reason)
    path, _, query = url[len(SCHEME):].partition("?")
    merged = dict(parse_qsl(query, keep_blank_values=True))
    overrides = {key: _param_text(value) for key, value in dict(params).items()}
    for key in merged:
        if key in overrides:
            merged[key] = overrides.pop(key)
    merged.update(sorted(overrides.items()))
    target = instance.rstrip("/") + "/" + quote(path.strip("/"), safe=_PATH_SAFE)
    if merged:
        target += "?" + urlencode(list(merged.items()), quote_via=quote)
    return target


@dataclass(frozen=True)
class InstanceHealth:
    """What we know about one RSSHub instance. ``failures`` counts *consecutive* failures
    (a success resets it); ``last_failure``/``last_error`` are kept after a success as
    history for ``list-sources``-style displays; ``next_try`` is when it stops backing off."""

    url: str
    last_success: datetime | None = None
    last_failure: datetime | None = None
    failures: int = 0
    last_error: str | None = None
    next_try: datetime | None = None


def backoff(failures: int) -> timedelta:
    """How long an instance with ``failures`` consecutive failures is demoted: 1 min, 2, 4,
    ... capped at 6 h (see ``_BACKOFF_CAP`` for why). No failures, no backoff."""
    if failures <= 0:
        return timedelta(0)
    if failures > 20:  # 2**19 min is far past the cap; avoids building huge numbers
        return _BACKOFF_CAP
    return min(_BACKOFF_BASE * 2 ** (failures - 1), _BACKOFF_CAP)


def order_instances(instances: Sequence[str], health: Mapping[str, InstanceHealth], now: datetime) -> list[str]:
    """The order to try ``instances`` in for one fetch.

    1. every instance that may be asked now -- healthy (no record, or no consecutive
       failures) or sick with its backoff over -- in configuration order: the operator's
       order is their preference (their own instance first, public ones after), and a
       sick instance whose backoff has run out takes its place again, so it is really
       retried (one probe per backoff period), not left behind the healthy ones for ever;
    2. sick ones still backing off, earliest ``next_try`` first, as a last resort.
    Every instance appears: backoff demotes, it never drops, so a source only fails after
    every instance has been tried. Within a cycle, a failure pushes ``next_try`` ahead
    (``InstancePool.record``), so a probe that fails costs one request, not one per source.
    Duplicates keep their first place."""
    unique = list(dict.fromkeys(instances))
    position = {url: i for i, url in enumerate(unique)}
    ready, waiting = [], []
    for url in unique:
        h = health.get(url)
        if h is None or h.failures <= 0 or h.next_try is None or h.next_try <= now:
            ready.append(url)
        else:
            waiting.append(url)
    waiting.sort(key=lambda url: (health[url].next_try, position[url]))
    return ready + waiting


def after_success(h: InstanceHealth | None, url: str, now: datetime) -> InstanceHealth:
    """The record after ``url`` answered with a feed at ``now``."""
    base = h if h is not None else InstanceHealth(url)
    return replace(base, last_success=now, failures=0, next_try=None)


def after_failure(h: InstanceHealth | None, url: str, error: str, now: datetime) -> InstanceHealth:
    """The record after ``url`` failed at ``now`` with ``error`` (one line, for display)."""
    base = h if h is not None else InstanceHealth(url)
    failures = base.failures + 1
    return replace(base, last_failure=now, failures=failures, last_error=error, next_try=now + backoff(failures))


class InstancePool:
    """Instance health shared by the fetch threads of one cycle.

    When one source finds an instance down, the sources fetched after it in the same cycle
    try that instance last instead of each waiting for its timeout first. A lock guards the
    records; ``order`` returns a snapshot, so a thread walks its list without holding it."""

    def __init__(self, instances: Sequence[str], health: Mapping[str, InstanceHealth]):
        self._instances = tuple(dict.fromkeys(instances))
        self._health: dict[str, InstanceHealth] = dict(health)
        self._changed: dict[str, None] = {}  # insertion-ordered set of urls
        self._lock = threading.Lock()

    def order(self, now: datetime) -> list[str]:
        with self._lock:
            return order_instances(self._instances, self._health, now)

    def record(self, url: str, now: datetime, error: str | None = None) -> None:
        """Record one attempt: ``error`` None for a success, else the failure's message."""
        with self._lock:
            old = self._health.get(url)
            new = after_success(old, url, now) if error is None else after_failure(old, url, error, now)
            self._health[url] = new
            self._changed[url] = None

    def changed(self) -> list[InstanceHealth]:
        """Every record changed since ``__init__`` (configured instances in configuration
        order, then any other url sorted), for the store to write once per cycle."""
        with self._lock:
            position = {url: i for i, url in enumerate(self._instances)}
            urls = sorted(self._changed, key=lambda url: (position.get(url, len(position)), url))
            return [self._health[url] for url in urls]


# HTTP statuses that say the instance, not the route, is the problem: 5xx (RSSHub answers
# 503 when a route's upstream fails on that instance), 429 (its rate limit), 403 and 401
# (its access key / ACCESS_KEY setting refuses us). A 404 means this instance lacks the route
# (an older RSSHub): the caller tries the next instance, but the instance is not sick.
_INSTANCE_STATUSES = frozenset({401, 403, 429})
# aggregator.errors kinds that are the instance's fault: it timed out, could not be reached,
# sent too much, sits at an address we refuse (it will never work from here), redirected in
# circles, or answered 200 with something that is not a feed.
_INSTANCE_KINDS = frozenset({"timeout", "network", "too-large", "blocked", "redirects", "not-a-feed", "parse",
                             "http-5xx"})


def is_instance_failure(status: int | None, kind: str) -> bool:
    """Whether an error counts against the instance's health (see the tables above). The
    status decides when there is one; otherwise the error kind does."""
    if status is not None:
        return status >= 500 or status in _INSTANCE_STATUSES
    return kind in _INSTANCE_KINDS


# Document elements of a feed (local names, lower-cased): RSS, RSS 1.0 (rdf:RDF), Atom,
# plus what aggregator.parse also reads: a bare <channel> (RSS 0.9 variants) and an Atom
# <entry> document (RFC 4287 §4.1.2 allows one as a top-level element).
_FEED_ROOTS = frozenset({"rss", "rdf", "feed", "channel", "entry"})
_JSON_VERSION = re.compile(r"https?://(?:www\.)?jsonfeed\.org/version/[^?#]*", re.I)
_BOM_UTF8 = b"\xef\xbb\xbf"
_CHARSET = re.compile(r";\s*charset\s*=\s*\"?([^\";\s]+)", re.I)
_ERROR_TEXT = 120


def _xml_parser(encoding: str | None = None) -> etree.XMLParser:
    from lxml import etree

    # No entity expansion, no DTD loading, no network, libxml2's default size/depth limits:
    # a hostile instance cannot make this check expensive.
    # (Not collect_ids=False: with lxml 6 it makes libxml2 try to fetch an external DTD --
    # refused by no_network, so every <!DOCTYPE rss PUBLIC ...> RSS 0.91 feed would fail.)
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           encoding=encoding)


def broken_feed(body: bytes, content_type: str | None) -> str | None:
    """Why an instance's 200 answer is not a feed (so the next instance should be tried),
    or None if it is one. Never raises.

    A well-formedness parse with lxml (about 4 ms per MB of real feeds, against about 250 for
    feedparser), then the document element; JSON is accepted only as a JSON Feed (RSSHub's
    ``format=json``). A DTD internal subset is refused: RSSHub never writes one, and it is the
    vehicle of entity-expansion attacks that aggregator.parse refuses too."""
    from lxml import etree

    try:
        return _broken_feed(body, content_type)
    except (etree.LxmlError, ValueError, LookupError, RecursionError) as e:  # belt and braces: never fail the fetch
        return f"unreadable answer ({type(e).__name__}: {_short(str(e))})"


def _broken_feed(body: bytes, content_type: str | None) -> str | None:
    from lxml import etree

    start = body[len(_BOM_UTF8):] if body.startswith(_BOM_UTF8) else body
    stripped = start.lstrip()
    if not stripped:
        return "empty answer"
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if stripped[:1] in (b"{", b"[") or (media_type.endswith("json") and stripped[:1] != b"<"):
        return _broken_json(body)
    try:
        root = etree.fromstring(body, _xml_parser())
    except (etree.XMLSyntaxError, ValueError) as first:
        # An ASCII body reads the same in every charset RSSHub could be serving: no second try.
        root = None if body.isascii() else _reparse_decoded(body, content_type)
        if root is None:
            looks_html = media_type in ("text/html", "application/xhtml+xml") or stripped[:15].lower().startswith(
                (b"<!doctype html", b"<html"))
            what = "an HTML page" if looks_html else "not well-formed XML"
            return f"{what} ({_short(str(first))})"
    name = etree.QName(root).localname.lower() if isinstance(root.tag, str) else ""
    if name not in _FEED_ROOTS:
        what = "an HTML page" if name == "html" else f"XML whose root is <{name}>"
        return f"{what}, not RSS, RDF or Atom"
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None and (any(True for _ in dtd.iterentities()) or any(True for _ in dtd.iterelements())):
        return "XML with a DTD internal subset (entity declarations are refused)"
    return None


def _reparse_decoded(body: bytes, content_type: str | None) -> etree._Element | None:
    """Second chance for a body whose bytes libxml2 could not decode (an encoding label it
    does not know, like tis-620, or the HTTP charset that RFC 7303 puts above the XML
    declaration): decode as aggregator.parse will, then check the text. Only malformed
    bodies pay for this."""
    from lxml import etree

    from aggregator.encoding import decode_feed_bytes  # its charset guesser is only needed here

    match = _CHARSET.search(content_type or "")
    text = decode_feed_bytes(body, match.group(1) if match else None).text
    try:
        return etree.fromstring(text.encode("utf-8", "surrogatepass"), _xml_parser("utf-8"))
    except (etree.XMLSyntaxError, ValueError):
        return None


def _broken_json(body: bytes) -> str | None:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as e:
        return f"not valid JSON ({_short(str(e))})"
    if not isinstance(doc, dict):
        return f"JSON {type(doc).__name__}, not a JSON Feed"
    version = doc.get("version")
    if not (isinstance(version, str) and _JSON_VERSION.fullmatch(version.strip())):
        return "JSON without a https://jsonfeed.org/version/... version, not a JSON Feed"
    if not isinstance(doc.get("items"), list):
        return "JSON Feed without an 'items' list"
    return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_TEXT else text[: _ERROR_TEXT - 1] + "…"
