"""DATA frames of open streams, read and written without h2's per-frame machinery.

Once a tunnel is open, almost every frame on its connection is a DATA frame, and h2 spends
on each one a frame object, a flag set, a connection and a stream state-machine step, an
event object and a trace line (about 45 % of the proxy's CPU per 64-byte WebSocket message,
py-spy on bench/compare.py's echo scenario). Here the frontend's bytes are split into whole
frames first; a DATA frame for a stream registered as *direct* is taken out and handed over
as a :class:`DirectData`, and every other frame goes to h2, in order, unchanged.

A DATA frame is taken only when h2 itself would take it without a word, so h2 decides every
case that needs a decision (a stream error, a connection error, a state change):

* the frame is complete, not padded, not empty and does not end the stream (END_STREAM is a
  state change: h2 makes it), and no header block is open (h2 makes that a connection error);
* its stream is registered (the frontend registers a tunnel after its 200 and an ordinary
  request whose body is awaited) and h2's stream is still in a state that receives DATA
  (open, or half-closed by us); a reset or ended stream falls back to h2;
* both flow-control windows have room for it; the frame consumes them exactly as h2 would,
  so the credit the frontend returns later (``acknowledge_received_data``) balances.

Two more kinds of frame skip h2's frame parser (hyperframe's frame objects and the trace line
h2 formats for every frame), though h2 still decides everything about them: a HEADERS frame
that opens a stream in one piece (END_HEADERS, not padded) and a DATA frame on a direct
stream that h2 must see (END_STREAM, or windows h2 must refuse) are handed, as a
:class:`_FrameView`, straight to h2's own handler for their type, with h2's error handling
around it. Each new tunnel and request sends at least one of each.

A frame longer than our SETTINGS_MAX_FRAME_SIZE is refused when its header arrives
(FRAME_SIZE_ERROR), instead of h2's way of buffering the whole declared length first: so
the bytes held here are bounded by one frame plus one read.

Outbound, :func:`send_direct` writes DATA frames straight into the session's output and
charges the windows h2 tracks, for a stream h2 would let us send on; anything else goes
through h2 (which raises what it raises). The two other frames every tunnel sends are
written the same way, with h2's state machines stepped exactly as h2 steps them:
:func:`send_plain_200` (the HEADERS of a bare ``:status 200``, one static-table byte) and
:func:`end_direct` (an empty DATA frame with END_STREAM). h2 spends a frame object, its
serialization, an encoder pass and debug formatting on each, about a tenth of the proxy's
CPU per new tunnel. An ordinary request's answer head, as read from an HTTP/1.1 backend, is
written by :func:`send_response_head` (h2's encoder, none of h2's per-field pipeline). And
the credit for received bytes goes back through :func:`acknowledge_direct`: h2's own window
arithmetic, its WINDOW_UPDATE frames packed here (a tenth of a bulk transfer's CPU was
h2's frame objects for them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamInputs, StreamState
from h2.utilities import CONNECTION_HEADERS
from hyperframe.frame import Frame

#: RFC 9113 §3.4: what an HTTP/2 client sends first.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAME_HEADER_BYTES = 9
_DATA = 0x0
_HEADERS = 0x1
_PUSH_PROMISE = 0x5
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9
_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY = 0x20
_STREAM_ID_MASK = 0x7FFFFFFF
#: A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id.
_FRAME_HEADER = struct.Struct(">HBBBL")
#: A whole WINDOW_UPDATE frame: its header (a 4-byte payload) and the increment.
_WINDOW_UPDATE_FRAME = struct.Struct(">HBBBLL")
#: RFC 7541 Appendix A: ``:status 200`` is static table entry 8, an indexed field (0x80 | 8).
_STATUS_200_BLOCK = b"\x88"

#: Field names h2's outbound pipeline does something to beyond lowercasing and stripping
#: (h2.utilities): connection-specific fields are dropped, a ``te`` other than ``trailers``
#: refused, and credentials (and a short ``cookie``) made never-indexed. A head naming any
#: of them goes through h2.
_H2_JUDGES_NAMES = CONNECTION_HEADERS | {b"te", b"authorization", b"proxy-authorization", b"cookie"}

#: Stream states in which h2 accepts DATA from the client without a state change.
_RECEIVING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})
#: Stream states in which h2 lets us send DATA without a state change.
_SENDING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})


class DirectData(NamedTuple):
    """The payload of one DATA frame on a direct stream, read without h2."""

    stream_id: int
    data: bytes


class _FrameView:
    """The fields of a DATA or HEADERS frame that h2's handlers for them read.

    h2 names flags by string and tests them with ``in``; the priority fields are those of
    hyperframe's ``Priority`` (the weight as sent, 0-255).
    """

    __slots__ = (
        "data",
        "depends_on",
        "exclusive",
        "flags",
        "flow_controlled_length",
        "stream_id",
        "stream_weight",
    )

    def __init__(self, stream_id: int, flags: int, data: bytes) -> None:
        self.stream_id = stream_id
        self.flags = _FLAG_NAMES[flags & (_END_STREAM | _PRIORITY)]
        self.data = data
        self.flow_controlled_length = len(data)
        self.depends_on = self.stream_weight = 0
        self.exclusive = False


_FLAG_NAMES = {
    0: frozenset(),
    _END_STREAM: frozenset({"END_STREAM"}),
    _PRIORITY: frozenset({"PRIORITY"}),
    _END_STREAM | _PRIORITY: frozenset({"END_STREAM", "PRIORITY"}),
}
_PRIORITY_FIELDS = struct.Struct(">LB")
#: Builds a :class:`DirectData` in C: the NamedTuple's own ``__new__`` is a Python call, one
#: per message (bench/cpu_per_message.py).
_new_tuple = tuple.__new__


class InboundFrames:
    """Splits a connection's inbound bytes into whole frames for h2 or as :class:`DirectData`."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self._conn = conn
        #: Streams whose DATA may be read here (see the module docstring).
        self.direct_streams: set[int] = set()
        self._preface_left = len(CLIENT_PREFACE)
        #: The tail of the last read: a frame not complete yet.
        self._partial = b""
        #: A HEADERS or PUSH_PROMISE without END_HEADERS was seen: until its last
        #: CONTINUATION, every frame goes to h2 (which refuses anything else).
        self._in_header_block = False
        #: False: every frame goes to h2's parser, whole (the reference in differential tests).
        self.takes_frames = True
        #: Frames went to h2 since the owner last cleared this: h2 may have output to
        #: flush (a read of direct DATA only has none; see ``H2Session.receive``).
        self.fed_h2 = False

    def receive(self, data: bytes) -> list[h2.events.Event | DirectData]:
        """Everything ``data`` completes, in order: h2's events and direct DATA.

        Raises what h2 raises for a connection error (with its GOAWAY queued in h2).
        """
        conn = self._conn
        items: list[h2.events.Event | DirectData] = []
        if self._partial:
            data, self._partial = self._partial + data, b""
        pos = 0
        if self._preface_left:
            pos = min(self._preface_left, len(data))
            items += self._feed_h2(data[:pos])  # h2 checks the preface
            self._preface_left -= pos
        end = len(data)
        view = memoryview(data)  # runs for h2 are passed without a copy of ours
        to_h2 = pos  # the first byte of the run of whole frames not yet given to h2
        max_frame_size = conn.max_inbound_frame_size
        while end - pos >= _FRAME_HEADER_BYTES:
            length = int.from_bytes(data[pos : pos + 3])
            if length > max_frame_size:
                if to_h2 < pos:
                    items += self._feed_h2(view[to_h2:pos])
                conn.close_connection(error_code=ErrorCodes.FRAME_SIZE_ERROR)
                raise h2.exceptions.FrameTooLargeError(
                    f"a frame of {length} bytes, above SETTINGS_MAX_FRAME_SIZE {max_frame_size}"
                )
            frame_end = pos + _FRAME_HEADER_BYTES + length
            if frame_end > end:
                break
            kind, flags = data[pos + 3], data[pos + 4]
            if self._in_header_block:
                self._in_header_block = not (kind == _CONTINUATION and flags & _END_HEADERS)
            elif not self.takes_frames:
                pass
            elif kind == _DATA:
                stream_id = int.from_bytes(data[pos + 5 : pos + 9]) & _STREAM_ID_MASK
                if stream_id in self.direct_streams and not flags & _PADDED:
                    # h2 takes the frames before this one first: they may change the
                    # stream's state (an END_STREAM) that decides whether this one is direct.
                    if to_h2 < pos:
                        items += self._feed_h2(view[to_h2:pos])
                        to_h2 = pos
                    stream = self._receiving_stream(stream_id)
                    if stream is not None:
                        payload = data[pos + _FRAME_HEADER_BYTES : frame_end]
                        if length and not flags & _END_STREAM and self._consume(stream, length):
                            items.append(_new_tuple(DirectData, (stream_id, payload)))
                        else:
                            frame = _FrameView(stream_id, flags, payload)
                            items += self._handle(conn._receive_data_frame, frame)
                        to_h2 = frame_end
            elif kind in (_HEADERS, _PUSH_PROMISE):
                self._in_header_block = not flags & _END_HEADERS
                if kind == _HEADERS and to_h2 < pos and flags & _END_HEADERS:
                    # As for DATA: the frames before may open streams or close the connection.
                    items += self._feed_h2(view[to_h2:pos])
                    to_h2 = pos
                if kind == _HEADERS and (opening := self._opening(data, pos, flags, length)):
                    items += self._handle(conn._receive_headers_frame, opening)
                    to_h2 = frame_end
            pos = frame_end
        if to_h2 < pos:
            items += self._feed_h2(view[to_h2:pos])
        if pos < end:
            self._partial = data[pos:]
        return items

    def _feed_h2(self, data: bytes | memoryview) -> list[h2.events.Event]:
        self.fed_h2 = True
        return self._conn.receive_data(data)

    def _receiving_stream(self, stream_id: int) -> h2.stream.H2Stream | None:
        """h2's stream if h2 would take DATA on it without a stream or connection error."""
        return _stream_in(self._conn, stream_id, _RECEIVING)

    def _consume(self, stream: h2.stream.H2Stream, length: int) -> bool:
        """Charge ``length`` to both inbound windows if they have room (else h2 must refuse)."""
        connection_window = self._conn._inbound_flow_control_window_manager
        stream_window = stream._inbound_window_manager
        if (
            length > connection_window.current_window_size
            or length > stream_window.current_window_size
        ):
            return False
        connection_window.current_window_size -= length
        stream_window.current_window_size -= length
        return True

    def _opening(self, data: bytes, pos: int, flags: int, length: int) -> _FrameView | None:
        """The HEADERS frame at ``pos`` as a view, if it opens a new client stream in one
        piece (h2 would find no stream state to judge but the new stream's); else None."""
        if not flags & _END_HEADERS or flags & _PADDED:
            return None
        conn = self._conn
        stream_id = int.from_bytes(data[pos + 5 : pos + 9]) & _STREAM_ID_MASK
        if (
            not stream_id & 1
            or stream_id <= conn.highest_inbound_stream_id
            or conn.state_machine.state is not ConnectionState.SERVER_OPEN
        ):
            return None
        start, end = pos + _FRAME_HEADER_BYTES, pos + _FRAME_HEADER_BYTES + length
        if not flags & _PRIORITY:
            return _FrameView(stream_id, flags, data[start:end])
        if length < _PRIORITY_FIELDS.size:
            return None  # h2's parser refuses it (FRAME_SIZE_ERROR)
        dependency, weight = _PRIORITY_FIELDS.unpack_from(data, start)
        frame = _FrameView(stream_id, flags, data[start + _PRIORITY_FIELDS.size : end])
        frame.depends_on = dependency & _STREAM_ID_MASK
        frame.exclusive = bool(dependency >> 31)
        frame.stream_weight = weight
        return frame

    def _handle(
        self, handler: Callable[[Any], tuple[list[Frame], list[h2.events.Event]]], frame: _FrameView
    ) -> list[h2.events.Event]:
        """h2's ``handler`` for ``frame``'s type on it, as h2's ``receive_data`` runs it."""
        conn = self._conn
        self.fed_h2 = True
        try:
            frames, events = handler(frame)
        except h2.exceptions.ProtocolError as error:
            conn._terminate_connection(error.error_code)
            raise
        conn._prepare_for_sending(frames)
        return events


def sendable_stream(conn: h2.connection.H2Connection, stream_id: int) -> h2.stream.H2Stream | None:
    """h2's stream if h2 would let us send DATA on it without a state change, else None."""
    return _stream_in(conn, stream_id, _SENDING)


def _stream_in(
    conn: h2.connection.H2Connection, stream_id: int, states: frozenset[StreamState]
) -> h2.stream.H2Stream | None:
    """h2's stream ``stream_id`` if the connection is open and the stream in ``states``."""
    if conn.state_machine.state is not ConnectionState.SERVER_OPEN:
        return None
    stream = conn.streams.get(stream_id)
    if stream is None or stream.state_machine.state not in states:
        return None
    return stream


def send_direct(
    conn: h2.connection.H2Connection,
    stream: h2.stream.H2Stream,
    data: memoryview,
    outbound: bytearray,
) -> int:
    """Append as much of ``data`` as the peer's windows allow as DATA frames; returns that.

    The windows are charged exactly as h2's ``send_data`` charges them, so h2's later
    WINDOW_UPDATE and SETTINGS handling stays right.
    """
    allowed = min(conn.outbound_flow_control_window, stream.outbound_flow_control_window)
    allowed = min(allowed, len(data))
    if allowed <= 0:
        return 0
    frame_size = conn.max_outbound_frame_size
    stream_id = stream.stream_id
    sent = 0
    while sent < allowed:
        size = min(frame_size, allowed - sent)
        outbound += _FRAME_HEADER.pack(size >> 8, size & 0xFF, _DATA, 0, stream_id)
        outbound += data[sent : sent + size]
        sent += size
    conn.outbound_flow_control_window -= allowed
    stream.outbound_flow_control_window -= allowed
    return allowed


def send_plain_200(
    conn: h2.connection.H2Connection, stream_id: int, outbound: bytearray, *, end_stream: bool
) -> bool:
    """Append the response HEADERS frame of ``[(":status", "200")]`` as h2 would; False
    (nothing done) where h2 must judge: the stream cannot send, its response was sent, or a
    table size change waits to be announced at the start of the next header block (RFC 7541
    §4.2; h2's encoder does that).

    An indexed static field leaves the HPACK dynamic table as it is, so skipping the encoder
    changes nothing it will encode later.
    """
    stream = sendable_stream(conn, stream_id)
    if stream is None or stream.state_machine.headers_sent or conn.encoder.header_table.resized:
        return False
    conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
    flags = _END_HEADERS
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        flags |= _END_STREAM
    stream.request_method = None  # as h2 leaves it: the method of what it sent, a response
    outbound += _FRAME_HEADER.pack(0, len(_STATUS_200_BLOCK), _HEADERS, flags, stream_id)
    outbound += _STATUS_200_BLOCK
    return True


def send_response_head(
    conn: h2.connection.H2Connection,
    stream_id: int,
    status: bytes,
    fields: list[tuple[bytes, bytes]],
    outbound: bytearray,
    *,
    end_stream: bool,
) -> bool:
    """Append the final response head ``:status status`` plus ``fields`` as h2 would write it;
    False (nothing done) where h2 must judge: the stream cannot send or its response was
    sent, the status is informational, or a field's name is one h2 acts on.

    ``fields`` must be as an HTTP/1.1 parser holding to RFC 9112's grammar hands them over
    (h11 does, and so does ``h1_backend``'s plain reader): names lowercase tokens, values with
    no whitespace around them. For those, h2's outbound normalization (lowercase, strip) and
    validation (pseudo-fields first and only ``:status``, no connection-specific fields) change
    and refuse nothing, and what h2 spends on them (five generator layers per field, a frame
    object, its serialization) was about a sixth of the proxy's CPU per plain GET. The block
    is still made by the connection's HPACK encoder, so its table stays h2's.
    """
    stream = sendable_stream(conn, stream_id)
    if stream is None or stream.state_machine.headers_sent or status[:1] == b"1":
        return False
    for name, _ in fields:
        if name in _H2_JUDGES_NAMES:
            return False
    conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream.state_machine.process_input(StreamInputs.SEND_HEADERS)
    block = conn.encoder.encode([(b":status", status), *fields])
    flags = 0
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
        flags = _END_STREAM
    stream.request_method = None  # as h2 leaves it: the method of what it sent, a response
    _append_header_block(outbound, stream_id, flags, block, conn.max_outbound_frame_size)
    return True


def _append_header_block(
    outbound: bytearray, stream_id: int, flags: int, block: bytes, frame_size: int
) -> None:
    """A HEADERS frame carrying ``block``, and CONTINUATION frames for what does not fit."""
    if len(block) <= frame_size:
        outbound += _FRAME_HEADER.pack(
            len(block) >> 8, len(block) & 0xFF, _HEADERS, flags | _END_HEADERS, stream_id
        )
        outbound += block
        return
    kind = _HEADERS
    for start in range(0, len(block), frame_size):
        piece = block[start : start + frame_size]
        if start + frame_size >= len(block):
            flags |= _END_HEADERS
        outbound += _FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, kind, flags, stream_id)
        outbound += piece
        kind, flags = _CONTINUATION, 0


def end_direct(conn: h2.connection.H2Connection, stream_id: int, outbound: bytearray) -> bool:
    """Append an empty DATA frame with END_STREAM as h2's ``end_stream`` would; False (nothing
    done) for a stream h2 would not let us send on (h2 raises the error then)."""
    stream = sendable_stream(conn, stream_id)
    if stream is None:
        return False
    conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
    stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
    outbound += _FRAME_HEADER.pack(0, 0, _DATA, _END_STREAM, stream_id)
    return True


def acknowledge_direct(
    conn: h2.connection.H2Connection, stream_id: int, size: int, outbound: bytearray
) -> bool:
    """h2's ``acknowledge_received_data(size, stream_id)``, its WINDOW_UPDATE frames
    appended to ``outbound``; True if any was.

    The same steps: h2's window managers decide the increments (and keep their counts), the
    connection's first; a stream that is gone or closed gets none. ``stream_id`` must be one
    the peer opened (h2 raises for a stream never opened).
    """
    written = False
    increment = conn._inbound_flow_control_window_manager.process_bytes(size)
    if increment:
        outbound += _WINDOW_UPDATE_FRAME.pack(0, 4, _WINDOW_UPDATE, 0, 0, increment)
        written = True
    stream = conn.streams.get(stream_id)
    if stream is not None and stream.open:
        increment = stream._inbound_window_manager.process_bytes(size)
        if increment:
            outbound += _WINDOW_UPDATE_FRAME.pack(0, 4, _WINDOW_UPDATE, 0, stream_id, increment)
            written = True
    return written
