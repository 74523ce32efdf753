"""Frames of open streams written without h2's per-frame machinery, h2 deciding.

Outbound, :func:`send_direct` writes DATA frames straight into the session's output and
charges the windows h2 tracks, for a stream h2 would let us send on; anything else goes
through h2 (which raises what it raises). The two other frames every tunnel sends are
written the same way, with h2's state machines stepped exactly as h2 steps them:
:func:`send_plain_200` (the HEADERS of a bare ``:status 200``, one static-table byte) and
:func:`end_direct` (an empty DATA frame with END_STREAM). h2 spends a frame object, its
serialization, an encoder pass and debug formatting on each (what that costs per new
tunnel: bench/README.md). An ordinary request's answer head, as read from an HTTP/1.1 backend, is
written by :func:`send_response_head` (h2's encoder, none of h2's per-field pipeline). And
the credit for received bytes goes back through :func:`acknowledge_direct`: h2's own window
arithmetic, its WINDOW_UPDATE frames packed here instead of h2's frame objects for them
(bench/README.md, bulk).
"""

from __future__ import annotations

import struct

import h2.connection
import h2.stream
from h2.connection import ConnectionInputs, ConnectionState
from h2.stream import StreamInputs, StreamState
from h2.utilities import CONNECTION_HEADERS

_DATA = 0x0
_HEADERS = 0x1
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9
_END_STREAM = 0x1
_END_HEADERS = 0x4
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
#: Stream states in which h2 lets us send DATA without a state change.
_SENDING = frozenset({StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE})


def sendable_stream(conn: h2.connection.H2Connection, stream_id: int) -> h2.stream.H2Stream | None:
    """h2's stream if h2 would let us send DATA on it without a state change, else None."""
    return stream_in(conn, stream_id, _SENDING)


def stream_in(
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
    object, its serialization) showed in the GET profile (bench/README.md). The block
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
