"""The lean HTTP/1.1 path under ``fetch``: direct GETs over kept-alive connections.

Why it exists: a conditional GET answered 304 cost ~0.3 ms of CPU through httpx +
httpcore + h11 in one thread, and ~0.5 ms with eight fetch threads contending for the
GIL; a warm cycle over 10,000 sources is nothing but such requests. The standard
library's ``http.client`` does the same exchange in ~0.09 ms (docs/dev.md,
2026-11-26). So requests that go straight to the target (no proxy) are sent here;
proxied ones keep httpx's proxy support (``fetch.Fetcher``).

Owns: a pool of idle connections shared by the fetch threads (a connection is used by
one thread at a time: taken out under a lock, put back when its answer was read to the
end), the connect through ``netguard.vetted_addresses`` (every new connection resolves
and vets again, then connects to the vetted IP; TLS still checks the URL's host name),
the total deadline on every connect, send and receive (``netguard.clip``), and mapping
failures to httpx's exception classes, so ``fetch`` treats both paths alike.

Must not: follow redirects, decode content codings, know our error classes, send
anything but what ``fetch`` gives it (no cookies, no defaults), or keep a connection
whose answer was not read to its end.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from .netguard import AddressPolicy, Resolver, Unresolvable, clip, connect_vetted

__all__ = ["WirePool", "WireResponse"]

_Key = tuple[str, str, int]  # scheme, host, port


class WirePool:
    """Direct HTTP/1.1 GETs for many threads, reusing idle connections per origin.

    ``policy`` None allows every address (``allow_private_networks``); ``ssl_context`` is
    used for https (anything with ``wrap_socket``). Idle connections are kept per thread
    name, at most ``max_idle`` of them per name, each for at most ``idle_expiry``
    seconds: a cycle's "fetch_0".."fetch_7" find the connections the previous cycle's
    threads of the same names left, and no lock is shared by the threads (one shared
    pool lock was taken twice per request by eight threads: 5% of a warm cycle's GIL
    time went to queueing on it). A name shared by two live threads shares a pool,
    which is safe: a connection is taken out of it before use.
    """

    def __init__(
        self,
        policy: AddressPolicy | None,
        resolver: Resolver,
        ssl_context: Any,
        *,
        max_idle: int = 32,
        idle_expiry: float = 30.0,
    ):
        self._policy = policy
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry
        self._pools: dict[str, _Idle] = {}  # by thread name
        self._lock = threading.Lock()  # only to add a thread name

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()

    def _pool(self) -> _Idle:
        name = threading.current_thread().name
        pool = self._pools.get(name)  # a dict read is atomic; added once under the lock
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(name, _Idle(self._max_idle, self._idle_expiry))
        return pool

    def get(
        self, url: httpx.URL, headers: list[tuple[bytes, bytes]], *, connect_timeout: float, read_timeout: float
    ) -> WireResponse:
        """Send ``GET url`` with exactly ``headers`` (plus Host) and read the answer's head.

        Raises httpx.ConnectError/ConnectTimeout (no connection), WriteTimeout/WriteError,
        ReadTimeout/ReadError/RemoteProtocolError, or netguard.AddressBlocked.
        """
        scheme = url.scheme
        key = (scheme, url.raw_host.decode("ascii"), url.port or (443 if scheme == "https" else 80))
        target = url.raw_path.decode("ascii")
        host_header = url.netloc
        idle = self._pool()
        for attempt in (0, 1):
            conn = idle.take(key)
            reused = conn is not None
            if conn is None:
                conn = _Connection(self, key, connect_timeout, read_timeout)
            else:
                conn.set_timeouts(connect_timeout, read_timeout)
            phase = ["connect"]
            try:
                with _closing_on_error(conn.close, phase):
                    if conn.sock is None:
                        conn.connect()
                    phase[0] = "write"
                    conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
                    conn.putheader(b"Host", host_header)
                    for name, value in headers:
                        conn.putheader(name, value)
                    conn.endheaders()
                    phase[0] = "read"
                    response = conn.getresponse()
            except _Dropped as e:
                if reused and attempt == 0:
                    continue  # the server closed a kept connection meanwhile: once more, on a new one
                raise e.mapped from e.__cause__
            return WireResponse(idle, conn, response, url)
        raise AssertionError("unreachable")  # pragma: no cover


class _Idle:
    """One thread name's idle connections, newest last per origin."""

    def __init__(self, max_idle: int, expiry: float):
        self._max = max_idle
        self._expiry = expiry
        self._conns: dict[_Key, list[tuple[float, _Connection]]] = {}
        self._count = 0
        self._lock = threading.Lock()  # uncontended unless two live threads share a name
        self._closed = False  # the fetcher was closed: a connection given back is closed

    def take(self, key: _Key) -> _Connection | None:
        now = time.monotonic()
        stale: list[_Connection] = []
        found = None
        with self._lock:
            conns = self._conns.get(key)
            while conns:
                since, conn = conns.pop()
                self._count -= 1
                if now - since < self._expiry and conn.still_open():
                    found = conn
                    break
                stale.append(conn)
        for conn in stale:
            conn.close()
        return found

    def give_back(self, conn: _Connection) -> None:
        evicted = None
        with self._lock:
            if self._closed:
                evicted = conn
            else:
                self._conns.setdefault(conn.key, []).append((time.monotonic(), conn))
                self._count += 1
            if self._count > self._max:  # the longest idle goes
                _, key = min((conns[0][0], key) for key, conns in self._conns.items() if conns)
                evicted = self._conns[key].pop(0)[1]
                self._count -= 1
        if evicted is not None:
            evicted.close()

    def close(self) -> None:
        with self._lock:
            conns, self._conns, self._count, self._closed = self._conns, {}, 0, True
        for row in conns.values():
            for _, conn in row:
                conn.close()


class WireResponse:
    """An answer whose head has been read; read the body with :meth:`iter_raw`, then
    :meth:`close` (which keeps the connection when the body was read to its end)."""

    def __init__(self, pool: _Idle, conn: _Connection, response: http.client.HTTPResponse, url: httpx.URL):
        self._pool = pool
        self._conn: _Connection | None = conn
        self._response = response
        self.url = url
        self.status_code = response.status
        self.reason_phrase = response.reason
        # the bytes as sent: httpx.Headers decodes them as on the httpx path
        self.headers = httpx.Headers(response.headers.fields)

    def iter_raw(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """The body as sent (content codings not undone), chunked framing removed."""
        response = self._response
        try:
            with _closing_on_error(self._abandon, ["read"]):
                while True:
                    expected = None if response.chunked else response.length
                    data = response.read(chunk_size)
                    if not data:
                        if expected:  # http.client returns b"" for a cut body: h11 calls it an error
                            raise httpx.RemoteProtocolError(
                                f"peer closed connection without sending complete message body: {expected} bytes missing"
                            )
                        return
                    yield data
        except _Dropped as e:
            raise e.mapped from e.__cause__

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        response = self._response
        if response.isclosed() and not response.will_close and conn.sock is not None:
            self._pool.give_back(conn)
        else:
            response.close()
            conn.close()


class _Head:
    """An answer's header fields as sent (bytes), obs-folded lines unfolded (RFC 9112
    §5.2), names and values trimmed; lines that are not fields are ignored. Only what
    http.client's response asks of its ``headers`` (``get``, ``items``)."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[tuple[bytes, bytes]]):
        self.fields = fields

    @classmethod
    def read(cls, fp: Any) -> _Head:
        fields: list[tuple[bytes, bytes]] = []
        size = 0
        for _ in range(_MAX_FIELDS + 2):
            line = fp.readline(_MAX_LINE + 1)
            if len(line) > _MAX_LINE:
                raise http.client.LineTooLong("header line")
            size += len(line)
            if size > _MAX_HEAD:
                raise http.client.HTTPException(f"header section over {_MAX_HEAD} bytes")
            if line in (b"\r\n", b"\n", b""):
                return cls(fields)
            if line[:1] in (b" ", b"\t"):
                if fields:
                    name, value = fields[-1]
                    fields[-1] = (name, (value + b" " + line.strip()).strip())
                continue
            name, colon, value = line.partition(b":")
            if colon:
                fields.append((name.strip(), value.strip()))
        raise http.client.HTTPException(f"got more than {_MAX_FIELDS} headers")

    def values(self, name: bytes) -> list[bytes]:
        """Every value of field ``name`` (lower-case), in order."""
        return [value for field, value in self.fields if field.lower() == name]

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.encode("latin-1").lower()
        for field, value in self.fields:
            if field.lower() == key:
                return value.decode("latin-1")
        return default

    def items(self) -> list[tuple[str, str]]:
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.fields]


_MAX_LINE = 65536  # http.client's limits, kept
_MAX_FIELDS = 100
_MAX_HEAD = 65536  # the whole header section (h11, our earlier parser, allowed 16 KiB)
_LENGTH_DIGITS = 20


class _Response(http.client.HTTPResponse):
    """http.client's response (it reads the body: by length, chunked, or to the close),
    with the head read by :class:`_Head` (http.client parses header fields with the
    ``email`` package, a tenth of a warm cycle's CPU) and the framing rules of h11, the
    parser under httpx: interim 1xx answers skipped, only ``Transfer-Encoding: chunked``,
    Content-Length digits only and never two different ones (a length two parties read
    differently is how answers get smuggled)."""

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:
            version, status, reason = self._read_status()  # type: ignore[attr-defined]
            if not 100 <= status < 200:
                break
            if status == 101:  # we never ask to switch protocols
                raise httpx.RemoteProtocolError("unexpected 101 Switching Protocols")
            _Head.read(self.fp)  # an interim answer (100 Continue, 103 Early Hints): skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        head = _Head.read(self.fp)
        self.headers = self.msg = head  # type: ignore[assignment]
        codings = head.values(b"transfer-encoding")
        if len(codings) > 1 or (codings and codings[0].lower() != b"chunked"):
            raise httpx.RemoteProtocolError("only Transfer-Encoding: chunked is supported")
        self.chunked = bool(codings)
        self.chunk_left = None
        self.will_close = self._check_close()  # type: ignore[attr-defined]
        lengths = {part.strip() for value in head.values(b"content-length") for part in value.split(b",")}
        if len(lengths) > 1:
            raise httpx.RemoteProtocolError("conflicting Content-Length headers")
        self.length = None
        if lengths:
            length = lengths.pop()
            if not (length.isdigit() and len(length) <= _LENGTH_DIGITS):
                raise httpx.RemoteProtocolError("bad Content-Length")
            if not self.chunked:  # chunked framing beats a length
                self.length = int(length)
        if status in (204, 304) or self._method == "HEAD":  # type: ignore[attr-defined]
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no framing: the body ends when the connection does


class _Connection(http.client.HTTPConnection):
    """One kept-alive connection to ``key``'s origin, connected through the guard."""

    response_class = _Response

    def __init__(self, pool: WirePool, key: _Key, connect_timeout: float, read_timeout: float):
        super().__init__(key[1], key[2])
        self.key = key
        self._pool = pool
        self.set_timeouts(connect_timeout, read_timeout)

    def set_timeouts(self, connect_timeout: float, read_timeout: float) -> None:
        self._connect_timeout = connect_timeout
        if isinstance(self.sock, _DeadlineSocket):
            self.sock.timeout = read_timeout
        self._read_timeout = read_timeout

    def connect(self) -> None:
        scheme, host, port = self.key
        pool = self._pool
        clip(self._connect_timeout, httpx.ConnectTimeout)

        def open_socket(ip: str) -> socket.socket:
            try:
                return socket.create_connection((ip, port), clip(self._connect_timeout, httpx.ConnectTimeout))
            except TimeoutError as e:  # not OSError for connect_vetted: no next address
                raise httpx.ConnectTimeout(str(e) or "timed out") from e

        try:
            sock = connect_vetted(host, port, pool._policy, pool._resolver, open_socket, OSError)
        except Unresolvable as e:
            raise httpx.ConnectError(str(e)) from e.__cause__
        except OSError as e:  # refused/unreachable at every address
            raise httpx.ConnectError(str(e)) from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock.settimeout(clip(self._connect_timeout, httpx.ConnectTimeout))
                # SNI and the certificate check use the URL's name, not the vetted IP
                sock = pool._ssl_context.wrap_socket(sock, server_hostname=host)
        except TimeoutError as e:
            sock.close()
            raise httpx.ConnectTimeout(str(e) or "timed out") from e
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            sock.close()
            raise httpx.ConnectError(str(e)) from e
        except BaseException:
            sock.close()
            raise
        self.sock = _DeadlineSocket(sock, self._read_timeout)

    def still_open(self) -> bool:
        """False when the idle connection was closed by the server (or it sent anything
        unasked: either way it cannot carry the next answer)."""
        sock = self.sock
        if sock is None or sock.spoiled or sock.pending():
            return False
        try:
            poller = select.poll()  # not select(): no limit on the descriptor's number
            poller.register(sock.fileno(), select.POLLIN)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False


class _DeadlineSocket:
    """The socket as http.client sees it: every send and receive ends by the deadline.

    Like ``socket.socket``, closing it while an answer's file is open closes the socket
    when that file is closed: http.client closes a connection that will not be kept
    right after reading the head, then reads the body (to the end of the connection)."""

    def __init__(self, sock: socket.socket, timeout: float):
        self._sock = sock
        self.timeout = timeout
        self._set: float | None = sock.gettimeout()
        self._files = 0
        self._closed = False
        self.spoiled = False  # bytes came after an answer: they would begin the next one

    def _limit(self, exc: type[Exception]) -> None:
        # settimeout is a system call (and a GIL release) each time: only on a change,
        # which is rare while the deadline is further away than the read timeout
        timeout = clip(self.timeout, exc)
        if timeout != self._set:
            self._sock.settimeout(timeout)
            self._set = timeout

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> int:
        """Bytes TLS has decrypted and not handed out (0 for plain TCP)."""
        pending = getattr(self._sock, "pending", None)
        return pending() if pending is not None else 0

    def sendall(self, data: bytes) -> None:
        self._limit(httpx.WriteTimeout)
        self._sock.sendall(data)

    def recv_into(self, buffer: Any) -> int:
        self._limit(httpx.ReadTimeout)
        return self._sock.recv_into(buffer)

    def makefile(self, mode: str = "rb", *args: Any, **kwargs: Any) -> io.BufferedReader:
        self._files += 1
        return _File(_Reader(self), 64 * 1024)

    def file_closed(self) -> None:
        self._files -= 1
        if self._closed and not self._files:
            self._sock.close()

    def close(self) -> None:
        self._closed = True
        if not self._files:
            self._sock.close()


class _File(io.BufferedReader):
    """An answer's buffered file. Closed when http.client has read the answer's end; if
    it still holds bytes then (the server sent more than the answer), the connection is
    spoiled: kept, those bytes would be read as the start of the next answer."""

    def close(self) -> None:
        if not self.closed:
            raw: _Reader = self.raw  # type: ignore[assignment]
            raw.waiting = False  # peek at what is buffered, without reading the socket
            try:
                if self.peek(1):
                    raw.sock.spoiled = True
            except (OSError, ValueError):
                raw.sock.spoiled = True
        super().close()


class _Reader(io.RawIOBase):
    """Raw reads through :class:`_DeadlineSocket`; closing it leaves the socket open
    (http.client closes the file of each answer, the connection lives on)."""

    def __init__(self, sock: _DeadlineSocket):
        self.sock = sock
        self.waiting = True  # False: answer "nothing now" (None) instead of reading

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if not self.waiting:
            return None
        return self.sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            self.sock.file_closed()
        super().close()


class _Dropped(Exception):
    """The peer dropped the connection without a word (``mapped``: httpx's exception)."""

    def __init__(self, mapped: BaseException):
        self.mapped = mapped


@contextlib.contextmanager
def _closing_on_error(close: Any, phase: list[str]) -> Iterator[None]:
    """Call ``close`` (the connection is unusable) on any failure inside the block and
    raise it as httpx's exception for ``phase[0]`` ("connect", "write", "read"); a
    connection the peer dropped silently comes out as :class:`_Dropped` (a kept one may
    be retried)."""
    try:
        yield
    except httpx.TransportError:
        close()
        raise
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
        close()
        raise _Dropped(_mapped(e, phase[0])) from e
    except Exception as e:
        close()
        mapped = _mapped(e, phase[0])
        if mapped is e:
            raise
        raise mapped from e


def _mapped(e: BaseException, phase: str) -> BaseException:
    """httpx's exception for ``e`` raised while connecting, writing or reading."""
    text = str(e) or type(e).__name__
    if isinstance(e, httpx.TransportError):
        return e
    if isinstance(e, TimeoutError):  # socket.timeout
        return {"connect": httpx.ConnectTimeout, "write": httpx.WriteTimeout}.get(phase, httpx.ReadTimeout)(text)
    if isinstance(e, http.client.HTTPException):  # a malformed or cut answer
        if isinstance(e, http.client.RemoteDisconnected):
            text = "Server disconnected without sending a response."
        return httpx.RemoteProtocolError(text)
    if isinstance(e, (OSError, ValueError)):
        if phase == "connect":
            return httpx.ConnectError(text)
        return httpx.WriteError(text) if phase == "write" else httpx.ReadError(text)
    return e
