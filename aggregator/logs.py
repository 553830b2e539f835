"""Log lines: one line per event on stderr, for a terminal, journald, or a log shipper.

Owns: the two formats and the logging setup every command shares.

- ``text`` (default): ``LEVEL logger: message [source=NAME]``. Under systemd
  (``$JOURNAL_STREAM`` set) each line starts with the syslog priority ``<N>``, which
  journald strips and stores as the entry's priority (``journalctl -p warning`` works),
  and no time stamp is written (journald adds its own). A traceback is folded into the
  same line (`` | `` between its lines), so one event stays one journal entry.
- ``json``: one JSON object per line — ``time`` (UTC, RFC 3339), ``level``, ``logger``,
  ``message``, ``source`` when the event concerns one, ``exception`` when there is one.

Must not: decide what is logged (the stages do) or write anywhere but stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMATS = ("text", "json")
# syslog(3) priorities journald reads from a "<N>" prefix (sd-daemon(3))
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def _one_line(text: str) -> str:
    return " | ".join(line for line in text.splitlines() if line.strip())


class TextFormatter(logging.Formatter):
    def __init__(self, journald: bool = False):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += " | " + _one_line(self.formatException(record.exc_info))
        line = f"{record.levelname} {record.name}: {_one_line(message)}"
        source = getattr(record, "source", None)
        if source and f" {source}" not in message:
            line += f" [source={source}]"
        if self.journald:
            line = f"<{_PRIORITY.get(record.levelno, 6)}>{line}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        source = getattr(record, "source", None)
        if source:
            event["source"] = source
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald: systemd sets ``$JOURNAL_STREAM`` to the
    stream's ``device:inode``, which must match stderr's (a child whose stderr was
    redirected inherits the variable but not the stream)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def setup(verbose: int = 0, fmt: str = "text") -> None:
    """Root handler on stderr. ``verbose``: 0 warnings, 1 info, 2 debug (and the
    libraries' per-request lines, which are otherwise kept at warning)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(journald=stderr_is_journal()))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "apscheduler", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
