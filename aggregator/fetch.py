"""The fetch stage: one URL -> ``Fetched`` | ``NotModified``, or a ``FetchError``.

Owns HTTP: the conditional GET (RFC 9110 §13.1), content negotiation, redirects (followed
here, one hop at a time, so each hop goes through the address guard again and we know
whether the move was permanent), content decoding with a cap, and the limits in
``models.FetchLimits``. Every problem leaves as an ``aggregator.errors.FetchError``
subclass whose text names the URL (without userinfo credentials) and the cause.

Must not: parse bodies, touch the database, read the clock for anything but the deadline,
or keep per-source state between calls (no cookie jar: cookies never persist, not even
within one fetch). The address policy and the deadline-bounded sockets live in
``aggregator.netguard``.

One ``Fetcher`` is shared by the worker threads of a cycle; ``fetch`` keeps all its state
on the stack, and the connection pool is thread-safe.
"""

from __future__ import annotations

import contextlib
import http
import http.cookiejar
import logging
import re
import ssl
import time
import zlib
from collections.abc import Iterator
from typing import Any

import httpcore
import httpx

from .errors import (
    BlockedAddressError,
    FetchError,
    HTTPStatusError,
    NetworkError,
    TimeoutError_,
    TooLargeError,
    TooManyRedirectsError,
)
from .models import Fetched, FetchLimits, NotModified, Validators
from .netguard import AddressBlocked, AddressPolicy, GuardedBackend, Resolver, deadline_at
from .netguard import is_blocked_address, system_resolver

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
_PIECE = 64 * 1024  # most bytes one inflate step may produce (the gzip-bomb bound)


class Fetcher:
    """A guarded HTTP client for feeds; use one per cycle, from many threads.

    ``resolver`` and ``address_policy`` replace name resolution and the SSRF policy
    (embedding, tests); ``ssl_context`` replaces the certifi-based default (a private CA).
    """

    def __init__(
        self,
        limits: FetchLimits,
        *,
        resolver: Resolver = system_resolver,
        address_policy: AddressPolicy = is_blocked_address,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
    ):
        self.limits = limits
        policy = None if limits.allow_private_networks else address_policy
        transport = httpx.HTTPTransport(retries=0)
        # httpx has no public knob for httpcore's network backend, so the pool is
        # rebuilt with ours; without it there is no connect-time address check.
        transport._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=max_connections,
            max_keepalive_connections=max_connections // 2,
            keepalive_expiry=30.0,
            network_backend=GuardedBackend(policy, resolver),
        )
        self._client = httpx.Client(
            transport=transport,
            trust_env=False,  # no proxy or .netrc from the environment (HAZARDS.md)
            follow_redirects=False,
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            headers={
                "User-Agent": limits.user_agent,
                "Accept": ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def fetch(
        self, url: str, validators: Validators = Validators(), *, source: str | None = None
    ) -> Fetched | NotModified:
        """GET ``url`` conditionally, following up to ``limits.max_redirects`` redirects."""
        deadline = time.monotonic() + self.limits.deadline
        with deadline_at(deadline):
            return self._fetch(url, validators, source, deadline)

    # --- one fetch -------------------------------------------------------------------

    def _fetch(
        self, url: str, validators: Validators, source: str | None, deadline: float
    ) -> Fetched | NotModified:
        limits = self.limits
        headers = {}
        # Sent on every hop: the validators belong to the URL that finally answered.
        if validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified

        current = _checked_url(url, url, source)
        seen = {current.copy_with(fragment=None)}
        hops: list[int] = []  # the status of each redirect followed
        while True:
            timeout = self._timeout(url, deadline, source)
            request = self._client.build_request("GET", current, headers=headers, timeout=timeout)
            with _fetch_errors(current, source, deadline, limits):
                response = self._client.send(request, stream=True)
                try:
                    target = self._redirect(response, url, seen, hops, source)
                    if target is None:
                        return self._answer(response, url, validators, hops, deadline, source)
                finally:
                    response.close()
            current = target

    def _redirect(
        self, response: httpx.Response, url: str, seen: set[httpx.URL], hops: list[int], source: str | None
    ) -> httpx.URL | None:
        """Where a redirect response sends us (recording the hop), or None if it is not one."""
        location = response.headers.get("location")
        if response.status_code not in _REDIRECTS or not location:
            return None
        here = response.url
        target = _checked_url(here.join(location), here, source)
        hops.append(response.status_code)
        key = target.copy_with(fragment=None)
        if key in seen:
            raise TooManyRedirectsError(
                f"redirect loop: {redact(str(here))} -> {redact(str(target))} (started at {redact(url)})",
                source=source,
            )
        if len(hops) > self.limits.max_redirects:
            raise TooManyRedirectsError(
                f"more than {self.limits.max_redirects} redirects fetching {redact(url)}", source=source
            )
        seen.add(key)
        log.debug("%s: HTTP %s -> %s", redact(url), response.status_code, redact(str(target)))
        return target

    def _answer(
        self,
        response: httpx.Response,
        url: str,
        sent: Validators,
        hops: list[int],
        deadline: float,
        source: str | None,
    ) -> Fetched | NotModified:
        """The final, non-redirect response as our result, or its error."""
        final = str(response.url)
        headers = response.headers
        if response.status_code == 304:
            # RFC 9110 §15.4.5: a 304 may omit validators that did not change
            return NotModified(
                url=url,
                final_url=final,
                validators=Validators(
                    etag=headers.get("etag") or sent.etag,
                    last_modified=headers.get("last-modified") or sent.last_modified,
                ),
            )
        if not 200 <= response.status_code < 300:
            raise _status_error(response, url, source)
        return Fetched(
            url=url,
            final_url=final,
            status=response.status_code,
            headers=tuple(headers.multi_items()),
            body=_read_body(response, self.limits.max_body_bytes, deadline, response.url, source),
            validators=Validators(etag=headers.get("etag"), last_modified=headers.get("last-modified")),
            permanent_url=final if hops and set(hops) <= _PERMANENT else None,
        )

    def _timeout(self, url: str, deadline: float, source: str | None) -> httpx.Timeout:
        """The per-operation timeouts, none longer than the time left."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError_(_deadline_text(self.limits, url), source=source)
        connect = min(self.limits.connect_timeout, left)
        read = min(self.limits.read_timeout, left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


# --- helpers (pure unless noted) -----------------------------------------------------

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` with the userinfo (``user:password@``) of every URL in it removed."""
    return _USERINFO.sub(r"\1", text)


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


def _status_error(response: httpx.Response, url: str, source: str | None) -> HTTPStatusError:
    status = response.status_code
    try:
        reason = response.reason_phrase or http.HTTPStatus(status).phrase
    except ValueError:
        reason = ""
    answered = redact(str(response.url))
    text = f"HTTP {status} {reason}".rstrip() + f" from {answered}"
    if answered != redact(url):
        text += f" (redirected from {redact(url)})"
    retry_after = response.headers.get("retry-after")
    if retry_after and status in (429, 503):
        text += f" (Retry-After: {retry_after[:64]})"
    return HTTPStatusError(text, status=status, source=source)


def _deadline_text(limits: FetchLimits, url: str) -> str:
    return f"total deadline of {limits.deadline:g} s exceeded fetching {redact(url)}"


@contextlib.contextmanager
def _fetch_errors(url: httpx.URL, source: str | None, deadline: float, limits: FetchLimits) -> Iterator[None]:
    """Map httpx/httpcore/guard exceptions raised inside the block to our errors."""
    where = redact(str(url))
    try:
        yield
    except FetchError:
        raise
    except AddressBlocked as e:
        target = f"address {e.address} is" if e.host == e.address else f"{e.host} resolves to {e.address},"
        raise BlockedAddressError(f"refusing to fetch {where}: {target} {e.reason}", source=source) from e
    except httpx.TimeoutException as e:
        if time.monotonic() >= deadline - 0.01:
            raise TimeoutError_(_deadline_text(limits, where), source=source) from e
        if isinstance(e, httpx.ConnectTimeout):
            text = f"connect timeout ({limits.connect_timeout:g} s) fetching {where}"
        else:
            text = f"read timeout ({limits.read_timeout:g} s) fetching {where}"
        raise TimeoutError_(text, source=source) from e
    except httpx.ConnectError as e:
        raise NetworkError(f"cannot connect to {where}: {redact(str(e))}", source=source) from e
    except httpx.TransportError as e:
        cause = redact(str(e)) or type(e).__name__
        raise NetworkError(f"network error fetching {where}: {cause}", source=source) from e
    except (httpx.InvalidURL, httpx.StreamError) as e:
        raise FetchError(f"cannot fetch {where}: {redact(str(e))}", source=source) from e


# --- body: decode with a cap ---------------------------------------------------------


def _read_body(
    response: httpx.Response, limit: int, deadline: float, url: httpx.URL, source: str | None
) -> bytes:
    """The decoded body, refusing more than ``limit`` decoded bytes.

    We inflate ourselves instead of using ``iter_bytes()``: httpx decodes each 64 KiB
    network read in one call without an output bound, so a 50 KB gzip bomb becomes one
    50 MB chunk (128 MiB peak measured) before any cap can look at it. Here no step
    produces more than ``_PIECE`` bytes, so peak memory is about ``limit``.
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
        pieces = decode_stream(codings, response.iter_raw())
        body = bytearray()
        for piece in pieces:
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("total fetch deadline exceeded")
            if len(body) + len(piece) > limit:
                raise TooLargeError(
                    f"body of {redact(str(url))} exceeds the {limit}-byte limit"
                    + (f" after {'+'.join(codings)} decoding" if codings else ""),
                    source=source,
                )
            body += piece
    except (zlib.error, _UnsupportedCoding) as e:
        raise FetchError(f"cannot decode the body of {redact(str(url))}: {e}", source=source) from e
    return bytes(body)


class _UnsupportedCoding(ValueError):
    pass


def decode_stream(codings: list[str], chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Undo the ``Content-Encoding`` list (applied in order, so undone in reverse),
    lazily, yielding pieces of at most 64 KiB per coding step.

    Unknown tokens pass through as httpx does (servers send ``Content-Encoding: utf-8``);
    ``br``/``zstd``/``compress`` are known to be compressed and refused, as we never
    asked for them. Raises ``zlib.error`` on corrupt data.
    """
    stream: Iterator[bytes] = iter(chunks)
    for coding in reversed(codings):
        if coding in ("gzip", "x-gzip"):
            stream = _inflate(stream, gzip=True)
        elif coding == "deflate":
            stream = _inflate(_at_least(2, stream), gzip=False)
        elif coding in ("br", "zstd", "compress", "x-compress"):
            raise _UnsupportedCoding(f"unsupported Content-Encoding {coding!r}")
    return stream


def _inflate(chunks: Iterator[bytes], *, gzip: bool) -> Iterator[bytes]:
    decoder: Any = None
    ended = False  # a whole stream (or gzip member) has been decoded
    for chunk in chunks:
        data = chunk
        while data or decoder is not None:
            if decoder is None:
                # gzip may hold several members (RFC 1952 §2.2); anything else after the
                # end of the stream is padding or junk, ignored as gzip(1) does.
                if ended and not (gzip and b"\x1f\x8b".startswith(data[:2])):
                    return
                decoder = zlib.decompressobj(31 if gzip else _deflate_wbits(data))
            out = decoder.decompress(data, _PIECE)
            if out:
                yield out
            if decoder.eof:
                data, decoder, ended = decoder.unused_data, None, True
                continue
            data = decoder.unconsumed_tail
            if not data and len(out) < _PIECE:
                break  # input used up and no output pending: wait for the next chunk
    if decoder is not None:
        tail = decoder.flush()  # a truncated stream: keep what could be decoded
        if tail:
            yield tail


def _at_least(n: int, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The same bytes, the first chunk holding at least ``n`` of them (if there are)."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= n:
            yield head
            yield from chunks
            return
    if head:
        yield head


def _deflate_wbits(head: bytes) -> int:
    """"deflate" should be zlib-wrapped (RFC 9110 §8.4.1.2); many servers send raw
    deflate. A zlib header is CM=8 with a check sum divisible by 31 (RFC 1950 §2.2)."""
    if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
        return 15
    return -15
