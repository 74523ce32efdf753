"""Log lines without ``logging``'s record machinery: rendered directly, written in batches.

An access line is written for every tunnel and every ordinary request, so it must cost a
few microseconds, not the ~80 of a ``LogRecord`` through a ``Formatter`` and a
``StreamHandler`` (one ``write`` syscall per line). Here a line is rendered straight from
its event name and fields (:func:`key_value_line`, :func:`json_line`) into exactly the text
``log.KeyValueFormatter`` and ``log.JsonFormatter`` give for the same record (a
differential test holds them equal), and :class:`LineSink` collects the lines. An access
line (:class:`AccessLine`) is cheaper still: its caller renders each value once, through
the sink's cache of rendered texts, and the sink writes a time stamp and one %-format of
a template it keeps per kind of line (the event, the process's fields, every key).

Rules of the sink:

* Access lines (:meth:`LineSink.access_line`, one per tunnel or request) wait in a
  buffer while :meth:`LineSink.flush_periodically` runs (``serve`` starts it), for at most
  ``FLUSH_INTERVAL_S``, or until it holds ``MAX_PENDING_CHARS``. Every other line (start,
  stop, reload, warnings: rare) is written at once, with the access lines before it: a
  line never overtakes an earlier one, and a line that announces a state (``server.listening``
  before a worker reports ready, which its supervisor then logs) is out before anything
  that follows from it.
* Without that task (before ``serve``, in a supervisor, after the drain) every line is
  written at once, so nothing is left behind when a process ends; the task flushes when it
  stops, and ``log.configure_logging``'s handler flushes at exit (``logging.shutdown``).
* Each ``write`` holds whole lines and at most ``PIPE_BUF`` bytes (one longer line goes
  alone): workers share the supervisor's stderr, and the kernel keeps a pipe write of up
  to ``PIPE_BUF`` bytes in one piece, so two workers' lines never interleave mid-line.
* Lines are buffered by the trio thread only; one from another thread (a reload's
  config loading) is written at once, under the lock ``flush`` takes.
* A stderr that fails (closed, a broken pipe) loses the lines it was given, as
  ``StreamHandler`` would; it never raises into the proxy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import select
import threading
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii
from typing import TextIO

import trio

#: How long a line may wait in the buffer: short enough for someone tailing the log.
FLUSH_INTERVAL_S = 0.05
#: A bound on the buffer (characters): past it the sink writes at once.
MAX_PENDING_CHARS = 64 * 1024
#: Bytes the kernel writes to a pipe in one piece (POSIX: at least 512; Linux: 4096).
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)

#: A key=value field value with one of these is written as a JSON string.
_needs_quotes = re.compile(r'[ "=\n\t]').search
#: The encoder of ``json.dumps(payload, default=str)``, built once.
_json_encoder = json.JSONEncoder(default=str)
#: The last second rendered, and its text (lines come many to a second).
_stamp_cache: tuple[int, str] = (-1, "")
#: A stamp's end, by millisecond: a lookup, not a format, per line.
_MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))
#: Texts a cache of rendered values holds at most (cleared when full, so that a client
#: sending new paths cannot grow it).
_RENDERED_TEXTS_MAX = 4096
#: A longer text is rendered each time: a cache full of 64 KiB paths would be 256 MiB.
_KEPT_TEXT_MAX = 512
#: Level names, without a call to logging.getLevelName per line.
_LEVEL_NAMES = {
    level: logging.getLevelName(level)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


def render_value(value: object) -> str:
    """One field's value for a key=value line: as it is, or as a JSON string when it is
    empty or holds a space, quote, ``=``, newline or tab; bytes decoded as ASCII."""
    if type(value) is int:
        return str(value)  # digits and a sign: never quoted
    if isinstance(value, str):
        text = value
    elif isinstance(value, bytes):
        text = value.decode("ascii", "backslashreplace")
    else:
        text = str(value)
    if not text or _needs_quotes(text) is not None:
        return encode_basestring_ascii(text)  # what json.dumps(text) gives
    return text


def _stamp(created: float) -> str:
    """``2026-11-27T15:51:31.042Z``."""
    global _stamp_cache
    second = int(created)
    cached_second, stamp = _stamp_cache
    if second != cached_second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        _stamp_cache = (second, stamp)
    # Milliseconds as LogRecord.msecs computes them (CPython gh-89047).
    return stamp + _MILLISECONDS[int((created - second) * 1000)]


def json_value(value: object) -> str:
    """``value`` as ``json.dumps(value, default=str)`` writes it (bytes decoded as ASCII
    first, as ``json_line`` does), without the encoder's call for the common types."""
    if type(value) is int:
        return str(value)
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    if isinstance(value, bytes):
        return encode_basestring_ascii(value.decode("ascii", "backslashreplace"))
    if value is None:
        return "null"
    return _json_encoder.encode(value)


class RenderedTexts(dict[object, str]):
    """Values as one format writes them, by value: ``texts[value]`` renders a value met for
    the first time and keeps it when it is None or a str or bytes of at most _KEPT_TEXT_MAX
    (keys no other type equals, as 1 equals True), for the next line with the same text
    (routes, backends, hosts, user agents repeat). Bounded: cleared when full."""

    __slots__ = ("_render",)

    def __init__(self, render: Callable[[object], str]) -> None:
        super().__init__()
        self._render = render

    def __missing__(self, value: object) -> str:
        rendered = self._render(value)
        if value is None or (
            (type(value) is str or type(value) is bytes) and len(value) <= _KEPT_TEXT_MAX
        ):
            if len(self) >= _RENDERED_TEXTS_MAX:
                self.clear()
            self[value] = rendered
        return rendered


#: Text values as key=value lines and JSON lines write them.
_text_values = RenderedTexts(render_value)
_json_values = RenderedTexts(json_value)


def duration_text(seconds: float) -> str:
    """``repr(round(seconds, 6))``, as a line writes a duration: from one ``.6f`` where
    that gives the same digits (both round the exact value correctly, and repr writes a
    number of at most 15 digits as the shortest text that reads back the same), which
    costs half as much. repr turns to an exponent below 1e-4."""
    if 0.0001 <= seconds < 1e9:
        text = f"{seconds:.6f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(seconds, 6))


class AccessLine:
    """One kind of access line (``tunnel.closed``, ``request.closed``...): its level, logger,
    event and keys in order. The caller renders the values (:meth:`LineSink.access_line`);
    each sink keeps the line's format."""

    __slots__ = ("event", "keys", "level", "logger_name")

    def __init__(self, level: int, logger_name: str, event: str, keys: tuple[str, ...]) -> None:
        self.level, self.logger_name, self.event, self.keys = level, logger_name, event, keys


def key_value_line(
    created: float, level_name: str, event: str, prefix: str, fields: Mapping[str, object]
) -> str:
    """``2026-11-27T15:51:31.042Z INFO tunnel.closed conn=3 ...``; ``prefix``: the process's
    fields, rendered (``" worker=1 pid=42"`` or "")."""
    parts = [f"{_stamp(created)} {level_name} {event}{prefix}"]
    append, texts = parts.append, _text_values
    # One loop, no call per field in the usual cases.
    for key, value in fields.items():
        kind = type(value)
        if kind is int:
            append(f"{key}={value}")
        elif kind is str or kind is bytes:
            append(f"{key}={texts[value]}")
        else:
            append(f"{key}={render_value(value)}")
    return " ".join(parts)


def json_line(
    created: float,
    level_name: str,
    logger_name: str,
    event: str,
    process_fields: Mapping[str, object],
    fields: Mapping[str, object],
) -> str:
    """One JSON object: ``ts``, ``level``, ``logger``, ``event``, the process's fields, then
    ``fields`` (bytes decoded as ASCII; anything else JSON lacks as its ``str``)."""
    payload: dict[str, object] = {
        "ts": created,
        "level": level_name.lower(),
        "logger": logger_name,
        "event": event,
    }
    payload.update(process_fields)
    for key, value in fields.items():
        payload[key] = (
            value.decode("ascii", "backslashreplace") if isinstance(value, bytes) else value
        )
    return _json_encoder.encode(payload)


#: An access line's format after the time stamp, and the order its values take (None: theirs).
_AccessFormat = tuple[str, tuple[int, ...] | None]


class LineSink:
    """Rendered lines on their way to one text stream (stderr), in batches."""

    def __init__(self, stream: TextIO, log_format: str = "text") -> None:
        self.json = log_format == "json"
        self._stream = stream
        self._pending: list[str] = []
        self._pending_chars = 0
        self._lock = threading.Lock()
        #: The thread that may buffer (the one running the flusher).
        self._buffering_thread: int | None = None
        #: Set by a line that finds the buffer empty: it wakes the parked flusher.
        self._wake: trio.Event | None = None
        self._process_fields: dict[str, object] = {}
        self._prefix = ""
        self._json_prefix = ""
        #: What an access line's values are rendered with (:meth:`access_line`).
        self.texts = _json_values if self.json else _text_values
        self.dash = json_value("-") if self.json else "-"
        #: The second of the last access line, and its stamp (``2026-11-27T15:51:31``).
        self._stamp_second, self._stamp = -1, ""
        #: Access line formats (and the values' order, when not theirs): a few in all.
        self._access_formats: dict[AccessLine, _AccessFormat] = {}

    def set_process_fields(self, fields: Mapping[str, object]) -> None:
        """Fields put first on every line (``worker=1 pid=42``), rendered once here."""
        self._process_fields = dict(fields)
        self._access_formats.clear()
        self._prefix = "".join(f" {key}={render_value(value)}" for key, value in fields.items())
        self._json_prefix = "".join(
            f", {encode_basestring_ascii(key)}: {json_value(value)}"
            for key, value in fields.items()
        )

    def event(
        self,
        level: int,
        logger_name: str,
        event: str,
        fields: Mapping[str, object],
        urgent: bool = True,
    ) -> None:
        """Render and write one event's line (the fast path of ``log.log_event``); written
        at once unless not ``urgent``."""
        created = time.time()
        level_name = _LEVEL_NAMES.get(level) or logging.getLevelName(level)
        process = self._process_fields
        if self.json:
            line = json_line(created, level_name, logger_name, event, process, fields)
        else:
            prefix = self._prefix
            for key in process:
                if key in fields:  # it keeps the process field's place, as in a merged dict
                    prefix, fields = "", {**process, **fields}
                    break
            line = key_value_line(created, level_name, event, prefix, fields)
        self.write(line, urgent)

    def access_line(self, line: AccessLine, values: tuple[object, ...]) -> None:
        """One ``line``: ``values`` in its keys' order, each already as this sink's format
        writes it (``texts[value]`` for a text, ``dash`` for a number that is missing,
        ``duration_text``, an int as it is) into the text :meth:`event` would write for the
        values before rendering. A time stamp and one %-format; buffered below WARNING."""
        known = self._access_formats.get(line)
        if known is None:
            known = self._access_format(line)
        template, order = known
        if order is not None:
            values = tuple([values[position] for position in order])
        created = time.time()
        if self.json:
            text = '{"ts": ' + float.__repr__(created) + template % values
        else:  # _stamp's text, without its call
            second = int(created)
            if second != self._stamp_second:
                self._stamp_second, self._stamp = second, _stamp(created)[:-5]
            millisecond = _MILLISECONDS[int((created - second) * 1000)]
            text = self._stamp + millisecond + template % values
        self.write(text, line.level >= logging.WARNING)

    def _access_format(self, line: AccessLine) -> _AccessFormat:
        """The format of ``line`` after the time stamp. The process's fields go first, as
        everywhere; one of them the line names too takes its place with the line's value,
        as in ``{**process, **fields}`` (the values then take another order)."""
        level_name = _LEVEL_NAMES.get(line.level) or logging.getLevelName(line.level)
        render: Callable[[object], str]
        if self.json:
            head = (
                f', "level": {encode_basestring_ascii(level_name.lower())}'
                f', "logger": {encode_basestring_ascii(line.logger_name)}'
                f', "event": {encode_basestring_ascii(line.event)}'
            )
            render, tail, name = json_value, "}", ", {}: ".format
            quote: Callable[[str], str] = encode_basestring_ascii
        else:
            head, render, tail = f" {level_name} {line.event}", render_value, ""
            name, quote = " {}=".format, str
        positions = {key: position for position, key in enumerate(line.keys)}
        parts, order = [head.replace("%", "%%")], []
        for process_key, value in self._process_fields.items():
            position = positions.pop(process_key, None)
            if position is None:
                parts.append((name(quote(process_key)) + render(value)).replace("%", "%%"))
            else:
                parts.append(name(quote(process_key)).replace("%", "%%") + "%s")
                order.append(position)
        for key, position in positions.items():
            parts.append(name(quote(key)).replace("%", "%%") + "%s")
            order.append(position)
        parts.append(tail)
        if len(self._access_formats) >= 64:
            self._access_formats.clear()
        reordered = tuple(order) if order != sorted(order) else None
        known = self._access_formats[line] = ("".join(parts), reordered)
        return known

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue ``line`` (no newline); written at once when ``urgent``, when the buffer is
        full, or when no flusher runs in this thread."""
        self._pending.append(line)
        self._pending_chars += len(line) + 1
        buffering = self._buffering_thread == threading.get_ident()
        if urgent or not buffering or self._pending_chars >= MAX_PENDING_CHARS:
            self.flush()
        elif self._wake is not None:
            self._wake.set()
            self._wake = None

    def flush(self) -> None:
        """Write every queued line now."""
        with self._lock:
            if not self._pending:
                return
            lines, self._pending, self._pending_chars = self._pending, [], 0
            lines.append("")  # the last line's newline
            self._write_text("\n".join(lines))

    def _write_text(self, text: str) -> None:
        stream = self._stream
        try:
            stream.flush()  # whatever was printed to it before these lines goes first
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):  # no file descriptor (a test's StringIO)
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass
            return
        data = text.encode(stream.encoding or "utf-8", stream.errors or "strict")
        with contextlib.suppress(OSError):  # stderr is gone: the lines are lost, as in logging
            _write_whole_lines(fd, data)

    async def flush_periodically(self, interval_s: float = FLUSH_INTERVAL_S) -> None:
        """Buffer this thread's lines while this runs (until cancelled), writing them at
        most ``interval_s`` after the first; flush when it stops. A second call while one
        runs only waits."""
        if self._buffering_thread is not None:
            await trio.sleep_forever()
        self._buffering_thread = threading.get_ident()
        try:
            while True:
                if not self._pending:
                    self._wake = wake = trio.Event()
                    await wake.wait()
                await trio.sleep(interval_s)
                self.flush()
        finally:
            self._buffering_thread = self._wake = None
            self.flush()


def _write_whole_lines(fd: int, data: bytes) -> None:
    """``data`` (lines, each ending in a newline) to ``fd`` in writes of whole lines, each
    at most _PIPE_BUF bytes but for a single longer line."""
    view, start, end = memoryview(data), 0, len(data)
    while start < end:
        stop = end
        if end - start > _PIPE_BUF:
            cut = data.rfind(b"\n", start, start + _PIPE_BUF)
            stop = cut + 1 if cut >= start else data.index(b"\n", start) + 1
        while start < stop:
            start += os.write(fd, view[start:stop])
