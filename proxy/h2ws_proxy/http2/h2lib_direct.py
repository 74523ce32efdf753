"""DATA frames of open streams, read and written without h2's per-frame machinery.

Once a tunnel is open, almost every frame on its connection is a DATA frame, and h2 spends
on each one a frame object, a flag set, a connection and a stream state-machine step, an
event object and a trace line: most of the proxy's work per WebSocket message
(bench/README.md). Here the frontend's bytes are split into whole
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

Outbound frames are written by :mod:`~h2ws_proxy.http2.h2lib_outbound`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.connection import ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamState
from hyperframe.frame import Frame

from h2ws_proxy.http2.h2lib_outbound import stream_in

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


#: Stream states in which h2 accepts DATA from the client without a state change.
_RECEIVING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})


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
        return stream_in(self._conn, stream_id, _RECEIVING)

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
