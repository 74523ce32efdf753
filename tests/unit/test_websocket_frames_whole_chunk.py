"""``FrameTracker.feed``'s first test: a chunk that is one whole short data frame at a
boundary returns without a change. Each case here is a chunk that looks like such a frame
but is not one where it stands (inside a payload, the rest of a split header, a new
message inside a fragmented one, bytes after tracking was lost): the tracker must read it
as what it is, which a Close frame fed after it shows.
"""

from __future__ import annotations

import pytest

from h2ws_proxy.websocket.frames import FrameTracker

#: A Close 1000, unmasked (backend to client) and masked with a zero key (client to backend).
CLOSE = {False: b"\x88\x02\x03\xe8", True: b"\x88\x82\x00\x00\x00\x00\x03\xe8"}


def short_frame(size: int, *, masked: bool) -> bytes:
    """A whole binary frame with FIN, ``size`` bytes long in all (header included)."""
    header = 6 if masked else 2
    payload = size - header
    head = bytes((0x82, (0x80 if masked else 0) | payload))
    return head + b"\x00" * (header - 2) + b"p" * payload


@pytest.mark.parametrize("masked", [False, True])
def test_whole_frames_one_per_chunk(masked: bool) -> None:
    tracker = FrameTracker(masked=masked)
    for size in (8, 70, 131 if masked else 127):
        tracker.feed(short_frame(size, masked=masked))
        assert tracker.at_boundary
    tracker.feed(CLOSE[masked])
    assert tracker.close_code == 1000


@pytest.mark.parametrize("masked", [False, True])
def test_a_chunk_inside_a_payload_that_looks_like_a_whole_frame(masked: bool) -> None:
    tracker = FrameTracker(masked=masked)
    header = 6 if masked else 2
    payload = short_frame(12, masked=masked)  # these 12 bytes are a payload here
    tracker.feed(bytes((0x82, (0x80 if masked else 0) | len(payload))) + b"\x00" * (header - 2))
    assert not tracker.at_boundary
    tracker.feed(payload)
    assert tracker.at_boundary
    tracker.feed(CLOSE[masked])
    assert tracker.close_code == 1000


def test_the_rest_of_a_split_header_that_looks_like_a_whole_frame() -> None:
    """Masked: a binary frame's first byte alone, then its length byte (0x81: masked, 1),
    a key whose first byte is 0x80 and the payload byte; those six bytes read as a frame
    head would be 0x81 (text, FIN) and 0x80 (masked, empty): a whole frame of six."""
    tracker = FrameTracker(masked=True)
    tracker.feed(b"\x82")
    tracker.feed(b"\x81\x80\x00\x00\x00x")
    assert tracker.at_boundary
    tracker.feed(CLOSE[True])
    assert tracker.close_code == 1000


def test_a_whole_frame_inside_a_fragmented_message_loses_the_tracking() -> None:
    tracker = FrameTracker(masked=False)
    tracker.feed(b"\x02\x01a")  # a binary message's first fragment (no FIN)
    assert tracker.at_boundary
    tracker.feed(short_frame(5, masked=False))  # a new message: not allowed (RFC 6455 §5.4)
    assert tracker.lost == "a new message inside a fragmented one"
    tracker.feed(CLOSE[False])
    assert tracker.close_code is None


def test_whole_frames_after_the_tracking_was_lost() -> None:
    tracker = FrameTracker(masked=False)
    tracker.feed(b"\x83\x00")  # a reserved opcode
    assert tracker.lost is not None
    tracker.feed(short_frame(4, masked=False))
    assert tracker.lost is not None
    assert not tracker.at_boundary
    tracker.feed(CLOSE[False])
    assert tracker.close_code is None
