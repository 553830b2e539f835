"""The fetch stage: one URL -> ``Fetched`` | ``NotModified``, or a ``FetchError``.

Owns HTTP: the conditional GET (RFC 9110 §13.1), content negotiation, redirects (followed
here, one hop at a time, so each hop goes through the address guard and the host limiter
again and we know whether the move was permanent), content decoding with a cap, the
limits in ``models.FetchLimits`` and the per-source ``models.RequestOptions``. Every
problem leaves as an ``aggregator.errors.FetchError`` subclass whose text names the URL
(without userinfo credentials) and the cause, never a header value or proxy password.

Must not: parse bodies, touch the database, read the clock for anything but the deadline,
the host limiter and a ``Retry-After`` date, or keep per-source state between calls (no
cookie jar: cookies never persist, not even within one fetch; a source's ``Cookie``
header is sent with its own requests only). The address policy, the deadline-bounded
sockets and the bounded decoder live in ``aggregator.netguard``; per-host politeness
(slots, gaps, the Retry-After penalty box) in ``aggregator.politeness``. Requests go
straight to the target through ``aggregator.wire`` (http.client, kept-alive connections:
a fifth of httpx's CPU per request); a source with a proxy goes through httpx, which
speaks HTTP and SOCKS proxies. Both answer with the same attributes and raise httpx's
exception classes, so everything below is written once.

One ``Fetcher`` is shared by the worker threads of a cycle; ``fetch`` keeps all its state
on the stack, and the connection pools and the host limiter are thread-safe.
"""

from __future__ import annotations

import base64
import contextlib
import http
import http.cookiejar
import logging
import re
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

if "httpx" not in sys.modules:
    # httpx's __init__ imports its command-line client (httpx._main: click, rich, pygments)
    # when those are installed, as they are here. We never run it, and it is half of
    # httpx's import (37 of 78 ms CPU), paid by every warm poll. None in sys.modules makes
    # that import raise ImportError, which httpx catches (its `main` then only says how to
    # install the CLI).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]
import httpx  # noqa: E402

from .errors import BlockedAddressError, FetchError, HTTPStatusError, NetworkError, TimeoutError_, TooLargeError
from .errors import TooManyRedirectsError
from .models import Fetched, FetchLimits, NotModified, RequestOptions, Validators
from .netguard import AddressBlocked, AddressPolicy, Resolver, UnsupportedCoding
from .netguard import deadline_at, decode_stream, guarded_pool, is_blocked_address, system_resolver, vet_unresolved
from .politeness import FETCHER_OWNED_HEADERS, HostLimiter, HostWaitTimeout, host_key, retry_after_seconds
from .politeness import same_origin, seconds_text, source_headers
from .wire import WirePool, WireResponse

__all__ = ["ACCEPT", "FETCHER_OWNED_HEADERS", "Fetcher", "decode_stream", "host_key", "redact"]

log = logging.getLogger(__name__)

#: Feeds first; a generic XML/anything answer is still worth parsing (servers lie).
ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.8"
)
#: Only codings we can inflate with an output cap (zlib's ``max_length``). No ``br``: its
#: decoder is not installed, and would need the same piece-by-piece bound to be safe.
ACCEPT_ENCODING = "gzip, deflate"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})  # RFC 9110 §15.4.2, RFC 9538


@dataclass(frozen=True)
class _Call:
    """One fetch's settings, kept on the stack (threads share the Fetcher)."""

    url: str
    source: str | None
    deadline: float
    total: float  # the deadline in seconds, for messages
    client: httpx.Client | None  # None: straight to the target, through the wire pool
    via: str  # " via proxy <url>" (redacted) or ""
    user_agent: str | None
    extra: tuple[tuple[str, bytes], ...]  # the source's headers, for its own origin only
    origin: httpx.URL


class Fetcher:
    """A guarded HTTP client for feeds; use one per cycle, from many threads.

    ``resolver`` and ``address_policy`` replace name resolution and the SSRF policy
    (embedding, tests); ``ssl_context`` replaces the certifi-based default (a private CA).
    ``host_limits`` is ``(max_per_host, min_gap)`` or a :class:`HostLimiter` to share.

    Direct requests go through one :class:`wire.WirePool`, which keeps idle connections
    per thread name and origin, so the next cycle's "fetch_0".."fetch_7" find the
    keep-alive connections the previous cycle's threads left, and a daemon does not
    reconnect every cycle.

    Proxied requests use httpx. Each fetching thread has its own client per proxy, made
    on first use and found again by the thread's name, so the next cycle's threads reuse
    the connections and their number stays bounded in a daemon (httpcore's pool takes one
    lock per request and again per response close: shared by eight threads, that lock was
    a fifth of a warm 10,000-source cycle's CPU). A name shared by two live threads only
    means sharing a client, which is safe.

    A source with ``RequestOptions.proxy`` goes through that proxy. The SSRF guard then checks less: the proxy itself
    is operator-configured and not vetted (it may well be on loopback), and the target's
    name is resolved *by the proxy*, so its address is out of our sight: only numeric
    targets (``10.0.0.1``, ``2130706433``...) and ``localhost`` names are vetted here, and
    the proxy's own egress rules are the boundary. Non-http(s) targets (first URL and
    redirects) are still refused; the deadline, limits and host limiter still apply.
    """

    def __init__(
        self,
        limits: FetchLimits,
        *,
        resolver: Resolver = system_resolver,
        address_policy: AddressPolicy = is_blocked_address,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
        host_limits: tuple[int, float] | HostLimiter = (2, 0.0),
    ):
        self.limits = limits
        self.host_limiter = host_limits if isinstance(host_limits, HostLimiter) else HostLimiter(*host_limits)
        self._policy = None if limits.allow_private_networks else address_policy
        self._resolver = resolver
        self._ssl_context = ssl_context or _LazySSLContext()
        self._max_connections = max_connections
        self._clients: dict[tuple[str, str], httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self._wire = WirePool(self._policy, resolver, self._ssl_context, max_idle=max_connections)
        self._default_headers = (
            (b"Accept", ACCEPT.encode()),
            (b"Accept-Encoding", ACCEPT_ENCODING.encode()),
            (b"User-Agent", limits.user_agent.encode()),
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
        self._wire.close()

    def fetch(
        self,
        url: str,
        validators: Validators = Validators(),
        *,
        source: str | None = None,
        options: RequestOptions | None = None,
    ) -> Fetched | NotModified:
        """GET ``url`` conditionally, following up to ``limits.max_redirects`` redirects.

        ``options`` are the source's own: its User-Agent (every hop), headers (its own
        origin only; see ``politeness.source_headers`` for which are dropped), total
        timeout (replaces ``limits.deadline``) and proxy. Waiting for a free slot on a busy
        host counts against that deadline; a host in the Retry-After penalty box is not
        contacted at all (HTTPStatusError 429 with ``retry_after`` = seconds left).
        """
        options = options or RequestOptions()
        total = self.limits.deadline if options.timeout is None else options.timeout
        deadline = time.monotonic() + total
        via = f" via proxy {redact(options.proxy)}" if options.proxy else ""
        try:
            header_ua, extra = source_headers(options.headers, source)
        except ValueError as e:
            raise FetchError(f"cannot fetch {redact(url)}: {e}", source=source) from e
        first = _checked_url(url, url, source)
        client = None if options.proxy is None else self._client(options.proxy, url, source)
        call = _Call(url, source, deadline, total, client, via, options.user_agent or header_ua, extra, first)
        with deadline_at(deadline):
            return self._fetch(first, validators, call)

    # --- clients ---------------------------------------------------------------------

    def _client(self, proxy: str, url: str = "", source: str | None = None) -> httpx.Client:
        """This thread's client for ``proxy``, made on first use; ``url``/``source`` only
        name the fetch in the error for an unusable proxy."""
        key = (proxy, threading.current_thread().name)
        client = self._clients.get(key)  # a dict read is atomic; made once under the lock
        if client is None:
            with self._clients_lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = self._new_client(proxy, url, source)
        return client

    def _new_client(self, proxy: str, url: str, source: str | None) -> httpx.Client:
        # the proxy is the operator's choice: not vetted, but still deadline-bound
        try:
            pool = guarded_pool(proxy, None, self._resolver, self._ssl_context, self._max_connections)
        except (ValueError, TypeError, ImportError, httpx.InvalidURL) as e:
            why = "expected an http(s):// or socks5(h):// URL"
            if isinstance(e, ImportError):
                why = "a SOCKS proxy needs the socksio package (httpx[socks])"
            # not chained: the cause's text may quote the proxy URL with its password
            text = f"cannot fetch {redact(url)}: proxy {redact(str(proxy))} is not usable: {why}"
            raise FetchError(text, source=source) from None
        # our context (not one httpx would build, loading the CA bundle again, then unused)
        transport = httpx.HTTPTransport(retries=0, verify=self._ssl_context)
        # httpx has no public knob for httpcore's network backend, so the pool is
        # rebuilt with ours; without it there is no connect-time address check.
        transport._pool = pool
        return httpx.Client(
            transport=transport,
            trust_env=False,  # no proxy or .netrc from the environment (HAZARDS.md)
            follow_redirects=False,
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),  # one per client, and it keeps nothing
            headers={"User-Agent": self.limits.user_agent, "Accept": ACCEPT, "Accept-Encoding": ACCEPT_ENCODING},
        )

    # --- one fetch -------------------------------------------------------------------

    def _fetch(self, current: httpx.URL, validators: Validators, call: _Call) -> Fetched | NotModified:
        headers: list[tuple[str, str | bytes]] = []
        # Sent on every hop: the validators belong to the URL that finally answered.
        if validators.etag:
            headers.append(("If-None-Match", validators.etag))
        if validators.last_modified:
            headers.append(("If-Modified-Since", validators.last_modified))
        if call.user_agent:
            headers.append(("User-Agent", call.user_agent))
        seen: set[httpx.URL] = set()  # the URLs visited, without fragments; filled on the first redirect
        hops: list[int] = []  # the status of each redirect followed
        while True:
            host = host_key(current)
            self._check_box(host, current, call)  # before queueing for a slot...
            with _fetch_errors(current, call, self.limits), self.host_limiter.slot(host, call.deadline):
                self._check_box(host, current, call)  # ...and after: a 429 may have come meanwhile
                if call.via and self._policy is not None:
                    vet_unresolved(current.host, self._policy)  # all we can see through a proxy
                sent = headers + list(call.extra) if same_origin(call.origin, current) else headers
                connect, read = self._timeouts(call)
                response: httpx.Response | WireResponse
                if call.client is None:
                    wire_headers = self._wire_headers(sent, current)
                    response = self._wire.get(current, wire_headers, connect_timeout=connect, read_timeout=read)
                else:
                    timeout = httpx.Timeout(connect=connect, read=read, write=read, pool=connect)
                    request = call.client.build_request("GET", current, headers=sent, timeout=timeout)
                    response = call.client.send(request, stream=True)
                try:
                    target = self._redirect(response, seen, hops, call)
                    if target is None:
                        return self._answer(response, validators, hops, call)
                    _drain(response)
                finally:
                    response.close()
            current = target

    def _check_box(self, host: str, url: httpx.URL, call: _Call) -> None:
        until = self.host_limiter.blocked_until(host)
        if until is not None:
            wait = seconds_text(until - time.monotonic())
            text = f"host {host} asked us to wait (Retry-After) — not contacted for another {wait} s"
            raise HTTPStatusError(f"{text} (fetching {redact(str(url))})", status=429, source=call.source, retry_after=wait)

    def _redirect(self, response: httpx.Response, seen: set[httpx.URL], hops: list[int], call: _Call) -> httpx.URL | None:
        """Where a redirect response sends us (recording the hop), or None if it is not one."""
        location = response.headers.get("location")
        if response.status_code not in _REDIRECTS or not location:
            return None
        here, url = response.url, call.url
        target = _checked_url(here.join(location), here, call.source)
        hops.append(response.status_code)
        if not seen:
            seen.add(here.copy_with(fragment=None))
        key = target.copy_with(fragment=None)
        if key in seen:
            raise TooManyRedirectsError(
                f"redirect loop: {redact(str(here))} -> {redact(str(target))} (started at {redact(url)})",
                source=call.source,
            )
        if len(hops) > self.limits.max_redirects:
            raise TooManyRedirectsError(
                f"more than {self.limits.max_redirects} redirects fetching {redact(url)}", source=call.source
            )
        seen.add(key)
        log.debug("%s: HTTP %s -> %s", redact(url), response.status_code, redact(str(target)))
        return target

    def _answer(self, response: httpx.Response, sent: Validators, hops: list[int], call: _Call) -> Fetched | NotModified:
        """The final, non-redirect response as our result, or its error."""
        final = str(response.url)
        headers = response.headers
        if response.status_code == 304:
            _drain(response)
            # RFC 9110 §15.4.5: a 304 may omit validators that did not change
            return NotModified(
                url=call.url,
                final_url=final,
                validators=Validators(
                    etag=headers.get("etag") or sent.etag,
                    last_modified=headers.get("last-modified") or sent.last_modified,
                ),
            )
        if not 200 <= response.status_code < 300:
            retry_after = headers.get("retry-after") if response.status_code in (429, 503) else None
            wait = retry_after_seconds(retry_after, time.time())
            if wait:  # RFC 6585 §4: the host is overloaded, not just this URL
                self.host_limiter.defer(host_key(response.url), time.monotonic() + wait)
            _drain(response)
            raise _status_error(response, call.url, call.source, retry_after)
        return Fetched(
            url=call.url,
            final_url=final,
            status=response.status_code,
            headers=tuple(headers.multi_items()),
            body=_read_body(response, self.limits.max_body_bytes, call.deadline, response.url, call.source),
            validators=Validators(etag=headers.get("etag"), last_modified=headers.get("last-modified")),
            permanent_url=final if hops and set(hops) <= _PERMANENT else None,
        )

    def _timeouts(self, call: _Call) -> tuple[float, float]:
        """The connect and read (also write) timeouts, neither longer than the time left."""
        left = call.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError_(_deadline_text(call.total, call.url), source=call.source)
        return min(self.limits.connect_timeout, left), min(self.limits.read_timeout, left)

    def _wire_headers(self, sent: list[tuple[str, str | bytes]], url: httpx.URL) -> list[tuple[bytes, bytes]]:
        """The headers httpx would send for ``sent`` (Host aside, which ``wire`` adds):
        the fetcher's defaults unless ``sent`` names them, then ``sent``, then Basic
        credentials from the URL's userinfo, replacing any other Authorization."""
        names = {name.lower() for name, _ in sent}
        out = [(name, value) for name, value in self._default_headers if name.decode().lower() not in names]
        for name, value in sent:
            out.append((name.encode("ascii"), value if isinstance(value, bytes) else value.encode("utf-8")))
        if url.userinfo:
            token = base64.b64encode(f"{url.username}:{url.password}".encode())
            out = [(name, value) for name, value in out if name.lower() != b"authorization"]
            out.append((b"Authorization", b"Basic " + token))
        return out


# --- helpers (pure unless noted) -----------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` with the userinfo (``user:password@``) of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


class _LazySSLContext:
    """httpx's certifi-based SSL context, built on first use. Loading the CA bundle costs
    ~30 ms, a tenth of a warm cycle over 250 sources, and a cycle that opens no TLS
    connection (http:// sources, or 304s over kept connections) never needs it. httpcore
    only calls methods on the context (``set_alpn_protocols``, ``wrap_socket``), which
    are forwarded to the real one."""

    def __init__(self) -> None:
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def get(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = httpx.create_ssl_context()
            return self._context

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuse to store or send any cookie: state must not leak between sources."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Any, request: Any) -> bool:
        return False


def _checked_url(target: str | httpx.URL, referrer: str | httpx.URL, source: str | None) -> httpx.URL:
    """``target`` as an httpx URL if it is absolute http(s) with a host, else FetchError."""
    where = "" if str(target) == str(referrer) else f" (redirected from {redact(str(referrer))})"
    try:
        parsed = httpx.URL(target)
    except (httpx.InvalidURL, TypeError, ValueError) as e:
        raise FetchError(f"invalid URL {redact(str(target))!r}{where}: {redact(str(e))}", source=source) from e
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "(none)"
        raise FetchError(
            f"refusing to fetch {redact(str(target))}{where}: scheme {scheme!r} is not http/https",
            source=source,
        )
    if not parsed.host:
        raise FetchError(f"invalid URL {redact(str(target))!r}{where}: no host", source=source)
    return parsed


def _status_error(response: httpx.Response, url: str, source: str | None, retry_after: str | None) -> HTTPStatusError:
    status = response.status_code
    try:
        reason = response.reason_phrase or http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    answered = redact(str(response.url))
    text = f"HTTP {status} {reason}".rstrip() + f" from {answered}"
    if answered != redact(url):
        text += f" (redirected from {redact(url)})"
    if retry_after:
        text += f" (Retry-After: {retry_after[:64]})"
    return HTTPStatusError(text, status=status, source=source, retry_after=retry_after)


def _deadline_text(seconds: float, url: str) -> str:
    return f"total deadline of {seconds:g} s exceeded fetching {redact(url)}"


@contextlib.contextmanager
def _fetch_errors(url: httpx.URL, call: _Call, limits: FetchLimits) -> Iterator[None]:
    """Map httpx/httpcore/guard/limiter exceptions raised inside the block to our errors."""
    where, source = redact(str(url)) + call.via, call.source
    try:
        yield
    except FetchError:
        raise
    except HostWaitTimeout as e:
        gap = f", {e.min_gap:g} s apart" if e.min_gap else ""
        raise TimeoutError_(
            f"waited {e.waited:.1f} s for a free slot on host {e.host} (at most {e.max_per_host} "
            f"requests at a time{gap}): {_deadline_text(call.total, where)}",
            source=source,
        ) from e
    except AddressBlocked as e:
        target = f"address {e.address} is" if e.host == e.address else f"{e.host} resolves to {e.address},"
        raise BlockedAddressError(f"refusing to fetch {where}: {target} {e.reason}", source=source) from e
    except httpx.TimeoutException as e:
        if time.monotonic() >= call.deadline - 0.01:
            raise TimeoutError_(_deadline_text(call.total, where), source=source) from e
        if isinstance(e, httpx.ConnectTimeout):
            text = f"connect timeout ({limits.connect_timeout:g} s) fetching {where}"
        else:
            text = f"read timeout ({limits.read_timeout:g} s) fetching {where}"
        raise TimeoutError_(text, source=source) from e
    except httpx.ConnectError as e:
        raise NetworkError(f"cannot connect to {where}: {redact(str(e))}", source=source) from e
    except httpx.TransportError as e:  # ProxyError included
        cause = redact(str(e)) or type(e).__name__
        raise NetworkError(f"network error fetching {where}: {cause}", source=source) from e
    except (httpx.InvalidURL, httpx.StreamError) as e:
        raise FetchError(f"cannot fetch {where}: {redact(str(e))}", source=source) from e


DRAIN_BYTES = 64 * 1024  # an unwanted body (304, redirect, error page) read to keep the connection


def _drain(response: httpx.Response) -> None:
    """Read a small unwanted body to its end so the connection goes back to the pool: a
    streamed response closed unread closes its connection, and then every conditional
    request of a warm cycle pays a new TCP (and TLS) handshake. A body over DRAIN_BYTES,
    or one that fails, is abandoned with its connection instead."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_BYTES:
        return
    seen = 0
    try:
        for chunk in response.iter_raw():
            seen += len(chunk)
            if seen > DRAIN_BYTES:
                return
    except (httpx.HTTPError, httpx.StreamError, OSError):
        return


def _read_body(response: httpx.Response, limit: int, deadline: float, url: httpx.URL, source: str | None) -> bytes:
    """The decoded body, refusing more than ``limit`` decoded bytes.

    We inflate ourselves (``netguard.decode_stream``) instead of using ``iter_bytes()``:
    httpx decodes each 64 KiB network read in one call without an output bound, so a
    50 KB gzip bomb becomes one 50 MB chunk (128 MiB peak measured) before any cap can
    look at it. Here no step produces more than 64 KiB, so peak memory is about ``limit``.
    """
    codings = [c.strip().lower() for c in response.headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c not in ("", "identity")]
    declared = response.headers.get("content-length", "")
    if not codings and declared.isdigit() and int(declared) > limit:
        raise TooLargeError(
            f"body of {redact(str(url))} is {int(declared)} bytes, over the {limit}-byte limit",
            source=source,
        )
    try:
        body = bytearray()
        for piece in decode_stream(codings, response.iter_raw()):
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total fetch deadline exceeded")
            if len(body) + len(piece) > limit:
                raise TooLargeError(
                    f"body of {redact(str(url))} exceeds the {limit}-byte limit"
                    + (f" after {'+'.join(codings)} decoding" if codings else ""),
                    source=source,
                )
            body += piece
    except (zlib.error, UnsupportedCoding) as e:
        raise FetchError(f"cannot decode the body of {redact(str(url))}: {e}", source=source) from e
    return bytes(body)
