"""sd_notify(3): tell systemd the daemon is ready, alive, busy with what, or stopping.

Owns: the datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace)
and the watchdog period systemd asks for (``$WATCHDOG_USEC``, for this pid when
``$WATCHDOG_PID`` is set). Without ``$NOTIFY_SOCKET`` (not under systemd, or
``Type=simple``) every call does nothing, so the daemon runs the same from a terminal.

Must not: raise. A lost notification must never take the daemon down; the worst outcome
is systemd's own timeout, which is what the operator configured.

The protocol is a few lines of text in one datagram, so it is written here rather than
pulled in as a dependency (sdnotify on PyPI has been unmaintained since 2017; the
systemd-python bindings need libsystemd headers to build).
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address = address or None
        self._sock: socket.socket | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid or (pid.isdigit() and int(pid) == os.getpid())
        #: seconds between two WATCHDOG=1 (half the period systemd asked for), or None
        self.watchdog_interval: float | None = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when it could not be sent."""
        if self.address is None:
            return False
        message = "\n".join(f.replace("\n", " ") for f in fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
            return True
        except OSError as e:
            log.debug("sd_notify to %r failed: %s", self.address, e)
            return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        return self.send("RELOADING=1", "STATUS=reloading config")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping: finishing polls in flight")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
