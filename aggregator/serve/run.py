"""Running the app under uvicorn: blocking in the main thread (``serve``) or beside the
scheduler (``ServerThread``).

Owns: binding the listening socket (``_bind``: a busy port is an ``AggregatorError``),
the uvicorn settings (``_server``), signal handling for ``aggregator serve`` and the
graceful start/stop of the server thread for ``aggregator run --serve``.
Must not: answer requests itself (``app.build_app`` does) or install signal handlers
outside the main thread.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Self

from aggregator.config import Config
from aggregator.errors import AggregatorError
from aggregator.serve.app import build_app

log = logging.getLogger("aggregator.serve")

GRACEFUL_SHUTDOWN = 3  # seconds uvicorn waits for requests in flight when stopping


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one). Bound here rather than by uvicorn so that a
    busy port is an ``AggregatorError`` with a clear message, not a ``sys.exit(3)``.

    The socket is created with the protocol getaddrinfo names (IPPROTO_TCP), not 0:
    asyncio turns Nagle off on accepted connections only when ``sock.proto`` says TCP, and
    with Nagle on, every response whose headers and body are written separately waits
    ~40 ms for a delayed ACK (measured: 22 requests/s instead of hundreds)."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        if sock is not None:
            sock.close()
        raise AggregatorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e


def _server(config: Config, clock: Callable[[], datetime] | None):
    import uvicorn

    settings = uvicorn.Config(
        build_app(config, clock=clock),
        http="h11", loop="asyncio", ws="none", lifespan="off", interface="asgi3",
        log_config=None,  # keep the process's logging as the CLI set it up
        access_log=False,  # AccessLog writes the access lines
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return uvicorn.Server(settings)


def serve(config: Config, host: str | None = None, port: int | None = None, *,
          clock: Callable[[], datetime] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then return normally (``aggregator serve``).

    uvicorn (0.29+) installs its own handlers in the main thread, shuts down gracefully,
    restores the previous handlers and then *re-raises* the signal to them: with Python's
    defaults that is a KeyboardInterrupt, or death by SIGTERM (status 143). The handlers
    put in place here only ask the server to stop, so the re-raised signal is absorbed and
    the caller exits 0."""
    host = host or config.serve_host
    sock = _bind(host, config.serve_port if port is None else port)
    server = _server(config, clock)
    log.info("serving %s on http://%s:%d/ (stop with Ctrl-C or SIGTERM)", config.output_dir,
             f"[{host}]" if ":" in host else host, sock.getsockname()[1])

    def stop(signum, frame) -> None:
        server.should_exit = True

    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    log.info("server stopped")


class ServerThread:
    """The server on a thread of its own, for ``aggregator run --serve`` (the main thread
    runs the scheduler and owns the signals: uvicorn installs none outside the main thread).

        server = ServerThread(config, port=0).start()   # returns once listening
        server.port                                     # the real port
        server.stop()                                   # graceful, a few seconds at most
    """

    def __init__(self, config: Config, *, host: str | None = None, port: int | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.config = config
        self.host = host or config.serve_host
        self.port = config.serve_port if port is None else port
        self._clock = clock
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> Self:
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._server = server = _server(self.config, self._clock)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aggregator-serve",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise AggregatorError(f"the HTTP server on {self.host}:{self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # a client holding a response open: stop waiting for it
            self._server.force_exit = True
            self._thread.join(2.0)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
