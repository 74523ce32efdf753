"""What the differential tests send: frames a peer might write, and our application's calls.

A :class:`Spec` describes one step; :func:`build` turns a frame step into wire bytes (header
blocks are encoded at build time, in order, as HPACK requires).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import hpack
from hypothesis import strategies as st

from tests.unit.http2_session import wire as w

STREAM_IDS = st.sampled_from([1, 1, 1, 3, 3, 5, 2, 0, 7])
KNOWN_SETTINGS = (1, 2, 3, 4, 5, 6, 8)


# -- what a client might send ---------------------------------------------------------------


@dataclass
class Spec:
    """One frame to build, with its header fields encoded at build time (HPACK is ordered)."""

    kind: str
    stream_id: int = 1
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    flags: int = 0
    pieces: int = 1
    raw: bytes = b""
    pad: int | None = None
    depends_on: int | None = None

    def __repr__(self) -> str:
        raw = self.raw if len(self.raw) <= 16 else b"<%d bytes>" % len(self.raw)
        return (
            f"Spec({self.kind!r}, {self.stream_id}, {self.fields!r}, flags={self.flags}, "
            f"pieces={self.pieces}, raw={raw!r}, pad={self.pad}, depends_on={self.depends_on})"
        )


FIELD_NAMES = st.sampled_from([b"x-a", b"cookie", b"user-agent", b"content-length", b":path"])
FIELDS = st.lists(st.tuples(FIELD_NAMES, st.sampled_from([b"1", b"v=2", b"", b"abc"])), max_size=3)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    kind = draw(
        st.sampled_from(
            ["headers"] * 4
            + ["data"] * 3
            + ["window_update", "settings", "ping", "rst", "priority", "goaway", "unknown"]
            + ["bad_hpack", "continuation"]
        )
    )
    stream_id = draw(STREAM_IDS)
    if kind == "headers":
        return Spec(
            kind,
            stream_id,
            fields=w.REQUEST + draw(FIELDS),
            flags=draw(st.sampled_from([0, w.END_STREAM])),
            pieces=draw(st.integers(1, 3)),
            pad=draw(st.none() | st.integers(0, 4)),
            depends_on=draw(st.none() | st.sampled_from([0, 1, stream_id])),
        )
    if kind == "data":
        payload = draw(st.binary(max_size=40) | st.just(bytes(16384)))
        pad = draw(st.none() | st.integers(0, 6))
        return Spec(kind, stream_id, flags=draw(st.sampled_from([0, 1])), raw=payload, pad=pad)
    if kind == "window_update":
        increment = draw(st.sampled_from([0, 1, 1000, 2**31 - 1]))
        return Spec(kind, draw(st.sampled_from([0, 1, 3])), raw=struct.pack(">L", increment))
    if kind == "settings":
        if draw(st.booleans()):
            return Spec(kind, raw=b"", flags=w.ACK)
        pairs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([*KNOWN_SETTINGS, 0x99]),
                    st.sampled_from([0, 1, 2, 100, 16384, 65535, 2**24, 2**31]),
                ),
                max_size=3,
            )
        )
        return Spec(kind, raw=b"".join(struct.pack(">HL", c, v) for c, v in pairs))
    if kind == "ping":
        return Spec(
            kind,
            raw=draw(st.sampled_from([b"12345678", b"1234567"])),
            flags=draw(st.sampled_from([0, 1])),
        )
    if kind == "rst":
        return Spec(kind, stream_id, raw=struct.pack(">L", draw(st.sampled_from([0, 5, 8, 0x77]))))
    if kind == "priority":
        return Spec(kind, stream_id, depends_on=draw(st.sampled_from([0, 3, stream_id])))
    if kind == "goaway":
        return Spec(
            kind,
            raw=struct.pack(
                ">LL", draw(st.sampled_from([0, 1, 3])), draw(st.sampled_from([0, 2, 0x77]))
            ),
        )
    if kind == "bad_hpack":
        return Spec(
            kind, stream_id, raw=draw(st.sampled_from([b"\x80", b"\xbe", b"\x00\x01a\x81\x18"]))
        )
    if kind == "continuation":
        return Spec(kind, stream_id, flags=w.END_HEADERS)
    return Spec(kind, stream_id, raw=b"junk")


def build(spec: Spec, encoder: hpack.Encoder) -> bytes:
    """The wire bytes for ``spec``."""
    if spec.kind == "headers":
        block = encoder.encode(spec.fields)
        size = -(-len(block) // spec.pieces) or 1
        pieces = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
        first = pieces[0]
        flags = spec.flags | (w.END_HEADERS if len(pieces) == 1 else 0)
        if spec.depends_on is not None:
            flags |= w.PRIORITY_FLAG
            first = struct.pack(">LB", spec.depends_on, 15) + first
        if spec.pad is not None:
            flags |= w.PADDED
            first = bytes([spec.pad]) + first + b"\0" * spec.pad
        wire = w.frame(w.HEADERS, flags, spec.stream_id, first)
        for index, piece in enumerate(pieces[1:], 2):
            end = w.END_HEADERS if index == len(pieces) else 0
            wire += w.frame(w.CONTINUATION, end, spec.stream_id, piece)
        return wire
    if spec.kind == "data":
        return w.data(spec.stream_id, spec.raw, end_stream=bool(spec.flags), pad=spec.pad)
    simple = {
        "window_update": (w.WINDOW_UPDATE, spec.stream_id),
        "settings": (w.SETTINGS, 0),
        "ping": (w.PING, 0),
        "rst": (w.RST_STREAM, spec.stream_id),
        "goaway": (w.GOAWAY, 0),
        "unknown": (0xBB, spec.stream_id),
        "bad_hpack": (w.HEADERS, spec.stream_id),
        "continuation": (w.CONTINUATION, spec.stream_id),
    }
    if spec.kind == "priority":
        return w.priority(spec.stream_id, spec.depends_on or 0)
    kind, stream_id = simple[spec.kind]
    flags = w.END_HEADERS if spec.kind == "bad_hpack" else spec.flags
    return w.frame(kind, flags, stream_id, spec.raw)


# -- the two endpoints, and their outcomes as comparable values ----------------------------
