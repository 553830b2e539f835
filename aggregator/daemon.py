"""One daemon per database, and how other commands find it.

Owns: the lock file ``<data_dir>/aggregator.pid`` — held with ``flock`` by the running
daemon for its whole life and holding its pid — and the two questions other commands
ask: is a daemon running on this ``data_dir`` (``running_pid``), and please re-read the
config (``signal_reload``: SIGHUP, what ``systemctl reload`` sends too).

Must not: poll, publish, or read the config file's contents.

Why a lock and not just a pid file: a pid file outlives a ``kill -9`` and its pid may be
reused by an unrelated process; an ``flock`` is released by the kernel when the process
dies, however it dies, so "locked" means "a daemon is alive" and nothing needs cleaning
up after a crash. The file is never deleted (deleting it while another process waits on
it would let two daemons hold two different files).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
from pathlib import Path

from .errors import AggregatorError

LOCK_NAME = "aggregator.pid"


class AlreadyRunning(AggregatorError):
    """Another daemon holds the lock on this data_dir."""


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCK_NAME


class DaemonLock:
    """``with DaemonLock(data_dir):`` — held for the daemon's life; raises
    :class:`AlreadyRunning` naming the other daemon's pid when it is taken."""

    def __init__(self, data_dir: Path):
        self.path = lock_path(data_dir)
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise AggregatorError(f"{self.path}: cannot open the daemon lock: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"another aggregator daemon{f' (pid {other})' if other else ''} is already running on "
                f"{self.path.parent} (lock {self.path}); stop it first, or use 'aggregator poll' beside it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def __enter__(self) -> DaemonLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(data_dir: Path) -> int | None:
    """The pid of the daemon running on ``data_dir``, or None when none is."""
    path = lock_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)  # we got it: nobody holds it
        return None
    finally:
        os.close(fd)


def signal_reload(data_dir: Path) -> int | None:
    """Send SIGHUP to the daemon running on ``data_dir``; its pid, or None when there is
    none (or it cannot be signalled: another user's process)."""
    pid = running_pid(data_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return None
    return pid
