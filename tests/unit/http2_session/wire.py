"""Raw HTTP/2 frames for the session tests: build them by hand, read back what was sent."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import hpack

from h2ws_proxy.h2session import H2Session, LocalSettings, Role

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return struct.pack(">HBBBL", length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def settings(*pairs: tuple[int, int], ack: bool = False) -> bytes:
    body = b"".join(struct.pack(">HL", code, value) for code, value in pairs)
    return frame(SETTINGS, ACK if ack else 0, 0, body)


def headers(
    stream_id: int, block: bytes, *, end_stream: bool = False, end_headers: bool = True
) -> bytes:
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream_id, block)


def data(stream_id: int, payload: bytes, *, end_stream: bool = False, pad: int | None = None):
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        flags |= PADDED
        payload = bytes([pad]) + payload + b"\0" * pad
    return frame(DATA, flags, stream_id, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def ping(payload: bytes = b"12345678", *, ack: bool = False) -> bytes:
    return frame(PING, ACK if ack else 0, 0, payload)


def goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">LL", last_stream_id, code) + debug)


def priority(stream_id: int, depends_on: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">LB", depends_on, weight))


@dataclass(frozen=True)
class Sent:
    """One frame read back: type, flags, stream id and payload."""

    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def code(self) -> int:
        """RST_STREAM's or GOAWAY's error code."""
        offset = 4 if self.kind == GOAWAY else 0
        return int(struct.unpack_from(">L", self.payload, offset)[0])

    @property
    def last_stream_id(self) -> int:
        return int(struct.unpack_from(">L", self.payload)[0])

    @property
    def increment(self) -> int:
        return int(struct.unpack_from(">L", self.payload)[0])


def parse(wire: bytes | bytearray) -> list[Sent]:
    """The frames in ``wire`` (a leading client preface skipped)."""
    wire = bytes(wire)
    if wire.startswith(PREFACE):
        wire = wire[len(PREFACE) :]
    frames, pos = [], 0
    while pos < len(wire):
        high, low, kind, flags, stream_id = struct.unpack_from(">HBBBL", wire, pos)
        length = high << 8 | low
        frames.append(Sent(kind, flags, stream_id, wire[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return frames


def summary(wire: bytes | bytearray) -> list[tuple[int, ...]]:
    """Frames as comparable tuples: (type, flags, stream, key field) per type."""
    out: list[tuple[int, ...]] = []
    for sent in parse(wire):
        if sent.kind in (RST_STREAM,):
            out.append((sent.kind, sent.stream_id, sent.code))
        elif sent.kind == GOAWAY:
            out.append((sent.kind, sent.last_stream_id, sent.code))
        elif sent.kind == WINDOW_UPDATE:
            out.append((sent.kind, sent.stream_id, sent.increment))
        else:
            out.append((sent.kind, sent.flags, sent.stream_id))
    return out


def server(**overrides: int) -> H2Session:
    """A server session past the handshake (client preface and SETTINGS read, output taken)."""
    session = H2Session(Role.SERVER, LocalSettings(**overrides))
    session.initiate()
    session.receive_data(PREFACE + settings())
    session.take_outbound()
    return session


def block(fields: list[tuple[bytes, bytes]], encoder: hpack.Encoder | None = None) -> bytes:
    return (encoder or hpack.Encoder()).encode(fields)
