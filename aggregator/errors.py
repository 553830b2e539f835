"""One exception root for everything the project raises on purpose.

Third-party exceptions (httpx, sqlite3, lxml, feedparser's surprises) are wrapped where
they occur (``raise FetchError(...) from e``) so callers only ever catch ``AggregatorError``.
Every error that concerns one source carries that source's name, and its ``str()`` is a
one-line message fit for ``list-sources`` and the log.
"""

from __future__ import annotations


class AggregatorError(Exception):
    """Root of all expected errors. Anything else escaping a stage is a bug."""

    #: short machine-readable kind, stored with the source's last error
    kind = "error"

    def __init__(self, message: str, *, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.source = source

    def __str__(self) -> str:
        if self.source:
            return f"{self.source}: {self.message}"
        return self.message


class ConfigError(AggregatorError):
    """config.toml is missing, malformed, or has a bad key. CLI exit status 2."""

    kind = "config"


class SourceError(AggregatorError):
    """A problem with one source; recorded on that source, never fatal to a cycle."""

    kind = "source"


class FetchError(SourceError):
    """Getting the bytes failed (network, HTTP status, limits, policy)."""

    kind = "fetch"


class NetworkError(FetchError):
    kind = "network"


class TimeoutError_(FetchError):
    """Connect/read timeout or the total deadline ran out."""

    kind = "timeout"


class HTTPStatusError(FetchError):
    """A final non-2xx, non-304 answer. ``retry_after`` is the raw ``Retry-After`` value
    of a 429/503 (RFC 9110 §10.2.3: seconds or an HTTP-date), for the scheduler."""

    kind = "http"

    def __init__(self, message: str, *, status: int, source: str | None = None, retry_after: str | None = None):
        super().__init__(message, source=source)
        self.status = status
        self.retry_after = retry_after
        # "http-4xx" (our request or the URL is wrong: look at it) vs "http-5xx" (their
        # server is struggling: wait) — kept with the source's last error.
        if 400 <= status < 600:
            self.kind = f"http-{status // 100}xx"

    def __reduce__(self):  # keyword-only fields: the default pickling would call cls(message)
        import functools

        rebuild = functools.partial(type(self), status=self.status, source=self.source, retry_after=self.retry_after)
        return rebuild, (self.message,), self.__dict__


class RouteFailedError(FetchError):
    """Every RSSHub instance failed for an ``rsshub://`` route. ``kind`` is that of the
    last instance's error (what the operator most likely has to look at)."""

    def __init__(self, message: str, *, kind: str, source: str | None = None):
        super().__init__(message, source=source)
        self.kind = kind


class TooLargeError(FetchError):
    kind = "too-large"


class BlockedAddressError(FetchError):
    """The URL resolves to a private/loopback/reserved address and that is not allowed."""

    kind = "blocked"


class TooManyRedirectsError(FetchError):
    kind = "redirects"


class ParseError(SourceError):
    """The bytes are not a feed we can read."""

    kind = "parse"


class NotAFeedError(ParseError):
    """The bytes are something else (HTML page, empty body, plain text...)."""

    kind = "not-a-feed"


class StoreError(AggregatorError):
    """The database could not be read or written."""

    kind = "store"


class PublishError(AggregatorError):
    """A feed or post file could not be generated or written."""

    kind = "publish"
