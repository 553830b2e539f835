"""Static files: ``output_dir`` answered over HTTP, byte for byte.

Owns: turning a request path into a file under ``output_dir`` (``safe_relative_path`` and
the real-path check), every header a file response carries (media type, strong ETag,
Last-Modified, Cache-Control via ``max_age``, Vary), the conditional-request validators
(``etag_matches``, ``not_modified_since``), content-coding negotiation (``choose_coding``)
and the deterministic gzip/brotli variants kept in a bounded LRU.
Must not: write anything, read the clock, or serve a byte from outside ``output_dir``. The
rules themselves (paths, ETags, max-age) are explained in the ``aggregator.serve`` docstring.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import re
import stat
import threading
from collections import OrderedDict
from datetime import UTC
from pathlib import Path
from urllib.parse import unquote_to_bytes

from aggregator.config import Config
from aggregator.serve.status import shortest_interval

MAX_CACHE_AGE = 3600  # seconds: the cap on a feed's max-age
ARCHIVE_MAX_AGE = 86400  # seconds: archive pages are full and settled
MIN_COMPRESS = 256  # bytes: below this, compression saves less than its headers cost
VARIANT_CACHE_BYTES = 32 * 1024 * 1024  # compressed variants kept in memory
DIGEST_CACHE_ENTRIES = 8192  # file identity -> content hash
GZIP_LEVEL = 6
BROTLI_QUALITY = 6  # ~gzip -6 speed, ~12% smaller; quality 11 is 50-100x slower for ~10% less

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


def max_age(config: Config, rel_path: str) -> int:
    """``Cache-Control: max-age`` of a published file (see the ``aggregator.serve`` docstring)."""
    if rel_path.startswith("archive/"):
        return ARCHIVE_MAX_AGE
    return min(shortest_interval(config), MAX_CACHE_AGE)


# -- negotiation and validators ----------------------------------------------------------


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
    """GET/HEAD of the files under ``root`` (see the ``aggregator.serve`` docstring for the
    rules)."""

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
