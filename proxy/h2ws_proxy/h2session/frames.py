"""HTTP/2 frame layout: the 9-byte header, frame types and flags, and frame writers.

Rules (RFC 9113 §4 and §6):

* A frame is a 9-byte header (24-bit length, 8-bit type, 8-bit flags, 1 reserved bit and a
  31-bit stream id) and ``length`` payload bytes (§4.1). The reserved bit is ignored on
  receipt and sent as 0.
* Frame types we do not know are ignored (§4.1, §5.5); so are flags a type does not define.
* :func:`check_length` holds each type's fixed stream-id and length rules, checked as soon as
  a frame is whole, before its payload is looked at:
  DATA, HEADERS, PRIORITY, RST_STREAM, CONTINUATION (and PUSH_PROMISE) on stream 0, and
  SETTINGS, PING, GOAWAY on any other stream, are a connection PROTOCOL_ERROR
  (§6.1-§6.10); SETTINGS with a length not a multiple of 6, or with ACK and a payload
  (§6.5), PING not 8 bytes (§6.7), RST_STREAM or WINDOW_UPDATE not 4 bytes (§6.4, §6.9),
  GOAWAY under 8 bytes (§6.8) are a connection FRAME_SIZE_ERROR; PRIORITY not 5 bytes is a
  *stream* FRAME_SIZE_ERROR (§6.3).
* :func:`strip_padding` removes PADDED padding; padding as long as the rest of the payload
  or longer is a connection PROTOCOL_ERROR (§6.1, §6.2).
* Writers append whole frames to a ``bytearray``; a header block longer than the peer's
  SETTINGS_MAX_FRAME_SIZE goes out as HEADERS then CONTINUATION frames, the last with
  END_HEADERS, with nothing between them (§4.3, §6.10).
"""

from __future__ import annotations

import struct

from h2ws_proxy.h2session.errors import ConnectionFault, ErrorCode, StreamFault

#: The client connection preface (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_BYTES = 9
STREAM_ID_MASK = 0x7FFFFFFF
MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1
MAX_STREAM_ID = 2**31 - 1

# Frame types, RFC 9113 §6 (in the order of their values).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags, RFC 9113 §6.
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

#: length (24 bits as a 16-bit high part and an 8-bit low part), type, flags, stream id.
FRAME_HEADER = struct.Struct(">HBBBL")
_U32 = struct.Struct(">L")
_GOAWAY_HEAD = struct.Struct(">LL")
_PRIORITY_FIELDS = struct.Struct(">LB")

#: Types only ever sent on stream 0, and types never sent on it (§6.1-§6.10).
_CONNECTION_TYPES = frozenset({SETTINGS, PING, GOAWAY})
_STREAM_TYPES = frozenset({DATA, HEADERS, PRIORITY, RST_STREAM, PUSH_PROMISE, CONTINUATION})


def check_length(kind: int, flags: int, stream_id: int, length: int) -> None:
    """Raise the error a frame's type, stream id and length alone make (see module rules)."""
    if kind in _STREAM_TYPES:
        if stream_id == 0:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, f"frame type {kind} on stream 0")
        if kind == PRIORITY and length != 5:
            raise StreamFault(stream_id, ErrorCode.FRAME_SIZE_ERROR)
        if kind == RST_STREAM and length != 4:
            raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length is not 4")
        return
    if kind in _CONNECTION_TYPES:
        if stream_id != 0:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, f"frame type {kind} on a stream")
        if kind == SETTINGS and (length % 6 or (flags & ACK and length)):
            raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "bad SETTINGS length")
        if kind == PING and length != 8:
            raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "PING length is not 8")
        if kind == GOAWAY and length < 8:
            raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8")
        return
    if kind == WINDOW_UPDATE and length != 4:
        raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4")


def strip_padding(flags: int, payload: bytes) -> bytes:
    """``payload`` without its PADDED fields (the pad length byte and the padding)."""
    if not flags & PADDED:
        return payload
    if not payload:
        raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "PADDED frame without pad length")
    pad_length = payload[0]
    if pad_length >= len(payload):
        raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "padding exceeds the payload")
    return payload[1 : len(payload) - pad_length]


def split_priority(stream_id: int, flags: int, fragment: bytes) -> bytes:
    """A HEADERS fragment without its PRIORITY fields; a stream that depends on itself is a
    stream PROTOCOL_ERROR (§5.3.1). Priority itself is ignored (RFC 9113 §5.3.2)."""
    if not flags & PRIORITY_FLAG:
        return fragment
    if len(fragment) < 5:
        raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for PRIORITY")
    dependency, _weight = _PRIORITY_FIELDS.unpack_from(fragment)
    if dependency & STREAM_ID_MASK == stream_id:
        raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)
    return fragment[5:]


def priority_depends_on(payload: bytes) -> int:
    """The stream a PRIORITY frame's payload depends on."""
    return int(_U32.unpack_from(payload)[0]) & STREAM_ID_MASK


def read_u32(payload: bytes, offset: int = 0) -> int:
    """The big-endian 32-bit integer at ``offset``."""
    return int(_U32.unpack_from(payload, offset)[0])


def read_goaway(payload: bytes) -> tuple[int, int, bytes]:
    """(last stream id, error code, debug data) of a GOAWAY payload of 8 bytes or more."""
    last_stream_id, code = _GOAWAY_HEAD.unpack_from(payload)
    return last_stream_id & STREAM_ID_MASK, code, bytes(payload[8:])


def write_frame(out: bytearray, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
    """Append one frame."""
    length = len(payload)
    out += FRAME_HEADER.pack(length >> 8, length & 0xFF, kind, flags, stream_id)
    out += payload


def write_rst_stream(out: bytearray, stream_id: int, code: int) -> None:
    write_frame(out, RST_STREAM, 0, stream_id, _U32.pack(code))


def write_window_update(out: bytearray, stream_id: int, increment: int) -> None:
    write_frame(out, WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def write_goaway(out: bytearray, last_stream_id: int, code: int, debug: bytes = b"") -> None:
    write_frame(out, GOAWAY, 0, 0, _GOAWAY_HEAD.pack(last_stream_id, code) + debug)


def write_header_block(
    out: bytearray, stream_id: int, end_stream: bool, block: bytes, max_frame_size: int
) -> None:
    """HEADERS carrying ``block``, and CONTINUATION frames for what does not fit (§4.3)."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        write_frame(out, HEADERS, flags | END_HEADERS, stream_id, block)
        return
    kind = HEADERS
    for start in range(0, len(block), max_frame_size):
        if start + max_frame_size >= len(block):
            flags |= END_HEADERS
        write_frame(out, kind, flags, stream_id, block[start : start + max_frame_size])
        kind, flags = CONTINUATION, 0
