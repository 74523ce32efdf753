"""Log lines without ``logging``'s record machinery: rendered directly, written in batches.

An access line is written for every tunnel and every ordinary request, so it must cost a
few microseconds, not the ~80 of a ``LogRecord`` through a ``Formatter`` and a
``StreamHandler`` (one ``write`` syscall per line). Here a line is rendered straight from
its event name and fields (``log_texts.key_value_line``, ``json_line``) into exactly the text
``log.KeyValueFormatter`` and ``log.JsonFormatter`` give for the same record (a
differential test holds them equal), and :class:`LineSink` collects the lines. An access
line (:class:`AccessLine`) is cheaper still: its caller renders each value once, through
the sink's cache of rendered texts, and the sink writes a time stamp and one %-format of
a template it keeps per kind of line (the event, the process's fields, every key). A
client repeats its requests, so most of a line's values are those of a line before: the
second time its caller's key comes (everything those values were rendered from), the sink
keeps the line's texts with them written in, and later lines are the time stamp and four
values (stream, bytes each way, duration) between those texts (``keep_access_template``;
at most ``_KEPT_TEMPLATES_MAX``, cleared when full or when the process's fields change;
none over ``_KEPT_TEMPLATE_CHARS_MAX`` characters of texts, which a client chooses).

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
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from json.encoder import encode_basestring_ascii
from math import floor
from typing import TextIO

import trio

from h2ws_proxy.log_texts import (
    JSON_VALUES,
    LEVEL_NAMES,
    MILLISECONDS,
    TEXT_VALUES,
    json_line,
    json_value,
    key_value_line,
    render_value,
    stamp,
)

#: The running thread's id, without the ``threading`` module's attribute hop.
get_ident = threading.get_ident
#: How long a line may wait in the buffer: short enough for someone tailing the log.
FLUSH_INTERVAL_S = 0.05
#: A bound on the buffer (characters): past it the sink writes at once.
MAX_PENDING_CHARS = 64 * 1024
#: Bytes the kernel writes to a pipe in one piece (POSIX: at least 512; Linux: 4096).
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)

#: Access line templates a sink keeps at most.
_KEPT_TEMPLATES_MAX = 256
#: The characters one kept template may hold in its key's texts, and apart in its pieces. A
#: client chooses the method, path, host and user agent up to ``max_header_list_bytes`` (64
#: KiB, up to 16 MiB): a line over this is written by its format each time, never kept, so
#: the kept templates hold at most 256 x 2 x 2,048 characters (1 MiB), whatever a key holds.
_KEPT_TEMPLATE_CHARS_MAX = 2048


class AccessLine:
    """One kind of access line (``tunnel.closed``, ``request.closed``...): its level, logger,
    event and keys in order. The caller renders the values (:meth:`LineSink.access_line`);
    each sink keeps the line's format."""

    __slots__ = ("event", "keys", "level", "logger_name")

    def __init__(self, level: int, logger_name: str, event: str, keys: tuple[str, ...]) -> None:
        self.level, self.logger_name, self.event, self.keys = level, logger_name, event, keys


#: What a kept template's key may hold besides texts (which count against the budget).
_KEY_SCALARS = frozenset({AccessLine, int, bool, type(None)})
#: An access line's format after the time stamp, the order its values take (None: theirs),
#: and its pieces (``LineSink._access_pieces``).
_AccessFormat = tuple[str, tuple[int, ...] | None, list[str], list[int]]


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
        self.texts = JSON_VALUES if self.json else TEXT_VALUES
        self.dash = json_value("-") if self.json else "-"
        #: The second of the last access line (its start and the next second's, as floats:
        #: a line of the same second tells by two comparisons, with no ``int`` call), and its
        #: stamp (``2026-11-27T15:51:31``).
        self._stamp_second, self._stamp_next, self._stamp = -1.0, -1.0, ""
        #: Access line formats (and the values' order, when not theirs): a few in all.
        self._access_formats: dict[AccessLine, _AccessFormat] = {}
        #: Access lines with most of their values written in, by what those were rendered
        #: from (``keep_access_template``): a client repeats its requests. Bounded in
        #: number and in characters.
        self.kept_access_templates: dict[tuple[Hashable, ...], tuple[str, ...]] = {}

    def set_process_fields(self, fields: Mapping[str, object]) -> None:
        """Fields put first on every line (``worker=1 pid=42``), rendered once here."""
        self._process_fields = dict(fields)
        self._access_formats.clear()
        self.kept_access_templates = {}  # a new dict: pieces taken from the old one are stale
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
        level_name = LEVEL_NAMES.get(level) or logging.getLevelName(level)
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
        template, order, _, _ = known
        if order is not None:
            values = tuple([values[position] for position in order])
        created = time.time()
        if self.json:
            text = '{"ts": ' + float.__repr__(created) + template % values
        else:  # _stamp's text, without its call
            second = self._stamp_second
            if not second <= created < self._stamp_next:
                second = self._new_stamp_second(created)
            millisecond = MILLISECONDS[floor((created - second) * 1000)]  # (>= 0: int's)
            text = self._stamp + millisecond + template % values
        self.write(text, line.level >= logging.WARNING)

    def _access_format(self, line: AccessLine) -> _AccessFormat:
        """The format of ``line`` after the time stamp, and its values' order (None: theirs)."""
        literals, positions = self._access_pieces(line)
        template = "".join(
            [literal.replace("%", "%%") + "%s" for literal in literals[:-1]]
            + [literals[-1].replace("%", "%%")]
        )
        if len(self._access_formats) >= 64:
            self._access_formats.clear()
        reordered = tuple(positions) if positions != sorted(positions) else None
        known = self._access_formats[line] = (template, reordered, literals, positions)
        return known

    def _access_pieces(self, line: AccessLine) -> tuple[list[str], list[int]]:
        """``line`` after the time stamp as texts and the values between them: literal 0,
        the value at position 0, literal 1... the last literal. The process's fields go
        first, as everywhere; one of them the line names too takes its place with the
        line's value, as in ``{**process, **fields}`` (the values then take another order)."""
        level_name = LEVEL_NAMES.get(line.level) or logging.getLevelName(line.level)
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
        literals, order, literal = [], [], head
        for process_key, value in self._process_fields.items():
            position = positions.pop(process_key, None)
            if position is None:
                literal += name(quote(process_key)) + render(value)
            else:
                literals.append(literal + name(quote(process_key)))
                order.append(position)
                literal = ""
        for key, position in positions.items():
            literals.append(literal + name(quote(key)))
            order.append(position)
            literal = ""
        literals.append(literal + tail)
        return literals, order

    def keep_access_template(
        self,
        key: tuple[Hashable, ...],
        line: AccessLine,
        values: tuple[object, ...],
        varying: tuple[int, ...],
    ) -> None:
        """``line`` was just written with ``values`` (:meth:`access_line`); the second time
        ``key`` comes (the first is only noted), keep under it the line's texts between the
        time stamp and the four values at the positions ``varying`` (ascending), with the
        other values written in (:meth:`kept_access_line`). The caller makes ``key`` of
        ``line`` and everything those values were rendered from, each a text, int or None
        (whose equal values render alike). Not kept: a key whose texts (counted here,
        whichever field they come from; such a key is not even noted), or a template whose
        pieces, are over _KEPT_TEMPLATE_CHARS_MAX characters; a line whose values take
        another order (a process field among its keys) or at WARNING (written at once)."""
        kept = self.kept_access_templates
        if key not in kept:
            if _key_chars(key) > _KEPT_TEMPLATE_CHARS_MAX:
                return  # a client's long text: rendered each time, never held
            if len(kept) >= _KEPT_TEMPLATES_MAX:
                kept.clear()  # a client whose every line differs gets none kept, not more memory
            kept[key] = ()
            return
        known = self._access_formats.get(line) or self._access_format(line)
        _, reordered, literals, positions = known
        if reordered is not None or line.level >= logging.WARNING or len(varying) != 4:
            return
        pieces, piece = [], ""
        for literal, position in zip(literals, positions, strict=False):
            piece += literal
            if position in varying:
                pieces.append(piece)
                piece = ""
            else:
                piece += str(values[position])  # as the %-format writes it
        pieces.append(piece + literals[-1])
        if sum(map(len, pieces)) <= _KEPT_TEMPLATE_CHARS_MAX:  # escapes lengthen a text
            kept[key] = tuple(pieces)

    def kept_access_line(
        self, pieces: tuple[str, ...], first: object, second: object, third: object, fourth: object
    ) -> None:
        """One access line from texts :meth:`keep_access_template` kept: the time stamp,
        then the pieces with the four values between them (each rendered as
        :meth:`access_line` takes it); buffered. One f-string: a %-format reads its whole
        template char by char, a join copies."""
        created = time.time()
        head, after_first, after_second, after_third, tail = pieces
        if self.json:
            text = (
                f'{{"ts": {float.__repr__(created)}{head}{first}{after_first}{second}'
                f"{after_second}{third}{after_third}{fourth}{tail}"
            )
        else:
            second_of = self._stamp_second
            if not second_of <= created < self._stamp_next:
                second_of = self._new_stamp_second(created)
            millisecond = MILLISECONDS[floor((created - second_of) * 1000)]  # (>= 0: int's)
            text = (
                f"{self._stamp}{millisecond}{head}{first}{after_first}{second}"
                f"{after_second}{third}{after_third}{fourth}{tail}"
            )
        # :meth:`write`'s rule (not urgent), without its call.
        self._pending.append(text)
        chars = self._pending_chars = self._pending_chars + len(text) + 1
        if self._buffering_thread != get_ident() or chars >= MAX_PENDING_CHARS:
            self.flush()
        elif self._wake is not None:
            self._wake.set()
            self._wake = None

    def _new_stamp_second(self, created: float) -> float:
        """A line's time ``created`` is in another second than the last one's: stamp that
        second (``stamp``'s text without its milliseconds); its start, as a float (exact:
        ``created - second`` is then what ``stamp`` computes the milliseconds from)."""
        second = float(int(created))
        text = stamp(created)[:-5]  # (made first: the three change together)
        self._stamp, self._stamp_second, self._stamp_next = text, second, second + 1.0
        return second

    def write(self, line: str, urgent: bool = False) -> None:
        """Queue ``line`` (no newline); written at once when ``urgent``, when the buffer is
        full, or when no flusher runs in this thread."""
        self._pending.append(line)
        self._pending_chars += len(line) + 1
        buffering = self._buffering_thread == get_ident()
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


def _key_chars(key: tuple[Hashable, ...]) -> int:
    """The characters of ``key``'s texts (every str and bytes in it, whichever field); a
    key holding anything but texts, ints, None and its AccessLine (a text inside another
    object) counts as over the budget, so that no field reaches a kept template unmeasured."""
    chars = 0
    for part in key:
        if isinstance(part, (str, bytes)):  # a StrEnum too
            chars += len(part)
        elif type(part) not in _KEY_SCALARS and not isinstance(part, int):  # an IntEnum passes
            return _KEPT_TEMPLATE_CHARS_MAX + 1
    return chars


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
