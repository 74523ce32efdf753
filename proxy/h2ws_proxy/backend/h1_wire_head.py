"""A *plain* backend answer head, read by h11's grammar without h11. Pure.

:class:`~h2ws_proxy.backend.h1_wire.H1BackendWire` reads an answer itself only when its
head is plain (below); any other head goes to h11, which judges it as it always has. So
:func:`parse_plain_head` must accept nothing h11 would refuse or read differently.

Rules: a head is plain when

* the whole head is in hand, ending in CRLF CRLF with no bare LF;
* its status line is ``HTTP/1.1`` and a final status (200-999);
* every field line matches h11's pattern (:mod:`~h2ws_proxy.http.grammar`; the check is
  explained at ``_FIELD``);
* unless the request was HEAD or the status 204/304 (then neither), it has either exactly
  one ``content-length`` (digits only) or exactly one ``transfer-encoding: chunked`` (as
  written, lowercase).

The result is what h11 would give: names lowercased, values stripped, and its keep-alive
rule (``connection: close`` ends reuse).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from h2ws_proxy.http.grammar import HEAD_END, LINE_FORBIDDEN_BYTES, TOKEN

__all__ = ["CHUNKED", "LAST_PLAIN_HEADS", "ResponseHead", "parse_plain_head", "whole_answer"]

Header = tuple[bytes, bytes]

# h11's grammar (http/grammar.py): a head is plain here only where each of its lines is
# valid for h11. A field line is ``token ":" OWS field-value OWS`` with ``field-value`` runs
# of field-vchar joined by ``[ \t]+``: so, in a line that holds no CR or LF, exactly a
# token, a colon and then none of LINE_FORBIDDEN_BYTES (NUL, VT, FF; any mix of the other
# bytes, spaces and tabs parses, the value being what is left once spaces and tabs are
# stripped off both ends). The status line's reason phrase excludes the same bytes. Hence:
# one look for NUL, VT and FF in the whole head; ``_FIELD`` matches a field line from the
# LF before it to its CR, so a head whose line ends are all CRLF is valid exactly when
# ``_FIELD`` matches once per line after the status line. (Simple classes, because they
# cost Python's regex engine less than h11's nested pattern.)
_FIELD = re.compile(rb"\n(" + TOKEN + rb"):([^\r\n]*)\r(?=\n)")
_NUL, _VT, _FF = LINE_FORBIDDEN_BYTES
#: Only HTTP/1.1 and final statuses are plain.
_PLAIN_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-9][0-9][0-9])(?: [^\r\n]*)?\r\n")
#: ``parse_plain_head``'s body length for a chunked body.
CHUNKED = -1
#: h11's CONTENT_LENGTH_MAX_DIGITS (its pattern is [0-9]+; bytes.isdigit is ASCII only).
_MAX_LENGTH_DIGITS = 20
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """The answer's head (``status`` < 200: an informational one, more follow)."""

    status: int
    #: Names lowercased, as h11 gives them.
    headers: list[Header]


def parse_plain_head(
    data: bytes, start: int, end: int, *, is_head: bool
) -> tuple[ResponseHead, int, bool] | None:
    """(event, body length or :data:`CHUNKED`, keep-alive) for the plain head
    ``data[start:end]`` (see the module rules), else None. ``end`` is just past its blank
    line.

    The result depends on nothing but the head's bytes and ``is_head``, and a backend
    repeats its answers' heads (all but a ``Date`` that changes once a second), so a head
    that parsed is remembered with its result (``_PARSED``: bounded in count and size): the
    same bytes again get the same event object, whose fields nobody may change.
    """
    head = data[start:end]
    key = (head, is_head)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _parse(data, start, end, is_head=is_head)
        if parsed is None or end - start > _PARSED_MAX_BYTES:
            return parsed
        if len(_PARSED) >= _PARSED_MAX_HEADS:
            _PARSED.clear()
        _PARSED[key] = parsed
    LAST_PLAIN_HEADS[is_head] = (head, parsed)
    return parsed


#: Heads that parsed, by their bytes (see :func:`parse_plain_head`).
_PARSED: dict[tuple[bytes, bool], tuple[ResponseHead, int, bool]] = {}
_PARSED_MAX_HEADS = 64
_PARSED_MAX_BYTES = 2048


def _parse(
    data: bytes, start: int, end: int, *, is_head: bool
) -> tuple[ResponseHead, int, bool] | None:
    status_line = _PLAIN_STATUS_LINE.match(data, start, end)
    if status_line is None or _has_forbidden_byte(data, start, end):
        return None
    fields = _FIELD.findall(data, start, end)
    line_ends = data.count(b"\r\n", start, end)
    if line_ends != len(fields) + 2 or data.count(b"\n", start, end) != line_ends:
        return None  # a line that is not a valid field, or a bare LF
    status = int(status_line.group(1))
    headers = [(name.lower(), value.strip(b" \t")) for name, value in fields]
    length: bytes | None = None
    chunked = False
    keep_alive = True
    for name, value in headers:
        if name == b"content-length":
            if length is not None or not (len(value) <= _MAX_LENGTH_DIGITS and value.isdigit()):
                return None
            length = value
        elif name == b"transfer-encoding":
            if chunked or value != b"chunked":
                return None  # h11 lowercases, refuses other codings and repeats
            chunked = True
        elif name == b"connection" and b"close" in value.lower() and _lists_close(value):
            keep_alive = False
    if is_head or status in _NO_BODY_STATUSES:
        if chunked:
            return None
        return ResponseHead(status, headers), 0, keep_alive
    if chunked:
        if length is not None:
            return None  # h11 lets transfer-encoding win; left to it
        return ResponseHead(status, headers), CHUNKED, keep_alive
    if length is None:
        return None  # delimited by the close: h11 reads that
    return ResponseHead(status, headers), int(length), keep_alive


def _has_forbidden_byte(data: bytes, start: int, end: int) -> bool:
    """NUL, VT or FF in ``data[start:end]`` (three memchr scans: cheaper than one regex
    search)."""
    return (
        data.find(_NUL, start, end) >= 0
        or data.find(_VT, start, end) >= 0
        or data.find(_FF, start, end) >= 0
    )


def _lists_close(value: bytes) -> bool:
    """As h11's ``get_comma_header``: ``close`` among the lowercased, stripped items."""
    return b"close" in [item.strip() for item in value.lower().split(b",")]


def _seed(is_head: bool) -> tuple[bytes, tuple[ResponseHead, int, bool]]:
    """A first entry of ``LAST_PLAIN_HEADS``: a head that parses, with its result."""
    head = b"HTTP/1.1 204 No Content\r\n\r\n"
    parsed = _parse(head, 0, len(head), is_head=is_head)
    assert parsed is not None
    return head, parsed


#: The last head :func:`parse_plain_head` gave a result for, with that result, for a GET's
#: answer (index 0) and a HEAD's (index 1): the bytes of an answer that start with that
#: head's bytes have that head, with that result (a plain head holds one blank line, its
#: last, and no bare LF, so its end is the first place ``HEAD_END`` matches; what follows
#: it is not part of it). So a reader that sees the answer's first bytes equal the last head
#: skips finding the head's end and the look-up by its bytes (:func:`whole_bounds`):
#: a backend repeats its heads, and the lean path reads one per request. Seeded with a head
#: that parses, so an entry always holds a result; bounded as ``_PARSED``.
LAST_PLAIN_HEADS: list[tuple[bytes, tuple[ResponseHead, int, bool]]] = [_seed(False), _seed(True)]


def whole_bounds(data: bytes, *, is_head: bool) -> tuple[ResponseHead, int, int, bool] | None:
    """Where a whole plain answer lies at the start of ``data``: its final head, the head's
    end, the ``content-length`` body's end and whether the head keeps the connection alive;
    None: the head is not whole, not plain, or the body not all there (chunked included).
    The last head is recognised by its bytes (``LAST_PLAIN_HEADS``)."""
    head, parsed = LAST_PLAIN_HEADS[is_head]
    if data.startswith(head):  # the last head again (see ``LAST_PLAIN_HEADS``)
        head_end = len(head)
    else:
        end = HEAD_END.search(data)
        if end is None:
            return None
        head_end = end.end()
        found = parse_plain_head(data, 0, head_end, is_head=is_head)
        if found is None:
            return None
        parsed = found
    event, length, keep_alive = parsed
    body_end = head_end + length
    if length == CHUNKED or body_end > len(data):
        return None
    return event, head_end, body_end, keep_alive


def whole_answer(data: bytes, *, is_head: bool) -> tuple[ResponseHead, bytes, bool] | None:
    """What a new wire's ``H1BackendWire.receive_whole(data)`` returns for an answer's first
    bytes ``data``, without a wire: the plain final head and its whole ``content-length``
    body, with whether the connection is reusable after them; None: not whole (then the
    caller makes the wire and reads ``data`` with it). The lean HTTP/2 path makes a wire
    only for an answer that did not come whole (``http2/polled_request.py``); a test holds
    the two equal."""
    head, parsed = LAST_PLAIN_HEADS[is_head]
    if data.startswith(head):  # ``whole_bounds``' usual case in place (once per lean GET)
        event, length, keep_alive = parsed
        head_end = len(head)
        body_end = head_end + length
        if length == CHUNKED or body_end > len(data):
            return None
    else:
        found = whole_bounds(data, is_head=is_head)
        if found is None:
            return None
        event, head_end, body_end, keep_alive = found
    if body_end == len(data):
        return event, data[head_end:], keep_alive
    return event, data[head_end:body_end], False  # a byte beyond the answer: never kept
