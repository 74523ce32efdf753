"""Raw HTTP/2 bytes for tests that drive the proxy below any HTTP/2 library (RFC 9113 §3.4,
§4.1): the client preface, and one frame from its type, flags, stream id and payload."""

from __future__ import annotations

import struct

#: RFC 9113 §3.4: the 24 bytes an HTTP/2 client sends first.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: An empty SETTINGS frame (the rest of a client's preface).
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One frame: a 24-bit length, type, flags, a 31-bit stream id, then ``payload``."""
    header = struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags])
    return header + struct.pack(">I", stream_id) + payload
