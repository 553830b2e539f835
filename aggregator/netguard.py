"""The network layer under both fetch paths: which addresses we may reach, and for how long.

``wire`` (direct requests, http.client) connects through :func:`vetted_addresses` and
bounds every socket operation with :func:`clip`; httpx (proxied requests) gets the same
through the httpcore backend below.

Owns the SSRF address policy (:func:`is_blocked_address`, a pure function), name
resolution, and an ``httpcore`` network backend (:class:`GuardedBackend`) that resolves
the host itself, vets *every* resolved address and then connects to the vetted IP — so
the check happens at connect time, on every hop and every new connection, and DNS
rebinding cannot slip a second, private answer in between (HAZARDS.md, "Fetching").
TLS still uses the URL's host name for SNI and certificate checks: httpcore passes it to
``start_tls`` on the stream we return.

The same backend enforces the total fetch deadline: every connect, read, write and TLS
handshake gets at most the time left before the deadline set with :func:`deadline_at`,
because httpx's timeouts are per operation and a server trickling one byte every 0.25 s
never trips them.

With a proxy (:func:`guarded_pool`), the backend connects to the proxy only, and the
policy is not applied to it: the proxy is chosen by the operator (often on loopback: a
local Tor or Privoxy), and the target's name is resolved by the proxy, out of our sight;
:func:`vet_unresolved` judges what can be judged without resolving (see ``fetch.Fetcher``).

It also holds the bounded content decoder (:func:`decode_stream`): the third defence of
HAZARDS.md "Fetching", below httpx for the same reason (httpx's decoders have no bound).

Must not: know about target URLs, redirects, HTTP or our error classes (``fetch`` maps
:class:`AddressBlocked`, :class:`UnsupportedCoding` and httpcore's exceptions to
``aggregator.errors``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

import httpcore

T = TypeVar("T")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> addresses`` as strings, in the order to try them.
Resolver = Callable[[str, int], Sequence[str]]
#: ``ip -> reason it is refused`` or None; :func:`is_blocked_address` is the default.
AddressPolicy = Callable[[IPAddress], "str | None"]


# --- address policy ------------------------------------------------------------------
# Explicit ranges from the IANA special-purpose registries (RFC 6890 and successors).
# `ipaddress.is_private` misses 100.64.0.0/10 and `is_global` is True for several of the
# IPv6 forms below, so we do not rely on them (HAZARDS.md); they are only a last net.

_V4_DENY = (
    ("0.0.0.0/8", "'this network' (RFC 791)"),
    ("10.0.0.0/8", "private network (RFC 1918)"),
    ("100.64.0.0/10", "shared/CGNAT space (RFC 6598)"),  # 100.100.100.200: Alibaba metadata
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),  # 169.254.169.254: cloud metadata
    ("172.16.0.0/12", "private network (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private network (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("255.255.255.255/32", "limited broadcast (RFC 919)"),
)

_V6_DENY = (
    ("::/128", "unspecified address (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::/96", "IPv4-compatible, deprecated (RFC 4291)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001:10::/28", "ORCHID (RFC 4843)"),
    ("2001:20::/28", "ORCHIDv2 (RFC 7343)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "SRv6 SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
)


def _table(rows: Iterable[tuple[str, str]]) -> tuple[tuple[Any, str], ...]:
    # most specific first, so 255.255.255.255 says "broadcast", not "reserved"
    nets = [(ipaddress.ip_network(net), reason) for net, reason in rows]
    return tuple(sorted(nets, key=lambda row: -row[0].prefixlen))


_V4_TABLE = _table(_V4_DENY)
_V6_TABLE = _table(_V6_DENY)
_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")


def is_blocked_address(ip: IPAddress | str) -> str | None:
    """Why a fetch must not connect to ``ip``, or None when it is a public address.

    IPv6 forms that carry an IPv4 address (mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo ``2001::/32``) are judged by the IPv4
    address they lead to.
    """
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        for net, reason in _V4_TABLE:
            if ip in net:
                return reason
        return None if ip.is_global else "not globally reachable"

    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        form, inner = embedded
        for v4 in inner:
            reason = is_blocked_address(v4)
            if reason:
                return f"{reason}, embedded as {v4} in {form}"
        return None
    for net, reason in _V6_TABLE:
        if ip in net:
            return reason
    if ip not in _GLOBAL_UNICAST:
        return "reserved (outside global unicast 2000::/3)"
    return None if ip.is_global else "not globally reachable"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """The IPv4 addresses an IPv6 address leads to, with the name of the form."""
    if ip in _V4_MAPPED:
        return "IPv4-mapped ::ffff:0:0/96", (ip.ipv4_mapped,)  # type: ignore[return-value]
    if ip in _NAT64:
        return "NAT64 64:ff9b::/96 (RFC 6052)", (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return "6to4 2002::/16 (RFC 3056)", (ip.sixtofour,)
    if ip.teredo is not None:
        server, client = ip.teredo
        return "Teredo 2001::/32 (RFC 4380)", (client, server)
    return None


# --- total deadline ------------------------------------------------------------------
# A context variable, not an attribute: one backend serves every thread of the pool,
# and httpcore does a request's socket I/O in the thread that sent it.

_DEADLINE: ContextVar[float | None] = ContextVar("aggregator_fetch_deadline", default=None)


@contextlib.contextmanager
def deadline_at(when: float) -> Iterator[None]:
    """Bound all network I/O of this thread inside the block by ``time.monotonic() <= when``."""
    token = _DEADLINE.set(when)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def clip(timeout: float | None, exc: type[Exception]) -> float | None:
    """``timeout`` shortened to the time left before this thread's deadline (set with
    :func:`deadline_at`); raise ``exc`` if none is left."""
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise exc("total fetch deadline exceeded")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every operation ends by the deadline (headers and body alike)."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, clip(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, clip(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, clip(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


# --- resolving and connecting --------------------------------------------------------


class AddressBlocked(Exception):
    """``host`` resolved to ``address``, which the policy refuses for ``reason``."""

    def __init__(self, host: str, address: str, reason: str):
        super().__init__(f"{host} resolves to {address}: {reason}")
        self.host = host
        self.address = address
        self.reason = reason


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for a TCP connection, first-seen order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Unresolvable(Exception):
    """``host`` has no address we could use; the text says why ("cannot resolve ...")."""


def vetted_addresses(host: str, port: int, policy: AddressPolicy | None, resolver: Resolver) -> list[IPAddress]:
    """Every address of ``host``, in the order to try them, all allowed by ``policy``
    (None = allow all). Raises :class:`Unresolvable`, or :class:`AddressBlocked` when
    *any* address is refused: a public name has no reason to also point into private
    space, and rebinding attacks rely on mixed answers. Both connection paths (httpcore's
    backend below, ``wire`` for direct requests) connect only to what this returns."""
    try:
        # getaddrinfo cannot be interrupted: a hanging DNS server can outlast the
        # deadline by the resolver's own timeout (resolv.conf), not more.
        addresses = [ipaddress.ip_address(a) for a in resolver(host, port)]
    except (OSError, UnicodeError) as e:
        raise Unresolvable(f"cannot resolve {host}: {e}") from e
    if not addresses:
        raise Unresolvable(f"cannot resolve {host}: no address")
    if policy is not None:
        for ip in addresses:
            reason = policy(ip)
            if reason:
                raise AddressBlocked(host, str(ip), reason)
    return addresses


def connect_vetted(host: str, port: int, policy: AddressPolicy | None, resolver: Resolver,
                   connect: Callable[[str], T], refused: type[Exception]) -> T:
    """``connect(ip)`` to each of :func:`vetted_addresses` in turn (a numeric host: no
    second DNS lookup), the first that succeeds; ``refused`` (refused, unreachable) moves
    on to the next address, and the last one's is raised. Raises what
    :func:`vetted_addresses` raises, and whatever else ``connect`` raises (a timeout
    does not try the next address: the deadline is shared)."""
    failure: Exception | None = None
    for ip in vetted_addresses(host, port, policy, resolver):
        try:
            return connect(str(ip))
        except refused as e:
            failure = e
    assert failure is not None  # vetted_addresses never returns an empty list
    raise failure


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve, vet every address with ``policy`` (None = allow all; see
    :func:`vetted_addresses`), connect to an IP."""

    def __init__(self, policy: AddressPolicy | None, resolver: Resolver = system_resolver):
        self._policy = policy
        self._resolver = resolver
        self._sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        clip(timeout, httpcore.ConnectTimeout)  # fail fast when already out of time

        def connect(ip: str) -> httpcore.NetworkStream:
            return self._sockets.connect_tcp(ip, port, timeout=clip(timeout, httpcore.ConnectTimeout),
                                             local_address=local_address, socket_options=socket_options)

        try:
            return _DeadlineStream(connect_vetted(host, port, self._policy, self._resolver, connect, httpcore.ConnectError))
        except Unresolvable as e:
            raise httpcore.ConnectError(str(e)) from e.__cause__

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by the fetcher")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def vet_unresolved(host: str, policy: AddressPolicy) -> None:
    """Judge a host we will not resolve ourselves (a proxy will): refuse a numeric host
    (any form ``getaddrinfo`` reads without DNS: ``2130706433``, ``0x7f.1``, ``[::1]``)
    the policy refuses, and ``localhost`` names (RFC 6761 §6.3). Raises AddressBlocked."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        raise AddressBlocked(host, host, "loopback (RFC 6761 localhost name)")
    try:
        infos = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return  # a name: the proxy resolves it, out of our sight
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        reason = policy(ip)
        if reason:
            raise AddressBlocked(host, str(ip), reason)


def guarded_pool(
    proxy: str | None, policy: AddressPolicy | None, resolver: Resolver, ssl_context: Any, max_connections: int
) -> httpcore.ConnectionPool:
    """An httpcore pool whose sockets all come from a :class:`GuardedBackend` — to the
    target, or to ``proxy`` (http(s)://, socks5(h)://; userinfo becomes proxy auth).
    Raises ValueError/ImportError (no socksio) for a proxy it cannot use."""
    common: dict[str, Any] = dict(
        ssl_context=ssl_context,
        max_connections=max_connections,
        max_keepalive_connections=max_connections // 2,
        keepalive_expiry=30.0,
        network_backend=GuardedBackend(policy, resolver),
    )
    if proxy is None:
        return httpcore.ConnectionPool(**common)
    import httpx  # only for its proxy URL parsing

    p = httpx.Proxy(proxy)
    where = httpcore.URL(scheme=p.url.raw_scheme, host=p.url.raw_host, port=p.url.port, target=p.url.raw_path)
    if p.url.scheme in ("http", "https"):
        return httpcore.HTTPProxy(proxy_url=where, proxy_auth=p.raw_auth, **common)
    import socksio  # noqa: F401 -- httpcore's stand-in raises RuntimeError without it

    return httpcore.SOCKSProxy(proxy_url=where, proxy_auth=p.raw_auth, **common)


# --- bounded content decoding ------------------------------------------------------
# The gzip-bomb defence (HAZARDS.md): no inflate step may produce more than _PIECE bytes.

_PIECE = 64 * 1024


class UnsupportedCoding(ValueError):
    """A Content-Encoding we know is compressed but never asked for."""


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
            raise UnsupportedCoding(f"unsupported Content-Encoding {coding!r}")
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
