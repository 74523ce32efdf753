"""How a log line writes its values: key=value and JSON texts, time stamps, durations.

The pieces ``log_lines.LineSink`` puts together, each giving exactly the text
``log.KeyValueFormatter`` or ``log.JsonFormatter`` gives for the same value (differential
tests hold them equal): a value rendered for either format (:func:`render_value`,
:func:`json_value`, through a bounded cache of texts met before, :class:`RenderedTexts`),
the time stamp (:func:`stamp`), a duration (:func:`duration_text`), and a whole event line
(:func:`key_value_line`, :func:`json_line`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from json.encoder import encode_basestring_ascii

#: A key=value field value with one of these is written as a JSON string: a space, quote or
#: ``=`` would break the line's fields, and a control character (newline, tab, ESC...) would
#: break the line or reach a terminal that shows the log raw.
_needs_quotes = re.compile(r'[\x00-\x20"=\x7f]').search
#: The encoder of ``json.dumps(payload, default=str)``, built once.
_json_encoder = json.JSONEncoder(default=str)
#: The last second rendered, and its text (lines come many to a second).
_stamp_cache: tuple[int, str] = (-1, "")
#: A stamp's end, by millisecond: a lookup, not a format, per line.
MILLISECONDS = tuple(f".{ms:03d}Z" for ms in range(1000))
#: Texts a cache of rendered values holds at most (cleared when full, so that a client
#: sending new paths cannot grow it).
_RENDERED_TEXTS_MAX = 4096
#: A longer text is rendered each time: a cache full of 64 KiB paths would be 256 MiB.
_KEPT_TEXT_MAX = 512
#: Level names, without a call to logging.getLevelName per line.
LEVEL_NAMES = {
    level: logging.getLevelName(level)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
}


def render_value(value: object) -> str:
    """One field's value for a key=value line: as it is, or as a JSON string when it is
    empty or holds a space, quote, ``=`` or a control character; bytes decoded as ASCII."""
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


def stamp(created: float) -> str:
    """``2026-11-27T15:51:31.042Z``."""
    global _stamp_cache
    second = int(created)
    cached_second, stamp = _stamp_cache
    if second != cached_second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
        _stamp_cache = (second, stamp)
    # Milliseconds as LogRecord.msecs computes them (CPython gh-89047).
    return stamp + MILLISECONDS[int((created - second) * 1000)]


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
TEXT_VALUES = RenderedTexts(render_value)
JSON_VALUES = RenderedTexts(json_value)


def duration_text(seconds: float) -> str:
    """``repr(round(seconds, 6))``, as a line writes a duration: from one ``.6f`` where
    that gives the same digits (both round the exact value correctly, and repr writes a
    number of at most 15 digits as the shortest text that reads back the same), which
    costs half as much. repr turns to an exponent below 1e-4."""
    if 0.0001 <= seconds < 1e9:
        text = f"{seconds:.6f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(seconds, 6))


def key_value_line(
    created: float, level_name: str, event: str, prefix: str, fields: Mapping[str, object]
) -> str:
    """``2026-11-27T15:51:31.042Z INFO tunnel.closed conn=3 ...``; ``prefix``: the process's
    fields, rendered (``" worker=1 pid=42"`` or "")."""
    parts = [f"{stamp(created)} {level_name} {event}{prefix}"]
    append, texts = parts.append, TEXT_VALUES
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
