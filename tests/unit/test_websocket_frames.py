"""The frame boundary tracker (websocket/frames.py) against wsproto as an independent framer.

Autobahn-style cases (fragmentation, control frames between fragments, 125/126/127 and
64-bit lengths, both directions), every split of the bytes into two chunks, random chunking
with hypothesis, garbage that must stop the tracking without an exception, and the Close
frames the proxy injects, parsed back by wsproto.
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode

from h2ws_proxy.websocket.frames import GOING_AWAY, NO_STATUS, FrameTracker, close_frame


def framer(*, client: bool) -> FrameProtocol:
    """wsproto's frame layer: a client one masks what it sends, a server one does not."""
    return FrameProtocol(client=client, extensions=[])


def message(fp: FrameProtocol, payload: bytes, *, pieces: int = 1, text: bool = False) -> bytes:
    """One data message in ``pieces`` frames (a fragmented message when more than one)."""
    data: bytes | str = payload.decode() if text else payload
    if pieces == 1:
        return fp.send_data(data, fin=True)
    size = max(1, len(payload) // pieces)
    out = b""
    for index in range(pieces):
        part = payload[index * size : (index + 1) * size if index < pieces - 1 else None]
        chunk: bytes | str = part.decode() if text else part
        out += fp.send_data(chunk, fin=index == pieces - 1)
    return out


def ping(fp: FrameProtocol, payload: bytes = b"p") -> bytes:
    return fp.ping(payload)


def close(fp: FrameProtocol, code: int | None, reason: str = "") -> bytes:
    return fp.close(code, reason)


def stream_of(*, client: bool) -> list[tuple[bytes, bool]]:
    """(frame bytes, ends at a boundary) pairs: a conversation of every shape."""
    fp = framer(client=client)
    parts = [
        message(fp, b""),
        message(fp, b"x" * 125),
        message(fp, b"y" * 126),
        message(fp, b"z" * 127),
        message(fp, b"w" * 65535),
        message(fp, b"v" * 65536),
        message(fp, "héllo".encode(), text=True),
        ping(fp),
        fp.pong(b"q" * 125),
    ]
    # A fragmented message with control frames between its fragments (RFC 6455 §5.4).
    first = fp.send_data(b"a" * 10, fin=False)
    middle = fp.send_data(b"b" * 300, fin=False)
    last = fp.send_data(b"c" * 5, fin=True)
    parts += [first, ping(fp, b"in between"), middle, fp.pong(b""), last]
    return [(part, True) for part in parts]


@pytest.mark.parametrize("client", [True, False])
def test_whole_frames_one_by_one(client: bool) -> None:
    tracker = FrameTracker(masked=client)
    for part, _ in stream_of(client=client):
        tracker.feed(part)
        assert tracker.at_boundary, part[:4]
    assert tracker.lost is None
    assert tracker.close_code is None


@pytest.mark.parametrize("client", [True, False])
def test_all_in_one_chunk_then_a_close(client: bool) -> None:
    fp = framer(client=client)
    data = b"".join(part for part, _ in stream_of(client=client))
    tracker = FrameTracker(masked=client)
    tracker.feed(data + close(fp, 1000, "bye"))
    assert tracker.at_boundary
    assert tracker.close_code == 1000


@pytest.mark.parametrize("client", [True, False])
def test_every_split_of_every_header(client: bool) -> None:
    """Two frames cut at every byte position: headers split across chunks anywhere."""
    fp = framer(client=client)
    for first, code in (
        (message(fp, b"x" * 5), None),
        (message(fp, b"y" * 200), None),
        (message(fp, b"z" * 70000), None),
        (close(fp, 1011, "oops"), 1011),
        (close(fp, None), NO_STATUS),
    ):
        second = message(fp, b"after")
        data = first + second
        # Every position in the headers, and a few in the payloads.
        positions = sorted({*range(0, 20), *range(len(first) - 3, len(first) + 12)})
        for cut in positions:
            if cut > len(data):
                continue
            tracker = FrameTracker(masked=client)
            tracker.feed(data[:cut])
            assert tracker.at_boundary == (cut in (0, len(first), len(data))), cut
            tracker.feed(data[cut:])
            assert tracker.at_boundary, cut
            assert tracker.lost is None
            assert tracker.close_code == code


@pytest.mark.parametrize("client", [True, False])
@pytest.mark.parametrize("code", [1000, 1001, 1011, 4000, None])
def test_close_code_split_at_every_byte(client: bool, code: int | None) -> None:
    fp = framer(client=client)
    data = message(fp, b"hi") + close(fp, code, "why" if code else "")
    for cut in range(len(data) + 1):
        tracker = FrameTracker(masked=client)
        tracker.feed(data[:cut])
        tracker.feed(data[cut:])
        assert tracker.close_code == (code if code is not None else NO_STATUS), cut
        assert tracker.at_boundary


@pytest.mark.parametrize("client", [True, False])
def test_byte_by_byte(client: bool) -> None:
    data = b"".join(part for part, _ in stream_of(client=client)[:4])
    ends = set()
    total = 0
    for part, _ in stream_of(client=client)[:4]:
        total += len(part)
        ends.add(total)
    tracker = FrameTracker(masked=client)
    for index in range(len(data)):
        tracker.feed(data[index : index + 1])
        assert tracker.at_boundary == (index + 1 in ends), index


@settings(max_examples=200, deadline=None)
@given(
    client=st.booleans(),
    sizes=st.lists(st.sampled_from([0, 1, 125, 126, 127, 300, 65535, 65536, 70000]), max_size=6),
    fragments=st.integers(min_value=1, max_value=4),
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=12),
    code=st.sampled_from([None, 1000, 1001, 1011, 3000]),
)
def test_random_chunking(
    client: bool, sizes: list[int], fragments: int, cuts: list[int], code: int | None
) -> None:
    """Any chunking of any conversation: the boundaries and the close code as wsproto's."""
    fp = framer(client=client)
    data = b""
    ends = {0}
    for size in sizes:
        data += message(fp, os.urandom(size), pieces=fragments if size >= fragments else 1)
        ends.add(len(data))
        data += ping(fp)
        ends.add(len(data))
    data += close(fp, code, "r" if code else "")
    ends.add(len(data))
    points = sorted({0, len(data), *(cut for cut in cuts if cut <= len(data))})
    tracker = FrameTracker(masked=client)
    for start, stop in itertools.pairwise(points):
        tracker.feed(memoryview(data)[start:stop])
        # Mid-message between fragments counts as a boundary too (a frame's end).
        if stop in ends:
            assert tracker.at_boundary, stop
    assert tracker.at_boundary
    assert tracker.lost is None
    assert tracker.close_code == (code if code is not None else NO_STATUS)
    # wsproto agrees that these are frames of that direction.
    reader = framer(client=not client)
    reader.receive_bytes(data)
    assert list(reader.received_frames())[-1].opcode is Opcode.CLOSE


@pytest.mark.parametrize(
    ("data", "masked", "reason"),
    [
        (b"\x81\x05hello", True, "masked the wrong way"),
        (b"\x81\x85abcdhello", False, "masked the wrong way"),
        (b"\x83\x00", False, "reserved data opcode 3"),
        (b"\x8b\x00", False, "reserved control opcode 11"),
        (b"\x80\x00", False, "continuation frame with no message open"),
        (b"\x01\x00\x81\x00", False, "new message inside a fragmented one"),
        (b"\x09\x00", False, "fragmented or over-long control frame"),
        (b"\x89\x7e\x00\x80" + b"x" * 128, False, "fragmented or over-long control frame"),
        (b"\x82\x7f\x80" + b"\x00" * 7, False, "top bit set"),
        (b"\x88\x01x", False, "one-byte payload"),
        (b"GET / HTTP/1.1\r\n\r\n", True, "masked the wrong way"),
    ],
)
def test_garbage_stops_tracking_once(data: bytes, masked: bool, reason: str) -> None:
    told: list[str] = []

    class Telling(FrameTracker):
        def tracking_lost(self, reason: str) -> None:
            told.append(reason)

    for cut in (len(data), 1):
        tracker = Telling(masked=masked)
        told.clear()
        tracker.feed(data[:cut])
        tracker.feed(data[cut:])
        tracker.feed(b"\x88\x02\x03\xe8" * 3)  # later frames change nothing
        assert tracker.lost is not None
        assert reason in tracker.lost
        assert len(told) == 1
        assert not tracker.at_boundary
        assert tracker.close_code is None
        assert tracker.pass_to_boundary(b"more") is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=10), st.booleans())
def test_random_bytes_never_raise(chunks: list[bytes], masked: bool) -> None:
    tracker = FrameTracker(masked=masked)
    for chunk in chunks:
        tracker.feed(chunk)
        tracker.pass_to_boundary(chunk)


@pytest.mark.parametrize("client", [True, False])
def test_pass_to_boundary_stops_at_the_frame_in_progress(client: bool) -> None:
    fp = framer(client=client)
    first, second = message(fp, b"a" * 300), message(fp, b"b" * 3)
    data = first + second
    for cut in range(len(first) + 1):
        tracker = FrameTracker(masked=client)
        tracker.feed(data[:cut])
        rest = data[cut:]
        taken = tracker.pass_to_boundary(rest)
        assert taken == (len(first) - cut if cut else 0), cut
        assert tracker.at_boundary
        tracker.feed(rest[taken:])
        assert tracker.at_boundary
    # A frame that goes on past the chunk: all of it taken, not at a boundary yet.
    tracker = FrameTracker(masked=client)
    tracker.feed(first[:10])
    assert tracker.pass_to_boundary(first[10:20]) is None
    assert tracker.pass_to_boundary(first[20:] + second) == len(first) - 20


@pytest.mark.parametrize("key", [None, b"\x00\x00\x00\x00", os.urandom(4)])
def test_injected_close_parses_as_close_1001(key: bytes | None) -> None:
    frame = close_frame(GOING_AWAY, b"going away", key)
    # Toward a client (unmasked) a client parses it; toward a server (masked) a server.
    reader = framer(client=key is None)
    reader.receive_bytes(frame)
    (parsed,) = list(reader.received_frames())
    assert parsed.opcode is Opcode.CLOSE
    assert parsed.payload == (CloseReason.GOING_AWAY, "going away")
    assert frame[0] == 0x88  # FIN, no RSV bit: never compressed
    assert bool(frame[1] & 0x80) == (key is not None)
    tracker = FrameTracker(masked=key is not None)
    tracker.feed(frame)
    assert tracker.close_code == GOING_AWAY
    assert tracker.at_boundary
