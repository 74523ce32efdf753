"""The HTTP/1.1 bytes of a backend WebSocket upgrade, written and read without h11. Pure.

Building an ``h11.Request``, running an ``h11.Connection`` to write it and parsing the
backend's ``101`` with it was a large part of a new tunnel's CPU (bench/README.md, the "New
tunnels" step). The upgrade is one small request and its answer one small head, so this
module does the common case directly, with h11's own grammar
(:mod:`~h2ws_proxy.http.grammar`), and leaves every other case to h11, which decides it
exactly as it always has:

* :func:`upgrade_request` writes the request as h11 would (Host first, names as given,
  ``GET <target> HTTP/1.1``) when every part passes h11's checks: a visible-ASCII target,
  token names, field values without controls or edge whitespace, exactly one Host and no
  Content-Length or Transfer-Encoding (which h11 would rewrite). Otherwise it returns None
  and the caller asks h11, whose ``LocalProtocolError`` says what is wrong.
* :func:`read_interim_head` looks at the bytes a backend has sent so far. It returns an
  :class:`InterimHead` for a complete, well-formed ``1xx`` head (the ``101``, or a ``100``
  or ``103`` to skip), None when more bytes are needed and h11 would wait too, and
  :data:`HAND_TO_H11` for anything else: a final answer (a rejection to relay), a head h11
  would refuse (its error message goes to the log), a head past the size limit, an
  ``obs-fold``, bare-LF line ends, or framing fields. A head is where h11 ends one (the
  first ``\\n\\r?\\n``), so both always agree on which bytes trail it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final

from h2ws_proxy.http.grammar import FIELD_LINE, HEAD_END, REASON_PHRASE, REQUEST_TARGET, fields_pass

Header = tuple[bytes, bytes]

# h11's grammar, so that nothing passes here that h11 would refuse.
_TARGET_RE = re.compile(REQUEST_TARGET)
_HEADER_LINE_RE = re.compile(FIELD_LINE)
#: An interim (1xx) status line; the reason phrase is optional, as h11 takes it.
_STATUS_LINE_RE = re.compile(rb"HTTP/[0-9]\.[0-9] (1[0-9][0-9])(?: " + REASON_PHRASE + rb")?")
# Fields h11 normalises (Content-Length values are trimmed, Transfer-Encoding lowered).
_FRAMING_FIELDS = frozenset({b"content-length", b"transfer-encoding"})


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """The HTTP/1.1 upgrade request to a backend, and its bytes on the wire."""

    method: ClassVar[bytes] = b"GET"
    http_version: ClassVar[bytes] = b"1.1"
    target: bytes
    #: Fields as sent, names as given (lowercase from the frontends).
    headers: tuple[Header, ...]
    data: bytes


def upgrade_request(target: bytes, headers: list[Header]) -> UpgradeRequest | None:
    """The request as h11 would write it, or None when h11 must judge it (see above)."""
    if not _TARGET_RE.fullmatch(target):
        return None
    # All names, then all values, checked in one match each (see ``fields_pass``).
    names = b"\n".join([name for name, _ in headers])
    values = b"\n".join([value for _, value in headers])
    if not fields_pass(names, values, len(headers)):
        return None
    lower = names.lower().split(b"\n")
    if lower.count(b"host") != 1 or not _FRAMING_FIELDS.isdisjoint(lower):
        return None
    host = lower.index(b"host")
    # h11 writes Host first, whatever its place in the list.
    ordered = [headers[host], *headers[:host], *headers[host + 1 :]]
    fields = b"".join([b"%s: %s\r\n" % field for field in ordered])
    data = b"GET %s HTTP/1.1\r\n%s\r\n" % (target, fields)
    return UpgradeRequest(target=target, headers=tuple(headers), data=data)


@dataclass(frozen=True, slots=True)
class InterimHead:
    """A complete ``1xx`` head at the start of the buffer."""

    status: int
    #: (lowercase name, value), as h11 would report them.
    headers: list[Header]
    #: How many bytes of the buffer the head takes, its blank line included.
    size: int


class _HandToH11:
    def __repr__(self) -> str:
        return "HAND_TO_H11"


#: :func:`read_interim_head`'s answer when h11 must read the rest of the answer.
HAND_TO_H11: Final = _HandToH11()


def read_interim_head(
    buffer: bytes | bytearray, limit: int, searched: int = 0
) -> InterimHead | _HandToH11 | None:
    """Parse the ``1xx`` head at the start of ``buffer``, if h11 would accept it unchanged.

    ``limit`` is h11's ``max_incomplete_event_size``: an unfinished head past it is h11's
    to refuse. ``searched``: no head ends before this offset (an earlier call said None).
    Returns None when more bytes are needed (h11 would wait too).
    """
    end = HEAD_END.search(buffer, searched)
    if end is None:
        # h11 fails an unfinished head that is too long or starts with a control or space.
        if len(buffer) > limit or (buffer and buffer[0] < 0x21):
            return HAND_TO_H11
        return None
    head_end = end.start() - 1  # the CR before the blank line's CRLF
    if end.end() - end.start() != 3 or head_end < 0 or buffer[head_end] != 0x0D:
        return HAND_TO_H11  # a bare LF ends a line somewhere: h11's lenient reading
    lines = bytes(buffer[:head_end]).split(b"\r\n")
    status = _STATUS_LINE_RE.fullmatch(lines[0])
    if status is None:
        return HAND_TO_H11
    headers = _header_fields(lines[1:])
    if headers is None:
        return HAND_TO_H11
    return InterimHead(status=int(status[1]), headers=headers, size=end.end())


def _header_fields(lines: list[bytes]) -> list[Header] | None:
    """(lowercase name, value) per line; None if a line is not one plain, valid field."""
    headers: list[Header] = []
    for line in lines:
        # No match for an obs-fold continuation, a stray CR or LF, or a bad name or value.
        field = _HEADER_LINE_RE.fullmatch(line)
        if field is None:
            return None
        name = field[1].lower()
        if name in _FRAMING_FIELDS:
            return None
        headers.append((name, field[2]))
    return headers
