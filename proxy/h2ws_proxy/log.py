"""Structured logging: every line is an event name plus ``key=value`` fields.

Call :func:`log_event`; the formatter renders fields as ``key=value`` (quoted when they
contain spaces) or, with ``--log-format json``, as one JSON object per line. Fields that
identify where a line comes from go first: the process's own fields (``worker=<i>
pid=<pid>`` in a worker process, see :func:`set_process_fields`), then ``conn``
(connection id) and ``stream``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Mapping

_connection_ids = itertools.count(1)
#: Fields put on every line this process logs (a worker's index and pid).
_process_fields: dict[str, object] = {}


def set_process_fields(**fields: object) -> None:
    """Put ``fields`` first on every later log line of this process (``worker=1 pid=42``)."""
    _process_fields.clear()
    _process_fields.update(fields)


def next_connection_id() -> int:
    """A process-unique id for a client connection, for log correlation."""
    return next(_connection_ids)


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log ``event`` with structured ``fields`` (rendered by the configured formatter)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


class LogThrottle:
    """At most one line per ``interval_s`` for an event a peer can repeat at will (refused
    connections, accept failures); the lines held back are counted into the next one."""

    __slots__ = ("_held_back", "_interval_s", "_next_at")

    def __init__(self, interval_s: float = 1.0) -> None:
        self._interval_s = interval_s
        self._next_at = -math.inf
        self._held_back = 0

    def allow(self, now: float) -> int | None:
        """None: hold this line back. Else: log it, with the count of lines held back."""
        if now < self._next_at:
            self._held_back += 1
            return None
        self._next_at = now + self._interval_s
        held_back, self._held_back = self._held_back, 0
        return held_back


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    own = fields if isinstance(fields, Mapping) else {}
    return {**_process_fields, **own} if _process_fields else own


def _render_value(value: object) -> str:
    text = value.decode("ascii", "backslashreplace") if isinstance(value, bytes) else str(value)
    if not text or any(ch in text for ch in ' "=\n\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    """``2026-11-27T15:51:31Z INFO tunnel.closed conn=3 stream=1 status=200 ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname, record.getMessage()]
        parts.extend(f"{key}={_render_value(value)}" for key, value in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``event`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _fields(record).items():
            payload[key] = (
                value.decode("ascii", "backslashreplace") if isinstance(value, bytes) else value
            )
        if record.exc_info:
            payload["traceback"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send the proxy's logs to stderr in ``log_format`` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    root = logging.getLogger("h2ws_proxy")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
