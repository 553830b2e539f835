"""The HTTP server: ``output_dir`` as static files, plus ``/healthz`` and ``/metrics``.

Owns: answering HTTP requests for the published files (media types, validators, 304s,
content-coding negotiation, caching headers), the health decision (``health``), the
Prometheus exposition of ``Store.stats`` (``StatsCollector``), and running uvicorn —
blocking in the main thread (``serve``) or beside the scheduler (``ServerThread``).
Must not: write anything (no file, no database row of its own), publish, poll, or serve a
byte from outside ``output_dir``. It reads the files the publisher swapped in atomically,
so a request sees the old file or the new one, never half of one.

Decisions:

- **Paths.** The request path is percent-decoded once, from the raw bytes (so ``%2e%2e``
  and ``%5c`` are judged after decoding, never passed through), then refused unless every
  segment is a plain name: no ``..``, no empty segment, no NUL, no backslash, nothing
  starting with a dot (the publisher's temp files are ``.name.xxx.tmp``; a dot folder is
  never ours to serve). The real path (symlinks resolved) must still lie inside the real
  ``output_dir``, and only a regular file is served: no directory listings. Every refusal
  is the same 404, so a probe learns nothing about what exists.
- **Strong ETags from the bytes.** A hash of the content is the same on every replica, after
  a restore, after ``publish --force`` rewrote identical bytes and across restarts, so a
  feed reader gets its 304 whenever the feed did not change — mtime-based validators
  (nginx's) change whenever the file is touched. They are strong because the body is
  exactly those bytes. A gzip or brotli body is a different representation (RFC 9110
  §8.8.3), so it gets its own tag (``"<hash>-gz"`` / ``"<hash>-br"``); compression is
  deterministic (gzip mtime 0, fixed levels), so the same file always yields the same
  compressed bytes under the same tag. Range requests are not supported (feeds are small);
  ``If-None-Match`` uses the weak comparison RFC 9110 §13.1.2 prescribes, and
  ``If-Modified-Since`` is consulted only without ``If-None-Match`` (§13.2.2).
- **max-age tied to the polling interval.** A feed cannot change more often than the most
  frequently polled source is fetched, so caching it for that long costs a reader no news,
  and caching it longer would. The value is capped at one hour so that a daily-polled
  setup still shows a manual ``publish`` within the hour. Archive pages (``archive/``) hold
  full, settled pages: one day. ``/healthz`` and ``/metrics`` are ``no-store``.
- **What /healthz means.** "The poller is alive": the last poll cycle (recorded by the
  pipeline in the database, whichever process ran it) ended within twice the shortest
  polling interval plus a minute — or, when it did not, no configured source is overdue by
  that much. The second half exists because a live daemon legitimately polls later than
  the interval: every WordPress feed says ``sy:updatePeriod hourly``, a ``<ttl>`` or
  Cache-Control may ask for more, a failing source backs off, and each source's next poll
  time is stored; a dead poller leaves those times in the past. It says nothing about
  individual sources failing — that is what ``aggregator_source_up`` in ``/metrics`` is
  for — so one dead upstream does not get the whole service restarted by an orchestrator.
- Compressed variants are kept in memory, keyed by (path, ETag, coding), in a bounded LRU:
  a new version of a file has a new ETag, so nothing is ever stale, and old entries age out.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import logging
import os
import re
import signal
import socket
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Self
from urllib.parse import unquote_to_bytes

from .config import Config, format_interval
from .errors import AggregatorError
from .models import Stats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("aggregator.serve")
access_log = logging.getLogger("aggregator.access")

MAX_CACHE_AGE = 3600  # seconds: the cap on a feed's max-age
ARCHIVE_MAX_AGE = 86400  # seconds: archive pages are full and settled
HEALTH_GRACE = 60  # seconds added to twice the shortest interval
MIN_COMPRESS = 256  # bytes: below this, compression saves less than its headers cost
VARIANT_CACHE_BYTES = 32 * 1024 * 1024  # compressed variants kept in memory
DIGEST_CACHE_ENTRIES = 8192  # file identity -> content hash
GZIP_LEVEL = 6
BROTLI_QUALITY = 6  # ~gzip -6 speed, ~12% smaller; quality 11 is 50-100x slower for ~10% less
GRACEFUL_SHUTDOWN = 3  # seconds uvicorn waits for requests in flight when stopping

_UTF8 = "; charset=utf-8"
#: compound suffixes first: ``.rss.xml`` before ``.xml``
_SUFFIX_TYPES: tuple[tuple[str, str], ...] = (
    (".rss.xml", "application/rss+xml" + _UTF8),
    (".atom.xml", "application/atom+xml" + _UTF8),
)
#: a fixed table, not the host's mime.types: the same file gets the same type everywhere
_EXT_TYPES: dict[str, str] = {
    ".json": "application/feed+json" + _UTF8,
    ".opml": "text/x-opml" + _UTF8,
    ".html": "text/html" + _UTF8,
    ".htm": "text/html" + _UTF8,
    ".md": "text/markdown" + _UTF8,
    ".xml": "application/xml" + _UTF8,
    ".xsl": "application/xslt+xml" + _UTF8,
    ".txt": "text/plain" + _UTF8,
    ".css": "text/css" + _UTF8,
    ".js": "text/javascript" + _UTF8,
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon",
    ".woff2": "font/woff2",
    ".pdf": "application/pdf",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}
FALLBACK_TYPE = "application/octet-stream"


def content_type(name: str) -> str:
    """The Content-Type a file is served with, from its name alone."""
    lower = name.lower()
    for suffix, kind in _SUFFIX_TYPES:
        if lower.endswith(suffix):
            return kind
    return _EXT_TYPES.get(os.path.splitext(lower)[1], FALLBACK_TYPE)


def compressible(kind: str) -> bool:
    """Text formats shrink; images, fonts and archives are compressed already."""
    mime = kind.split(";", 1)[0].strip()
    return mime.startswith("text/") or mime.endswith(("+xml", "+json", "/xml", "/json"))


# -- pure decisions ----------------------------------------------------------------------


def shortest_interval(config: Config) -> int:
    """Seconds between polls of the most frequently polled source."""
    return min((s.interval for s in config.sources), default=config.default_interval)


def max_age(config: Config, rel_path: str) -> int:
    """``Cache-Control: max-age`` of a published file (see the module docstring)."""
    if rel_path.startswith("archive/"):
        return ARCHIVE_MAX_AGE
    return min(shortest_interval(config), MAX_CACHE_AGE)


def health_window(config: Config) -> int:
    """How old the last poll cycle may be, and how long a source may be overdue, in
    seconds, before /healthz says 503."""
    return 2 * shortest_interval(config) + HEALTH_GRACE


def health(stats: Stats | None, config: Config, now: datetime) -> tuple[bool, str]:
    """(healthy, one-line reason); ``stats`` None: no readable database. Unhealthy: no
    cycle yet, or the last one ended more than ``health_window`` ago while a configured,
    not-gone source has been due for longer than that (see the module docstring)."""
    if stats is None:
        return False, "no database yet (no poll has run)"
    if stats.last_cycle_at is None:
        return False, "no poll cycle yet"
    window = health_window(config)
    age = (now - stats.last_cycle_at).total_seconds()
    if age <= window:
        return True, "ok"
    # When each configured source is due: its stored next poll time; one without (never
    # polled, or its URL just changed) was due at the latest when the last cycle ran.
    known = {s.name: s for s in stats.sources}
    due = []
    for source in config.sources:
        state = known.get(source.name)
        if state is None or state.state != "gone":
            due.append(((state.next_poll if state else None) or stats.last_cycle_at, source.name))
    if not due or (now - min(due)[0]).total_seconds() <= window:
        return True, "ok"  # every source waits for a later poll time (hints, backoff): nothing missed
    due_at, name = min(due)
    return False, (f"last poll cycle ended {format_interval(int(age))} ago ({stats.last_cycle_at:%Y-%m-%dT%H:%M:%SZ}),"
                   f" more than {format_interval(window)}; {name} due since {due_at:%Y-%m-%dT%H:%M:%SZ}")


def parse_accept_encoding(value: str | None) -> dict[str, float]:
    """``Accept-Encoding`` -> {coding: q}. Elements with an unreadable q are ignored;
    ``x-gzip`` is gzip (RFC 9110 §8.4.1.3)."""
    prefs: dict[str, float] = {}
    for element in (value or "").split(","):
        token, *params = element.split(";")
        token = token.strip().lower()
        if not token:
            continue
        q = 1.0
        for param in params:
            key, _, raw = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(raw.strip())
                except ValueError:
                    q = -1.0
        if not 0.0 <= q <= 1.0:
            continue
        token = "gzip" if token == "x-gzip" else token
        prefs.setdefault(token, q)
    return prefs


def choose_coding(accept_encoding: str | None, can_compress: bool) -> str:
    """"br", "gzip" or "identity" (RFC 9110 §12.5.3). The highest q wins; on a tie brotli
    beats gzip beats identity. Identity not listed (nor ``*``) is acceptable but the last
    choice: ``br;q=0.8, gzip;q=0.8`` asks for compression. When nothing acceptable is
    available (``identity;q=0`` with no usable coding) the body goes uncompressed anyway,
    as the RFC advises."""
    if not can_compress or accept_encoding is None:
        return "identity"
    prefs = parse_accept_encoding(accept_encoding)

    def q(coding: str) -> float:
        if coding in prefs:
            return prefs[coding]
        if "*" in prefs:
            return prefs["*"]
        return 0.001 if coding == "identity" else 0.0  # the smallest q above 0

    ranked = [(q("br"), 2, "br"), (q("gzip"), 1, "gzip"), (q("identity"), 0, "identity")]
    best = max((r for r in ranked if r[0] > 0), default=None)
    return best[2] if best else "identity"


_ETAG = re.compile(r'\s*(?:W/)?"([^"]*)"\s*(?:,|$)')


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/`` prefixes are ignored on both sides; a list
    and ``*`` are understood; a malformed header matches nothing."""
    value = if_none_match.strip()
    if value == "*":
        return True
    opaque = etag.removeprefix("W/").strip('"')
    pos = 0
    while pos < len(value):
        m = _ETAG.match(value, pos)
        if m is None:
            return False
        if m.group(1) == opaque:
            return True
        pos = m.end()
    return False


def not_modified_since(if_modified_since: str, mtime: float) -> bool:
    """True when the file is no newer than the HTTP-date (whole seconds); an unreadable
    date is ignored (§13.1.3)."""
    try:
        since = email.utils.parsedate_to_datetime(if_modified_since)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return int(mtime) <= since.timestamp()


def safe_relative_path(raw_path: str) -> str | None:
    """A request path (already percent-decoded) -> a relative path under the output folder,
    or None when it must be refused. ``/`` is ``index.html``."""
    if not raw_path.startswith("/") or "\x00" in raw_path or "\\" in raw_path:
        return None
    if raw_path == "/":
        return "index.html"
    segments = raw_path[1:].split("/")
    if any(not s or s.startswith(".") for s in segments):
        return None  # "..", ".", "//", a trailing "/" (a directory), dotfiles and dot folders
    return "/".join(segments)


# -- the static files --------------------------------------------------------------------


class _LRU:
    """A thread-safe LRU bounded by the total size of its values (bytes) or their count."""

    def __init__(self, max_bytes: int | None = None, max_entries: int | None = None):
        self._data: OrderedDict[object, object] = OrderedDict()
        self._bytes = 0
        self._max_bytes, self._max_entries = max_bytes, max_entries
        self._lock = threading.Lock()

    @staticmethod
    def _size(value: object) -> int:
        return len(value) if isinstance(value, bytes) else 0

    def get(self, key: object) -> object | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: object, value: object) -> None:
        size = self._size(value)
        if self._max_bytes is not None and size > self._max_bytes:
            return
        with self._lock:
            old = self._data.pop(key, None)
            self._bytes -= self._size(old)
            self._data[key] = value
            self._bytes += size
            while ((self._max_bytes is not None and self._bytes > self._max_bytes)
                   or (self._max_entries is not None and len(self._data) > self._max_entries)):
                _, dropped = self._data.popitem(last=False)
                self._bytes -= self._size(dropped)


def _compress(data: bytes, coding: str) -> bytes:
    if coding == "br":
        import brotli

        return brotli.compress(data, mode=brotli.MODE_TEXT, quality=BROTLI_QUALITY)
    return gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)


_SUFFIX = {"br": "-br", "gzip": "-gz", "identity": ""}


class StaticFiles:
    """GET/HEAD of the files under ``root`` (see the module docstring for the rules)."""

    def __init__(self, config: Config, *, variant_cache_bytes: int = VARIANT_CACHE_BYTES):
        self.config = config
        self.root = Path(config.output_dir)
        self._digests = _LRU(max_entries=DIGEST_CACHE_ENTRIES)
        self.variants = _LRU(max_bytes=variant_cache_bytes)

    def _open(self, rel_path: str) -> tuple[int, os.stat_result, str] | None:
        root = os.path.realpath(self.root)
        real = os.path.realpath(os.path.join(root, rel_path))
        inside = os.path.relpath(real, root)
        if inside == os.curdir or any(part.startswith(".") for part in inside.split(os.sep)):
            return None  # the folder itself, a symlink out of it ("../x"), or onto a dotfile
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st, real

    def endpoint(self, request) -> object:
        """Starlette endpoint (sync: Starlette runs it on its thread pool, file I/O and all)."""
        from starlette.responses import Response

        scope = request.scope
        raw = scope.get("raw_path")
        try:  # decoded once, from the bytes on the wire: "%2e%2e" is judged as ".."
            decoded = unquote_to_bytes(raw).decode("utf-8") if raw else scope["path"]
        except UnicodeDecodeError:
            decoded = None
        rel_path = safe_relative_path(decoded) if decoded is not None else None
        opened = self._open(rel_path) if rel_path is not None else None
        if opened is None:
            return Response(b"not found\n", status_code=404, headers={
                "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff"})
        fd, st, real = opened
        try:
            return self._respond(request, rel_path, fd, st, real)
        finally:
            os.close(fd)

    def _respond(self, request, rel_path: str, fd: int, st: os.stat_result, real: str):
        from starlette.responses import Response

        kind = content_type(rel_path)
        can_compress = compressible(kind) and st.st_size >= MIN_COMPRESS
        # a list-valued field may come on several lines (RFC 9110 §5.3): read them as one
        accept = ", ".join(request.headers.getlist("accept-encoding")) if "accept-encoding" in request.headers else None
        coding = choose_coding(accept, can_compress)
        data: bytes | None = None
        identity = (real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._digests.get(identity)
        if digest is None:
            data = _read_all(fd, st.st_size)
            digest = hashlib.sha256(data).hexdigest()[:32]
            self._digests.put(identity, digest)
        etag = f'"{digest}{_SUFFIX[coding]}"'
        headers = {
            "ETag": etag,
            "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
            "Cache-Control": f"public, max-age={max_age(self.config, rel_path)}",
            "X-Content-Type-Options": "nosniff",
        }
        if compressible(kind):
            headers["Vary"] = "Accept-Encoding"
        inm = ", ".join(request.headers.getlist("if-none-match")) if "if-none-match" in request.headers else None
        ims = request.headers.get("if-modified-since")
        if (etag_matches(inm, etag) if inm is not None else ims is not None and not_modified_since(ims, st.st_mtime)):
            return Response(status_code=304, headers=headers)
        if coding == "identity":
            body = data if data is not None else _read_all(fd, st.st_size)
        else:
            key = (real, digest, coding)
            body = self.variants.get(key)  # type: ignore[assignment]
            if body is None:
                body = _compress(data if data is not None else _read_all(fd, st.st_size), coding)
                self.variants.put(key, body)
            headers["Content-Encoding"] = coding
        headers["Content-Type"] = kind
        # HEAD: the body is handed over all the same, so Content-Length is the GET's;
        # uvicorn sends the headers only.
        return Response(body, status_code=200, headers=headers)


def _read_all(fd: int, size: int) -> bytes:
    chunks, total = [], 0
    while True:
        chunk = os.pread(fd, max(size - total, 65536), total)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)


# -- /healthz and /metrics ---------------------------------------------------------------


def read_stats(config: Config, now: datetime) -> tuple[Stats | None, str | None]:
    """(stats, None), or (None, why) when the database is missing or unreadable. A missing
    database is not created: the server never writes."""
    from .store import Store

    if not config.db_path.is_file():
        return None, "no database yet (no poll has run)"
    try:
        with Store(config.db_path, readonly=True) as store:
            return store.stats(now), None
    except AggregatorError as e:
        return None, f"database unreadable: {e}"


class StatsCollector:
    """A prometheus_client collector over one ``Stats`` snapshot per scrape (no global
    registry: each app has its own). Sources configured but never polled are listed too,
    as ``new`` with zero counts, so a dashboard sees every source from the start."""

    def __init__(self, config: Config, load: Callable[[], tuple[Stats | None, str | None]]):
        self.config = config
        self.load = load

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats, _ = self.load()
        up_db = GaugeMetricFamily("aggregator_database_up", "1 when the database could be read for this scrape.")
        up_db.add_metric([], 1 if stats is not None else 0)
        yield up_db
        polls = CounterMetricFamily("aggregator_polls", "Polls of the source (fetch attempts).", labels=["source"])
        errors = CounterMetricFamily("aggregator_poll_errors", "Failed polls of the source.", labels=["source"])
        up = GaugeMetricFamily("aggregator_source_up", "1 when the source's last poll succeeded (or it is new), 0 when"
                               " failing or gone.", labels=["source"])
        success = GaugeMetricFamily("aggregator_source_last_success_timestamp_seconds",
                                    "Unix time of the source's last successful poll.", labels=["source"])
        by_name = {s.name: s for s in (stats.sources if stats else ())}
        for name in sorted(set(by_name) | {s.name for s in self.config.sources}):
            s = by_name.get(name)
            polls.add_metric([name], s.polls_total if s else 0)
            errors.add_metric([name], s.errors_total if s else 0)
            up.add_metric([name], 1 if s is None or s.state in ("ok", "new") else 0)
            if s is not None and s.last_success is not None:
                success.add_metric([name], s.last_success.timestamp())
        yield from (polls, errors, up, success)
        if stats is None:
            return
        articles = GaugeMetricFamily("aggregator_articles", "Stored articles per category.", labels=["category"])
        for category, n in stats.articles_by_category:
            articles.add_metric([category], n)
        yield articles
        gauges = [
            ("aggregator_articles_total", "Stored articles.", stats.articles_total),
            ("aggregator_articles_last_24h", "Articles first seen in the last 24 hours.", stats.articles_last_24h),
            ("aggregator_last_cycle_timestamp_seconds", "Unix time the last poll cycle ended.",
             stats.last_cycle_at.timestamp() if stats.last_cycle_at else None),
            ("aggregator_last_cycle_duration_seconds", "Seconds the last poll cycle took.", stats.last_cycle_seconds),
            ("aggregator_publish_duration_seconds", "Seconds the last publish took.", stats.last_publish_seconds),
            ("aggregator_published_pages", "Output pages published and current.", stats.published_pages),
            ("aggregator_publish_errors", "Output pages whose last publish was refused by validation.",
             len(stats.publish_errors)),
        ]
        for name, help_text, value in gauges:
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)


def _utcnow() -> datetime:
    return datetime.now(UTC)


_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
#: what ``generate_latest`` writes (newer prometheus_client's CONTENT_TYPE_LATEST names 1.0.0)
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_app(config: Config, *, clock: Callable[[], datetime] | None = None):
    """The ASGI app (Starlette) serving ``config.output_dir``, ``/healthz`` and ``/metrics``.
    ``clock`` returns an aware UTC datetime (tests pin it)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import Response
    from starlette.routing import Route

    now = clock or _utcnow
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(config, lambda: read_stats(config, now())))

    def healthz(request) -> Response:
        at = now()
        stats, why = read_stats(config, at)
        ok, reason = health(stats, config, at)
        return Response(f"{reason if ok else why or reason}\n", status_code=200 if ok else 503,
                        headers={**_NO_STORE, "Content-Type": "text/plain; charset=utf-8"})

    def metrics(request) -> Response:
        return Response(generate_latest(registry), headers={**_NO_STORE, "Content-Type": METRICS_TYPE})

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),  # HEAD comes with GET
            Route("/metrics", metrics, methods=["GET"]),
            Route("/{path:path}", StaticFiles(config).endpoint, methods=["GET"]),
        ],
        middleware=[Middleware(AccessLog)],
    )


class AccessLog:
    """One INFO line per request through ``logging`` (uvicorn's own access log, with its
    colour formatter, is off): client, request line, status, bytes, user agent."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status, sent = 0, 0

        async def watch(message):
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and scope["method"] != "HEAD":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            client = scope.get("client") or ("-", 0)
            target = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            agent = next((v for k, v in scope.get("headers", ()) if k == b"user-agent"), b"").decode("latin-1")
            access_log.info('%s "%s %s HTTP/%s" %d %d %s', client[0], scope["method"], target,
                            scope.get("http_version", "1.1"), status or 500, sent, json.dumps(agent))


# -- running it --------------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one). Bound here rather than by uvicorn so that a
    busy port is an ``AggregatorError`` with a clear message, not a ``sys.exit(3)``.

    The socket is created with the protocol getaddrinfo names (IPPROTO_TCP), not 0:
    asyncio turns Nagle off on accepted connections only when ``sock.proto`` says TCP, and
    with Nagle on, every response whose headers and body are written separately waits
    ~40 ms for a delayed ACK (measured: 22 requests/s instead of hundreds)."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise AggregatorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def _server(config: Config, clock: Callable[[], datetime] | None):
    import uvicorn

    settings = uvicorn.Config(
        build_app(config, clock=clock),
        http="h11", loop="asyncio", ws="none", lifespan="off", interface="asgi3",
        log_config=None,  # keep the process's logging as the CLI set it up
        access_log=False,  # AccessLog writes the access lines
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return uvicorn.Server(settings)


def serve(config: Config, host: str | None = None, port: int | None = None, *,
          clock: Callable[[], datetime] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then return normally (``aggregator serve``).

    uvicorn (0.29+) installs its own handlers in the main thread, shuts down gracefully,
    restores the previous handlers and then *re-raises* the signal to them: with Python's
    defaults that is a KeyboardInterrupt, or death by SIGTERM (status 143). The handlers
    put in place here only ask the server to stop, so the re-raised signal is absorbed and
    the caller exits 0."""
    host = host or config.serve_host
    sock = _bind(host, config.serve_port if port is None else port)
    server = _server(config, clock)
    log.info("serving %s on http://%s:%d/ (stop with Ctrl-C or SIGTERM)", config.output_dir,
             f"[{host}]" if ":" in host else host, sock.getsockname()[1])

    def stop(signum, frame) -> None:
        server.should_exit = True

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    log.info("server stopped")


class ServerThread:
    """The server on a thread of its own, for ``aggregator run --serve`` (the main thread
    runs the scheduler and owns the signals: uvicorn installs none outside the main thread).

        server = ServerThread(config, port=0).start()   # returns once listening
        server.port                                     # the real port
        server.stop()                                   # graceful, a few seconds at most
    """

    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.config = config
        self.host = host or config.serve_host
        self.port = config.serve_port if port is None else port
        self._clock = clock
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = server = _server(self.config, self._clock)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aggregator-serve",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise AggregatorError(f"the HTTP server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # a client holding a response open: stop waiting for it
            self._server.force_exit = True
            self._thread.join(2.0)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
