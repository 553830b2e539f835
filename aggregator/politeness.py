"""How we behave towards a host: what a source may send it, and how hard we press it.

Many sources can live on one host (an RSSHub instance serves hundreds of routes from one
name), so pressure is limited per *host*, not per source: :class:`HostLimiter` lets at
most ``max_per_host`` requests run at once against a host, starts them at least
``min_gap`` seconds apart, in arrival order (FIFO, so no waiter starves), and keeps a
penalty box of hosts that answered 429/503 with ``Retry-After`` (RFC 9110 §10.2.3,
RFC 6585 §4), so the other routes of that host are not tried in the same cycle.
:func:`source_headers` is the rule for a source's own request headers.

Must not: do I/O, know our error classes (``fetch`` keys hosts, decides when to defer and
maps :class:`HostWaitTimeout`), or keep anything beyond the process's memory (a restart
forgets the box: the scheduler keeps per-source backoff in SQLite).
Thread-safe; one limiter is shared by every worker thread of a ``Fetcher``.
"""

from __future__ import annotations

import contextlib
import functools
from datetime import datetime, timezone
import itertools
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: Longest we honour a ``Retry-After``: a bogus "come back in a year" must not silence a
#: host for good, and a longer pause is the scheduler's business (it persists backoff).
MAX_DEFER = 2 * 24 * 3600.0


class HostWaitTimeout(Exception):
    """No slot for ``host`` came free before the deadline; ``waited`` seconds were spent."""

    def __init__(self, host: str, waited: float, max_per_host: int, min_gap: float):
        super().__init__(f"no free slot for {host} after {waited:.2f} s")
        self.host = host
        self.waited = waited
        self.max_per_host = max_per_host
        self.min_gap = min_gap


@dataclass
class _Host:
    active: int = 0
    next_start: float = 0.0  # monotonic time before which no request may start
    queue: deque[int] = field(default_factory=deque)  # tickets of waiting threads, FIFO
    blocked_until: float | None = None  # the penalty box


class HostLimiter:
    """At most ``max_per_host`` concurrent requests per host, starts ``min_gap`` s apart.

    Hosts are opaque keys (``fetch`` uses lower-cased ``hostname:port``)::

        with limiter.slot("rsshub.example:443", deadline):   # may wait; raises HostWaitTimeout
            ... one request ...
    """

    def __init__(self, max_per_host: int = 2, min_gap: float = 0.0):
        if max_per_host < 1:
            raise ValueError(f"max_per_host must be at least 1, not {max_per_host}")
        if min_gap < 0 or not math.isfinite(min_gap):
            raise ValueError(f"min_gap must be a finite number of seconds >= 0, not {min_gap}")
        self.max_per_host = max_per_host
        self.min_gap = min_gap
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)  # notified whenever a slot or turn frees
        self._hosts: dict[str, _Host] = {}
        self._tickets = itertools.count()

    def __repr__(self) -> str:
        return f"HostLimiter(max_per_host={self.max_per_host}, min_gap={self.min_gap:g})"

    # --- slots -----------------------------------------------------------------------

    @contextlib.contextmanager
    def slot(self, host: str, deadline: float) -> Iterator[float]:
        """Hold one of ``host``'s slots for the block; yields the seconds spent waiting.

        Raises :class:`HostWaitTimeout` (having waited) when ``time.monotonic()`` reaches
        ``deadline`` first: the wait is part of the fetch's total deadline.
        """
        waited = self._acquire(host, deadline)
        try:
            yield waited
        finally:
            self._release(host)

    def _acquire(self, host: str, deadline: float) -> float:
        start = time.monotonic()
        with self._lock:
            state = self._hosts.get(host)
            if state is None:
                self._prune(start)
                state = self._hosts[host] = _Host()
            ticket = next(self._tickets)
            state.queue.append(ticket)
            try:
                while True:
                    now = time.monotonic()
                    if state.queue[0] == ticket and state.active < self.max_per_host:
                        if now >= state.next_start:
                            break
                        wake = state.next_start  # our turn, but too soon after the last start
                    else:
                        wake = deadline  # until notified
                    if now >= deadline:
                        raise HostWaitTimeout(host, now - start, self.max_per_host, self.min_gap)
                    self._ready.wait(min(wake, deadline) - now)
            except BaseException:
                state.queue.remove(ticket)
                self._ready.notify_all()  # the next in line may now be at the head
                raise
            state.queue.popleft()
            state.active += 1
            state.next_start = now + self.min_gap
            self._ready.notify_all()  # the next in line may take a second slot
            return now - start

    def _release(self, host: str) -> None:
        with self._lock:
            self._hosts[host].active -= 1
            self._ready.notify_all()

    def _prune(self, now: float) -> None:
        """Forget idle hosts once there are many (redirects can name any host)."""
        if len(self._hosts) < 1024:
            return
        for key, state in list(self._hosts.items()):
            idle = not state.active and not state.queue and state.next_start <= now
            if idle and (state.blocked_until is None or state.blocked_until <= now):
                del self._hosts[key]

    # --- the penalty box -------------------------------------------------------------

    def defer(self, host: str, until: float) -> None:
        """Refuse requests to ``host`` until ``time.monotonic() >= until`` (capped at
        :data:`MAX_DEFER` from now). A later, shorter deferral does not shorten the box."""
        until = min(until, time.monotonic() + MAX_DEFER)
        with self._lock:
            state = self._hosts.setdefault(host, _Host())
            if state.blocked_until is None or until > state.blocked_until:
                state.blocked_until = until

    def blocked_until(self, host: str) -> float | None:
        """The monotonic time until which ``host`` is in the penalty box, or None."""
        with self._lock:
            state = self._hosts.get(host)
            if state is None or state.blocked_until is None:
                return None
            if state.blocked_until <= time.monotonic():
                state.blocked_until = None
                return None
            return state.blocked_until


_DEFAULT_PORTS = {"http": 80, "https": 443}


def host_key(url: Any) -> str:
    """The limiter key of ``url`` (an httpx.URL): lower-cased ``host:port``, default
    port filled in, so ``http://A.example/`` and ``http://a.example:80/`` share slots."""
    host = url.host.lower()
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- Retry-After ---------------------------------------------------------------------


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, given the wall-clock ``now``, capped
    at :data:`MAX_DEFER`. One parser for the header: ``schedule.parse_retry_after``
    (RFC 9110 §10.2.3), so the host penalty box and the stored next poll always agree."""
    from .schedule import parse_retry_after

    seconds = parse_retry_after(value, datetime.fromtimestamp(now, timezone.utc))
    return None if seconds is None else min(seconds, MAX_DEFER)


def seconds_text(seconds: float) -> str:
    """``seconds`` rounded up, as delay-seconds (so it is itself a valid Retry-After)."""
    return str(max(math.ceil(seconds), 0))


# --- a source's own headers ------------------------------------------------------------

#: Headers a source's ``RequestOptions.headers`` may not set; they are dropped (with a
#: warning naming the header, never its value). The fetcher owns the target (Host), the
#: codings it can decode with a cap, the conditional GET and whole-body semantics (If-*,
#: Range: a 206 or 412 would not be a feed), and message framing; hop-by-hop headers
#: (RFC 9110 §7.6.1) mean nothing end to end, and proxy credentials go in the proxy URL.
#: Everything else passes (Cookie, Authorization, Referer, Accept, ...); a ``User-Agent``
#: header acts like ``RequestOptions.user_agent`` (which wins if both are set).
FETCHER_OWNED_HEADERS = frozenset(
    {"host", "accept-encoding", "if-none-match", "if-modified-since", "if-match", "if-unmodified-since",
     "if-range", "range", "content-length", "transfer-encoding", "expect", "connection", "keep-alive",
     "proxy-connection", "te", "trailer", "upgrade", "proxy-authorization", "proxy-authenticate"}
)  # fmt: skip
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 §5.6.2
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 §5.5: no CTL but HTAB


@functools.lru_cache(maxsize=256)  # warn once per source, not once per poll
def source_headers(
    headers: tuple[tuple[str, str], ...], source: str | None = None
) -> tuple[str | None, tuple[tuple[str, bytes], ...]]:
    """A source's headers, checked: (its User-Agent or None, the others to send, values
    UTF-8 encoded), without those in :data:`FETCHER_OWNED_HEADERS`.

    Raises ValueError naming the header, never quoting its value, for a malformed one
    (h11 would quote the value in its complaint, and values hold secrets).
    """
    user_agent, kept = None, []
    for name, value in headers:
        if not _TOKEN.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP field name")
        if _BAD_VALUE.search(value):
            raise ValueError(f"the value of header {name!r} contains a control character")
        if name.lower() in FETCHER_OWNED_HEADERS:
            log.warning("%s: header %s is set by the fetcher; this source's value is ignored", source or "-", name)
        elif name.lower() == "user-agent":
            user_agent = value
        elif not value.isascii() and not _utf8(value):
            raise ValueError(f"the value of header {name!r} is not encodable as UTF-8")
        else:
            kept.append((name, value.strip().encode("utf-8")))
    return user_agent, tuple(kept)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def same_origin(origin: Any, url: Any) -> bool:
    """Whether a source's own headers (Cookie, Authorization...) may go to ``url`` (an
    httpx.URL, as ``origin``): only to the source's configured origin, or that host's
    http->https upgrade on default ports, the rule browsers and httpx apply to
    Authorization on redirects. A redirect elsewhere gets no credentials."""
    if (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port):
        return True
    return url.host == origin.host and (origin.scheme, url.scheme) == ("http", "https") and origin.port is url.port is None
