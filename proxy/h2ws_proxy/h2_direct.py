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
CPU per new tunnel.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
from h2.connection import ConnectionInputs, ConnectionState
from h2.errors import ErrorCodes
from h2.stream import StreamInputs, StreamState

#: RFC 9113 §3.4: what an HTTP/2 client sends first.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_FRAME_HEADER_BYTES = 9
_DATA = 0x0
_HEADERS = 0x1
_PUSH_PROMISE = 0x5
_CONTINUATION = 0x9
_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_STREAM_ID_MASK = 0x7FFFFFFF
#: A frame header: 24-bit length (as 16 + 8 bits), type, flags, stream id.
_FRAME_HEADER = struct.Struct(">HBBBL")
#: RFC 7541 Appendix A: ``:status 200`` is static table entry 8, an indexed field (0x80 | 8).
_STATUS_200_BLOCK = b"\x88"

#: Stream states in which h2 accepts DATA from the client without a state change.
_RECEIVING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL})
#: Stream states in which h2 lets us send DATA without a state change.
_SENDING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})


class DirectData(NamedTuple):
    """The payload of one DATA frame on a direct stream, read without h2."""

    stream_id: int
    data: bytes


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
        #: Bytes went to h2 since the owner last cleared this: h2 may have output to
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
            elif kind == _DATA:
                if length and not flags & (_END_STREAM | _PADDED):
                    stream_id = int.from_bytes(data[pos + 5 : pos + 9]) & _STREAM_ID_MASK
                    if stream_id in self.direct_streams:
                        if to_h2 < pos:
                            items += self._feed_h2(view[to_h2:pos])
                        to_h2 = pos
                        if self._consume_windows(stream_id, length):
                            start = pos + _FRAME_HEADER_BYTES
                            item = (stream_id, data[start:frame_end])
                            items.append(_new_tuple(DirectData, item))
                            to_h2 = frame_end
            elif kind in (_HEADERS, _PUSH_PROMISE):
                self._in_header_block = not flags & _END_HEADERS
            pos = frame_end
        if to_h2 < pos:
            items += self._feed_h2(view[to_h2:pos])
        if pos < end:
            self._partial = data[pos:]
        return items

    def _feed_h2(self, data: bytes | memoryview) -> list[h2.events.Event]:
        self.fed_h2 = True
        return self._conn.receive_data(data)

    def _consume_windows(self, stream_id: int, length: int) -> bool:
        """Charge ``length`` to both inbound windows if h2 would take the frame silently."""
        conn = self._conn
        if conn.state_machine.state is not ConnectionState.SERVER_OPEN:
            return False
        stream = conn.streams.get(stream_id)
        if stream is None or stream.state_machine.state not in _RECEIVING:
            return False
        connection_window = conn._inbound_flow_control_window_manager
        stream_window = stream._inbound_window_manager
        if (
            length > connection_window.current_window_size
            or length > stream_window.current_window_size
        ):
            return False  # h2 raises the FLOW_CONTROL_ERROR
        connection_window.current_window_size -= length
        stream_window.current_window_size -= length
        return True


def sendable_stream(conn: h2.connection.H2Connection, stream_id: int) -> h2.stream.H2Stream | None:
    """h2's stream if h2 would let us send DATA on it without a state change, else None."""
    if conn.state_machine.state is not ConnectionState.SERVER_OPEN:
        return None
    stream = conn.streams.get(stream_id)
    if stream is None or stream.state_machine.state not in _SENDING:
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
    outbound += _FRAME_HEADER.pack(0, len(_STATUS_200_BLOCK), _HEADERS, flags, stream_id)
    outbound += _STATUS_200_BLOCK
    return True


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
