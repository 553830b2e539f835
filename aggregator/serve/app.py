"""The ASGI app: routes (static files, ``/healthz``, ``/metrics``) and the access log.

Owns: wiring ``files.StaticFiles`` and ``status`` into one Starlette app (``build_app``),
the ``no-store`` answers of ``/healthz`` and ``/metrics``, the one place the server reads
the clock (``_utcnow``, replaceable by a test clock), and one access-log line per request
(``AccessLog``, logger ``aggregator.access``).
Must not: decide anything about files or health itself (``files`` and ``status`` do), or
bind sockets and run uvicorn (``run`` does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from aggregator.config import Config
from aggregator.serve.files import StaticFiles
from aggregator.serve.status import StatsCollector, health, read_stats

access_log = logging.getLogger("aggregator.access")


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
