r"""Structured logging: every line is an event name plus ``key=value`` fields.

Call :func:`log_event`; the formatter renders fields as ``key=value`` (quoted when they
contain spaces) or, with ``--log-format json``, as one JSON object per line. Fields that
identify where a line comes from go first: the process's own fields (``worker=<i>
pid=<pid>`` in a worker process, see :func:`set_process_fields`), then ``conn``
(connection id) and ``stream``.

Once :func:`configure_logging` has run (the CLI and each worker call it), :func:`log_event`
renders its line itself and hands it to a :class:`~h2ws_proxy.log_lines.LineSink`
(``log_lines.py``: no ``LogRecord``, lines written in batches), as long as the
``h2ws_proxy`` logger's one handler is the sink's and the emitting logger has none of its
own; anything else attached (a test capturing records, ``caplog``) gets ``LogRecord``\ s
through ``logging`` as before. Levels are ``logging``'s either way. Records that do go
through ``logging`` (``logger.warning(...)``, tracebacks) reach the same sink through
:class:`SinkHandler`, so lines keep their order.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import sys
import time
from collections.abc import Mapping

import trio

from h2ws_proxy.log_lines import AccessLine, LineSink
from h2ws_proxy.log_texts import render_value

_connection_ids = itertools.count(1)
#: Fields put on every line this process logs (a worker's index and pid).
_process_fields: dict[str, object] = {}
#: The sink :func:`configure_logging` installed, with its handler; None until then.
_sink: LineSink | None = None
_sink_handler: SinkHandler | None = None
_root = logging.getLogger("h2ws_proxy")


def set_process_fields(**fields: object) -> None:
    """Put ``fields`` first on every later log line of this process (``worker=1 pid=42``)."""
    _process_fields.clear()
    _process_fields.update(fields)
    if _sink is not None:
        _sink.set_process_fields(_process_fields)


def next_connection_id() -> int:
    """A process-unique id for a client connection, for log correlation."""
    return next(_connection_ids)


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log ``event`` with structured ``fields`` (rendered by the configured formatter)."""
    if logger.isEnabledFor(level):
        log_fields(logger, level, event, fields)


def access_sink(logger: logging.Logger) -> LineSink | None:
    """The sink, while nothing else listens to ``logger``: another handler (a test's
    capture, caplog) wants its LogRecord. An access line's caller renders its values for
    this sink (:meth:`LineSink.access_line`), or gives them to :func:`log_access_record`."""
    handlers = _root.handlers
    if len(handlers) == 1 and handlers[0] is _sink_handler and not logger.handlers:
        return _sink
    return None


def log_fields(logger: logging.Logger, level: int, event: str, fields: dict[str, object]) -> None:
    """:func:`log_event` with the fields as a dict, for a caller that has checked the
    level (``logger.isEnabledFor``) and built the dict itself: keyword arguments cost
    more than the whole line where twenty go by per line (``relay/record.py``)."""
    sink = access_sink(logger)
    if sink is not None:
        sink.event(level, logger.name, event, fields)
        return
    logger.log(level, event, extra={"fields": fields})


def log_access_record(logger: logging.Logger, line: AccessLine, values: tuple[object, ...]) -> None:
    """``line`` as a LogRecord of ``values`` (in its keys' order, as they are), for when
    something else listens (:func:`access_sink` is None). The caller has checked the level."""
    fields = dict(zip(line.keys, values, strict=True))
    logger.log(line.level, line.event, extra={"fields": fields})


async def flush_log_lines() -> None:
    """Batch this process's log lines while this runs (``serve`` runs it until it has
    drained; cancel it to stop), flushing them when it stops. Without a configured sink
    (tests serving in-process) it only waits."""
    if _sink is None:
        await trio.sleep_forever()
    else:
        await _sink.flush_periodically()


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


class KeyValueFormatter(logging.Formatter):
    """``2026-11-27T15:51:31Z INFO tunnel.closed conn=3 stream=1 status=200 ...``"""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d}Z", record.levelname, record.getMessage()]
        parts.extend(f"{key}={render_value(value)}" for key, value in _fields(record).items())
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


class SinkHandler(logging.Handler):
    """Records that go through ``logging`` after all, formatted and queued in the sink."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.sink.write(line, urgent=True)

    def flush(self) -> None:
        self.sink.flush()  # also at exit: logging.shutdown flushes every handler


def configure_logging(level: str = "info", log_format: str = "text") -> None:
    """Send the proxy's logs to stderr in ``log_format`` ("text" or "json")."""
    global _sink, _sink_handler
    if _sink is not None:
        _sink.flush()  # what the previous sink holds goes out before the new one's lines
    sink = LineSink(sys.stderr, log_format)
    sink.set_process_fields(_process_fields)
    handler = SinkHandler(sink)
    handler.setFormatter(JsonFormatter() if log_format == "json" else KeyValueFormatter())
    _sink, _sink_handler = sink, handler
    _root.handlers[:] = [handler]
    _root.setLevel(level.upper())
    _root.propagate = False
