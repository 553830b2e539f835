"""The HTTP server: ``output_dir`` as static files, plus ``/healthz`` and ``/metrics``.

    files.py    request path -> file, media types, validators, 304s, content-coding
                negotiation, caching headers, compressed variants (``StaticFiles``)
    status.py   the health decision (``health``) and the Prometheus exposition of
                ``Store.stats`` (``StatsCollector``), read-only from the database
    app.py      the Starlette app wiring both together, plus the access log (``build_app``)
    run.py      running uvicorn: blocking in the main thread (``serve``) or beside the
                scheduler (``ServerThread``)

Owns: answering HTTP requests for the published files, the health decision, the
Prometheus exposition of ``Store.stats``, and running uvicorn. This package re-exports the
names the CLI, the scheduler and the tests use, so ``from aggregator.serve import ...``
is the interface.
Must not: write anything (no file, no database row of its own), publish, poll, or serve a
byte from outside ``output_dir``. It reads the files the publisher swapped in atomically,
so a request sees the old file or the new one, never half of one.

Decisions (``files.py`` carries them out, except /healthz: ``status.py``):

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

from aggregator.serve.app import METRICS_TYPE, AccessLog, build_app
from aggregator.serve.files import (
    ARCHIVE_MAX_AGE,
    BROTLI_QUALITY,
    DIGEST_CACHE_ENTRIES,
    FALLBACK_TYPE,
    GZIP_LEVEL,
    MAX_CACHE_AGE,
    MIN_COMPRESS,
    VARIANT_CACHE_BYTES,
    StaticFiles,
    choose_coding,
    compressible,
    content_type,
    etag_matches,
    max_age,
    not_modified_since,
    parse_accept_encoding,
    safe_relative_path,
)
from aggregator.serve.run import GRACEFUL_SHUTDOWN, ServerThread, serve
from aggregator.serve.run import _bind as _bind  # tests bind a busy port through it
from aggregator.serve.status import (
    HEALTH_GRACE,
    StatsCollector,
    health,
    health_window,
    read_stats,
    shortest_interval,
)

__all__ = [
    "ARCHIVE_MAX_AGE",
    "BROTLI_QUALITY",
    "DIGEST_CACHE_ENTRIES",
    "FALLBACK_TYPE",
    "GRACEFUL_SHUTDOWN",
    "GZIP_LEVEL",
    "HEALTH_GRACE",
    "MAX_CACHE_AGE",
    "METRICS_TYPE",
    "MIN_COMPRESS",
    "VARIANT_CACHE_BYTES",
    "AccessLog",
    "ServerThread",
    "StaticFiles",
    "StatsCollector",
    "build_app",
    "choose_coding",
    "compressible",
    "content_type",
    "etag_matches",
    "health",
    "health_window",
    "max_age",
    "not_modified_since",
    "parse_accept_encoding",
    "read_stats",
    "safe_relative_path",
    "serve",
    "shortest_interval",
]
