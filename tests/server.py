"""A real HTTP server on 127.0.0.1 for tests: static feeds, custom handlers, a directory.

    with FeedServer() as srv:
        srv.add("/feed.xml", b"<rss .../>")           # ETag + Last-Modified, answers 304
        srv.add_handler("/slow", trickle)            # fn(handler): write anything
        srv.serve_dir("/corpus", corpus / "real")    # every file as /corpus/<name>
        srv.url("/feed.xml"); srv.hits["/feed.xml"]; srv.requests[-1].headers

HTTP/1.1 with keep-alive, a thread per connection (daemon threads, so a stuck client
never blocks shutdown). ``hits`` counts requests per (unquoted) path, query ignored; ``requests``
records each one (with its arrival time and the local address it came to); ``in_flight`` /
``peak_in_flight`` count requests being answered at once. Custom handlers receive the
``http.server`` handler, extended with ``send_body(...)``, and should stop when
``srv.stopping`` is set.

``ForwardProxy`` is a minimal HTTP forward proxy (absolute-form GET, RFC 9112 §3.2.2) that
resolves target names from its own table and records what it relayed.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".json": "application/feed+json",
}
_AUTO = object()


@dataclass
class Route:
    body: bytes
    content_type: str = "application/rss+xml"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | bool | None = True  # True: derived from the body; str: fixed; None: none
    last_modified: str | None = None
    auto_date: bool = False  # Last-Modified moves on at each set()

    def etag_value(self) -> str | None:
        if self.etag is True:
            return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        return self.etag or None


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # as requested, query included
    headers: dict[str, str]  # lower-case names
    at: float = 0.0  # time.monotonic() when the request line and headers had arrived
    local: str = ""  # the server address the client connected to (127.0.0.x)
    peer: tuple[str, int] = ("", 0)  # the client's address and port (one per connection)


class FeedServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None):
        self.hits: dict[str, int] = defaultdict(int)
        self.requests: list[Recorded] = []
        self.in_flight = 0  # requests being answered now
        self.peak_in_flight = 0  # the most ever answered at once
        self.stopping = threading.Event()
        self._routes: dict[str, Route | Callable[[_Handler], None]] = {}
        self._dirs: list[tuple[str, Path]] = []
        self._lock = threading.Lock()
        self._clock = time.time()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.feed_server = self
        if ssl_context is not None:
            # handshake lazily, in the connection's own thread, not in accept()
            self._httpd.socket = ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "https" if ssl_context is not None else "http"
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="feed-server"
        )

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- routes ----------------------------------------------------------------------

    def url(self, path: str = "/", *, host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    def add(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/rss+xml",
        status: int = 200,
        headers: dict[str, str] | None = None,
        etag: str | bool | None = True,
        last_modified: str | bool | None = True,
    ) -> str:
        """Serve ``body`` at ``path``; returns the URL. ``etag``/``last_modified``: True
        derives them (from the body / a date that advances at each ``set``), a string
        fixes them, None/False omits them."""
        auto = last_modified is True
        with self._lock:
            date = self._next_date() if auto else (last_modified or None)
            self._routes[path] = Route(body, content_type, status, dict(headers or {}), etag, date, auto)  # type: ignore[arg-type]
        return self.url(path)

    def set(self, path: str, body: bytes) -> None:
        """Replace the body of a static route: its ETag and Last-Modified change."""
        with self._lock:
            route = self._routes[path]
            assert isinstance(route, Route), f"{path} is a handler, not a static route"
            route.body = body
            if route.auto_date:
                route.last_modified = self._next_date()

    def add_handler(self, path: str, fn: Callable[[_Handler], None]) -> str:
        with self._lock:
            self._routes[path] = fn
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def send(handler: _Handler) -> None:
            handler.send_body(b"", status=status, headers={"Location": location})

        return self.add_handler(path, send)

    def serve_dir(self, prefix: str, directory: str | Path) -> None:
        """Every file under ``directory`` at ``prefix/<relative path>``, with an ETag."""
        with self._lock:
            self._dirs.append((prefix.rstrip("/") + "/", Path(directory).resolve()))

    def _next_date(self) -> str:
        # called with the lock held; strictly increasing whole seconds, so a set() always moves Last-Modified on
        self._clock = max(self._clock + 1, time.time())
        return email.utils.formatdate(self._clock, usegmt=True)

    def _lookup(self, path: str) -> Route | Callable[[_Handler], None] | None:
        with self._lock:
            found = self._routes.get(path)
            if found is not None:
                return found
            for prefix, directory in self._dirs:
                if path.startswith(prefix):
                    file = (directory / path[len(prefix):]).resolve()
                    if file.is_file() and file.is_relative_to(directory):
                        kind = _TYPES.get(file.suffix.lower()) or mimetypes.guess_type(file.name)[0]
                        return Route(file.read_bytes(), kind or "application/octet-stream", last_modified=None)
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    feed_server: FeedServer

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return  # the client went away or gave up: normal in fetcher tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end on their own
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stall
    server: _Server

    @property
    def feed_server(self) -> FeedServer:
        return self.server.feed_server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def send_body(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str | None = "application/rss+xml",
        headers: dict[str, str] | None = None,
    ) -> None:
        """A complete response with Content-Length (keeps the connection usable)."""
        self.send_response(status)
        if content_type and status not in (204, 304):
            self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        if body and self.command != "HEAD" and status not in (204, 304):
            self.end_headers()
            self._answer_done()
            self.wfile.write(body)
        else:
            self._answer_done()
            self.end_headers()

    def _serve(self, head: bool) -> None:
        srv = self.feed_server
        path = unquote(urlsplit(self.path).path)  # routes are registered unquoted
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._answered = False
        with srv._lock:
            srv.hits[path] += 1
            srv.requests.append(Recorded(self.command, self.path, headers, time.monotonic(), self.connection.getsockname()[0], self.client_address[:2]))
            srv.in_flight += 1
            srv.peak_in_flight = max(srv.peak_in_flight, srv.in_flight)
        try:
            route = srv._lookup(path)
            if route is None:
                self.send_body(b"not found\n", status=404, content_type="text/plain")
            elif callable(route):
                route(self)
            else:
                self._static(route)
        finally:
            self._answer_done()  # a handler that sent no response at all (closed, timed out)

    def _answer_done(self) -> None:
        """The request stops counting as in flight. ``send_body`` calls it just before its
        last write, before the client can have the whole answer: a client that then sends
        its next request on another connection must not find this one still counted (it
        would be, for a moment, if it were counted down after the handler returns)."""
        if not getattr(self, "_answered", True):
            self._answered = True
            with self.feed_server._lock:
                self.feed_server.in_flight -= 1

    def _static(self, route: Route) -> None:
        etag = route.etag_value()
        headers = dict(route.headers)
        if etag:
            headers["ETag"] = etag
        if isinstance(route.last_modified, str):
            headers["Last-Modified"] = route.last_modified
        if route.status == 200 and self._not_modified(etag, route.last_modified):
            validators = {k: v for k, v in headers.items() if k in ("ETag", "Last-Modified")}
            self.send_body(b"", status=304, content_type=None, headers=validators)
            return
        self.send_body(route.body, status=route.status, content_type=route.content_type, headers=headers)

    def _not_modified(self, etag: str | None, last_modified: object) -> bool:
        """RFC 9110 §13.2.2: If-None-Match decides when present; else If-Modified-Since."""
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
            return etag is not None and ("*" in tags or etag.removeprefix("W/") in tags)
        ims = self.headers.get("If-Modified-Since")
        if ims and isinstance(last_modified, str):
            try:
                return email.utils.parsedate_to_datetime(last_modified) <= email.utils.parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                return False
        return False


class ForwardProxy:
    """An HTTP forward proxy on loopback for tests: relays absolute-form GETs.

        with ForwardProxy(hosts={"feed.example": "127.0.0.2"}) as proxy:
            proxy.url                      # http://127.0.0.1:<port>
            proxy.requests[-1].path        # "http://feed.example:8080/feed.xml"

    Target names are resolved from ``hosts`` only (never DNS); literal IPs go as they are.
    ``auth``, if set, is the ``Proxy-Authorization`` value required (else 407). Hop-by-hop
    headers and Proxy-Authorization are not forwarded. No CONNECT (https targets).
    """

    def __init__(self, hosts: dict[str, str] | None = None, *, auth: str | None = None, host: str = "127.0.0.1"):
        self.hosts = dict(hosts or {})
        self.auth = auth
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._httpd = _Server((host, 0), _ProxyHandler)
        self._httpd.feed_server = self  # type: ignore[assignment]
        self.host, self.port = self._httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="forward-proxy"
        )

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        import http.client

        proxy: ForwardProxy = self.server.feed_server  # type: ignore[assignment]
        headers = {k.lower(): v for k, v in self.headers.items()}
        with proxy._lock:
            proxy.requests.append(Recorded(self.command, self.path, headers, time.monotonic(), self.connection.getsockname()[0], self.client_address[:2]))
        if proxy.auth is not None and headers.get("proxy-authorization") != proxy.auth:
            self._reply(407, b"proxy auth required\n", [("Proxy-Authenticate", 'Basic realm="test"')])
            return
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self._reply(400, b"absolute-form http URL expected\n")
            return
        address = proxy.hosts.get(target.hostname, target.hostname)
        conn = http.client.HTTPConnection(address, target.port or 80, timeout=10)
        try:
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            conn.request("GET", target.path + (f"?{target.query}" if target.query else "") or "/", headers=forwarded)
            answer = conn.getresponse()
            body = answer.read()
        except OSError as e:
            self._reply(502, f"bad gateway: {e}\n".encode())
            return
        finally:
            conn.close()
        passed = [(k, v) for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}]
        self._reply(answer.status, body, passed)
