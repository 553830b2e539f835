"""Atomic, change-aware file writes for everything the publisher emits.

Owns: turning bytes into a file so that a reader (a web server, Hexo, a feed reader's
crawler) sees either the old file or the new one, never a half-written one, and leaving a
file alone when its bytes would not change (its mtime then keeps saying "unchanged", which
keeps HTTP caches and Hexo's incremental build quiet). One file at a time
(``write_atomic``), or many made durable together (``AtomicBatch``: the feed pages of a
publish run).

Must not: know anything about feeds or posts. feedgen's ``rss_file()`` / ``atom_file()`` and
``frontmatter.dump(post, path)`` write in place (HAZARDS.md, "Publishing"), so every
output goes through here instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from aggregator.errors import PublishError

#: rw-r--r--: published files are read by a web server running as another user.
FILE_MODE = 0o644


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        if os.stat(path).st_size != len(data):
            return False
        with open(path, "rb") as handle:
            return handle.read() == data
    except OSError:  # missing, or unreadable (a file where a folder should be...): the write says why
        return False


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable (POSIX: a rename is a change to the directory).
    # Some file systems refuse O_RDONLY fsync on a directory; durability of the rename
    # is then best effort, the atomicity is not affected.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, durable: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically; return False (and touch nothing) when the
    file already holds exactly these bytes, True when it was (re)written.

    Creates missing parent folders. The temporary file lives in the target's folder so
    that ``os.replace`` is a rename on one file system, never a copy.
    ``durable=False`` skips the two fsyncs: the rename is still atomic for readers, only a
    power cut may lose the newest version. Posts use it — they are rebuilt from the
    database by ``aggregator publish``, and two fsyncs per post (~9 ms) would dominate a
    first import of thousands of articles.
    Raises :class:`PublishError` when the file cannot be written.

    Cost (issue 8, thousands of posts per cold poll): plain ``os`` calls on the path
    string, the folder created only when the temporary file cannot be (nearly always it
    exists), no buffered file object. The temporary name stays mkstemp's random one: a
    name made of the target and the pid saved ~2.5 µs per file (measured on tmpfs), next
    to the 300-600 µs of kernel time the new inode itself costs on the ext4 disk we
    measured on, not worth a second naming scheme and its collision fallback.
    """
    target = os.fspath(path)
    if _same_bytes(target, data):
        return False
    folder, name = os.path.split(target)
    folder = folder or "."  # a bare file name: the current folder (and its fsync)
    tmp_name: str | None = None
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        except FileNotFoundError:  # the folder does not exist yet
            Path(folder).mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        try:
            # mkstemp creates 0600; a published file must be readable by the web server.
            os.fchmod(fd, FILE_MODE)
            _write_all(fd, data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as e:
        raise PublishError(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    if durable:
        _fsync_dir(folder)
    return True


class AtomicBatch:
    """Many atomic writes made durable together: ``stage`` each file, then ``commit``.

    ``write_atomic`` pays two fsyncs per file, and each fsync waits for the disk to flush
    its cache; a cold publish writes ~1,400 feed documents (issue 8). Here every document
    goes to its temporary file first (no fsync), ``commit`` then fsyncs them all on
    ``WRITERS`` threads (waits that overlap instead of following each other), renames
    every file into place, and fsyncs each folder whose entries changed once (and the
    parent of each folder it created) instead of once per file.
    The promise is ``write_atomic``'s: a reader sees the old file or the new one, and
    after a crash each file is the old one or the new one, complete (no file is renamed
    before its data is durable). A file whose data cannot be made durable is not renamed:
    it is reported failed and its old file stays.
    Measured on the 1,358 files (113 MB) of a 4,239-article cold publish (ext4, 3 runs
    each): ``write_atomic`` on 4 threads 0.46-0.60 s CPU, 0.60-0.71 s wall; a batch
    0.36-0.47 s CPU. Not ``syncfs(2)`` (one call per file system, 0.27-0.37 s CPU): it
    writes back every dirty page of the file system, other programs' too, so on a shared
    busy disk a publish would wait for their data, and before Linux 5.8 it reports no
    write-back error at all.

    Use it as a context manager: temporary files not committed (an exception while
    rendering) are removed on the way out. One thread at a time.
    """

    #: threads fsyncing files where there is no syncfs (a fsync mostly waits for the disk)
    WRITERS = 4

    def __init__(self) -> None:
        self._staged: list[tuple[str, str]] = []  # (temporary file, target)
        self._folders: set[str] = set()  # folders whose entries the renames change
        self._parents: set[str] = set()  # folders that gained a folder created here

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def stage(self, path: str | os.PathLike[str], data: bytes) -> bool:
        """Write ``data`` to a temporary file beside ``path``; False (and nothing staged)
        when ``path`` already holds exactly these bytes. Raises :class:`PublishError`
        when the file cannot be written (nothing staged for it then)."""
        target = os.fspath(path)
        if _same_bytes(target, data):
            return False
        folder, name = os.path.split(target)
        folder = folder or "."
        tmp_name: str | None = None
        try:
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            except FileNotFoundError:
                self._parents.update(_make_folder(folder))
                fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            try:
                os.fchmod(fd, FILE_MODE)
                _write_all(fd, data)
            finally:
                os.close(fd)
        except OSError as e:
            if tmp_name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_name)
            raise PublishError(f"cannot write {target}: {e.strerror or e}") from e
        self._staged.append((tmp_name, target))
        self._folders.add(folder)
        return True

    def commit(self) -> dict[str, str]:
        """Make the staged files durable and rename them into place; returns target ->
        why it was not replaced (its old file stays), empty when every one was."""
        staged, self._staged = self._staged, []
        folders, self._folders = self._folders, set()
        parents, self._parents = self._parents, set()
        failed = _fsync_each(staged)
        for tmp_name, target in staged:
            if target not in failed:
                try:
                    os.replace(tmp_name, target)
                    continue
                except OSError as e:
                    failed[target] = f"cannot write {target}: {e.strerror or e}"
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        if len(failed) < len(staged):
            _each(_fsync_dir, sorted(folders | parents))
        return failed

    def discard(self) -> None:
        """Remove the temporary files of writes not committed."""
        staged, self._staged = self._staged, []
        self._folders.clear()
        self._parents.clear()
        for tmp_name, _target in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _make_folder(folder: str) -> list[str]:
    """Create ``folder`` and its missing ancestors; the folders whose entries that
    changed (each created folder's parent)."""
    missing = []
    probe = os.path.abspath(folder)
    while not os.path.isdir(probe):
        missing.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    Path(folder).mkdir(parents=True, exist_ok=True)
    return [os.path.dirname(m) for m in missing]


def _each(fn: Callable, items: Iterable) -> None:
    """``fn`` on every item, on up to ``WRITERS`` threads (each call mostly waits for the disk)."""
    items = list(items)
    if len(items) < 2:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(min(AtomicBatch.WRITERS, len(items)), thread_name_prefix="publish-sync") as pool:
        for _ in pool.map(fn, items):
            pass


def _fsync_each(staged: list[tuple[str, str]]) -> dict[str, str]:
    failed: dict[str, str] = {}

    def sync(item: tuple[str, str]) -> None:
        tmp_name, target = item
        try:
            fd = os.open(tmp_name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            failed[target] = f"cannot write {target}: {e.strerror or e}"

    _each(sync, staged)
    return failed


#: a temporary file older than this is a leftover of an interrupted write (a crash, a
#: kill -9); younger ones may belong to a publish running right now in another process
STALE_TEMP_SECONDS = 600


def remove_stale_temp_files(folder: Path, *, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete ``.<name>.*.tmp`` files that ``write_atomic`` left behind; returns how many.
    Only files of that exact shape are touched."""
    import re
    import time

    pattern = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")  # mkstemp(prefix=".<name>.", suffix=".tmp")
    removed = 0
    limit = time.time() - older_than
    if not Path(folder).is_dir():
        return 0
    for path in Path(folder).rglob(".*.tmp"):
        try:
            if pattern.match(path.name) and path.is_file() and path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
