"""Server role: each RFC 9113 frame rule, from raw frames to the exact frames sent back."""

from __future__ import annotations

import struct

import pytest

from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    ErrorCode,
    GoAwayReceived,
    H2Session,
    LocalSettings,
    PingReceived,
    RequestReceived,
    Role,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from tests.unit.http2_session import wire as w

E = ErrorCode
OPEN_1 = w.headers(1, w.block(w.REQUEST))


def goaway_of(session: H2Session) -> tuple[int, int]:
    """(last stream id, code) of the GOAWAY the session sent; fails if there is none."""
    frames = [s for s in w.parse(session.take_outbound()) if s.kind == w.GOAWAY]
    assert len(frames) == 1
    return frames[0].last_stream_id, frames[0].code


def assert_connection_error(session: H2Session, wire: bytes, code: ErrorCode) -> None:
    events = session.receive_data(wire)
    assert isinstance(events[-1], ConnectionFailed), events
    assert events[-1].error_code == code
    assert goaway_of(session)[1] == code
    assert session.closed
    assert session.receive_data(w.ping()) == []  # all later input ignored


def assert_stream_error(session: H2Session, wire: bytes, stream_id: int, code: ErrorCode):
    events = session.receive_data(wire)
    assert StreamReset(stream_id, code, remote=False) in events, events
    assert (w.RST_STREAM, stream_id, code) in w.summary(session.take_outbound())
    assert not session.closed


CONNECTION_ERRORS = [
    ("DATA on stream 0", w.frame(w.DATA, 0, 0, b"x"), E.PROTOCOL_ERROR),
    ("HEADERS on stream 0", w.headers(0, w.block(w.REQUEST)), E.PROTOCOL_ERROR),
    ("PRIORITY on stream 0", w.priority(0, 1), E.PROTOCOL_ERROR),
    ("RST_STREAM on stream 0", w.rst_stream(0, 0), E.PROTOCOL_ERROR),
    ("CONTINUATION on stream 0", w.frame(w.CONTINUATION, 4, 0, b""), E.PROTOCOL_ERROR),
    ("SETTINGS on a stream", w.frame(w.SETTINGS, 0, 1, b""), E.PROTOCOL_ERROR),
    ("PING on a stream", w.frame(w.PING, 0, 1, b"12345678"), E.PROTOCOL_ERROR),
    ("GOAWAY on a stream", w.frame(w.GOAWAY, 0, 1, bytes(8)), E.PROTOCOL_ERROR),
    ("PING of 7", w.frame(w.PING, 0, 0, b"1234567"), E.FRAME_SIZE_ERROR),
    ("PING of 9", w.frame(w.PING, 0, 0, b"123456789"), E.FRAME_SIZE_ERROR),
    ("SETTINGS of 5", w.frame(w.SETTINGS, 0, 0, bytes(5)), E.FRAME_SIZE_ERROR),
    ("SETTINGS ACK with payload", w.frame(w.SETTINGS, 1, 0, bytes(6)), E.FRAME_SIZE_ERROR),
    ("RST_STREAM of 3", w.frame(w.RST_STREAM, 0, 1, bytes(3)), E.FRAME_SIZE_ERROR),
    ("WINDOW_UPDATE of 5", w.frame(w.WINDOW_UPDATE, 0, 0, bytes(5)), E.FRAME_SIZE_ERROR),
    ("GOAWAY of 7", w.frame(w.GOAWAY, 0, 0, bytes(7)), E.FRAME_SIZE_ERROR),
    ("ENABLE_PUSH 2", w.settings((2, 2)), E.PROTOCOL_ERROR),
    ("INITIAL_WINDOW_SIZE 2^31", w.settings((4, 2**31)), E.FLOW_CONTROL_ERROR),
    ("MAX_FRAME_SIZE 16383", w.settings((5, 16383)), E.PROTOCOL_ERROR),
    ("MAX_FRAME_SIZE 2^24", w.settings((5, 2**24)), E.PROTOCOL_ERROR),
    ("ENABLE_CONNECT_PROTOCOL 2", w.settings((8, 2)), E.PROTOCOL_ERROR),
    ("ENABLE_CONNECT_PROTOCOL 1 then 0", w.settings((8, 1)) + w.settings((8, 0)), E.PROTOCOL_ERROR),
    ("frame over MAX_FRAME_SIZE", w.frame(w.DATA, 0, 1, bytes(16385))[:9], E.FRAME_SIZE_ERROR),
    ("DATA on an idle stream", w.data(1, b"x"), E.PROTOCOL_ERROR),
    ("PRIORITY on itself on an idle stream", w.priority(3, 3), E.PROTOCOL_ERROR),
    ("PRIORITY of 4 on an idle stream", w.frame(w.PRIORITY, 0, 3, bytes(4)), E.FRAME_SIZE_ERROR),
    ("HEADERS on an even stream", w.headers(2, w.block(w.REQUEST)), E.PROTOCOL_ERROR),
    ("RST_STREAM on an idle stream", w.rst_stream(1, 0), E.PROTOCOL_ERROR),
    ("WINDOW_UPDATE on an idle stream", w.window_update(1, 1), E.PROTOCOL_ERROR),
    ("WINDOW_UPDATE of 0 on stream 0", w.window_update(0, 0), E.PROTOCOL_ERROR),
    ("connection window past 2^31-1", w.window_update(0, 2**31 - 65535), E.FLOW_CONTROL_ERROR),
    ("PUSH_PROMISE to a server", w.frame(w.PUSH_PROMISE, 4, 1, bytes(4)), E.PROTOCOL_ERROR),
    ("CONTINUATION without a block", w.frame(w.CONTINUATION, 4, 1, b""), E.PROTOCOL_ERROR),
    (
        "PING inside a header block",
        w.headers(1, w.block(w.REQUEST), end_headers=False) + w.ping(),
        E.PROTOCOL_ERROR,
    ),
    (
        "HEADERS inside a header block",  # (a whole block: the receive loop's short way)
        w.headers(1, w.block(w.REQUEST), end_headers=False) + w.headers(3, w.block(w.REQUEST)),
        E.PROTOCOL_ERROR,
    ),
    (
        "CONTINUATION for another stream",
        w.headers(1, b"", end_headers=False) + w.frame(w.CONTINUATION, 4, 3, b""),
        E.PROTOCOL_ERROR,
    ),
    (
        "unknown frame type inside a header block",
        w.headers(1, b"", end_headers=False) + w.frame(0xBB, 0, 1, b""),
        E.PROTOCOL_ERROR,
    ),
    ("padding as long as the payload", w.frame(w.DATA, w.PADDED, 1, b"\x02\0"), E.PROTOCOL_ERROR),
    ("HPACK index 0", w.headers(1, b"\x80"), E.COMPRESSION_ERROR),
    ("HPACK index past the table", w.headers(1, b"\xbe"), E.COMPRESSION_ERROR),
    ("HPACK literal name index past the table", w.headers(1, b"\x0f\x2f\x00"), E.COMPRESSION_ERROR),
    (
        "HPACK Huffman padding of 16 bits",
        w.headers(1, b"\x00\x01a\x82\xff\xff"),
        E.COMPRESSION_ERROR,
    ),
    ("HPACK Huffman padding not ones", w.headers(1, b"\x00\x01a\x81\x18"), E.COMPRESSION_ERROR),
    ("HPACK size update after a field", w.headers(1, b"\x82\x3f\xe1\x1f"), E.COMPRESSION_ERROR),
    ("HPACK size update over our limit", w.headers(1, b"\x3f\xe2\x1f"), E.COMPRESSION_ERROR),
    ("HPACK truncated integer", w.headers(1, b"\xff\x80"), E.COMPRESSION_ERROR),
]


@pytest.mark.parametrize(
    ("wire", "code"),
    [case[1:] for case in CONNECTION_ERRORS],
    ids=[c[0] for c in CONNECTION_ERRORS],
)
def test_connection_error(wire: bytes, code: ErrorCode) -> None:
    session = w.server()
    if wire.startswith(w.frame(w.DATA, w.PADDED, 1, b"\x02\0")):
        session.receive_data(OPEN_1)  # padding is judged on an open stream
    assert_connection_error(session, wire, code)


def test_goaway_carries_the_highest_stream_processed() -> None:
    session = w.server()
    session.receive_data(w.headers(1, w.block(w.REQUEST)) + w.headers(5, w.block(w.REQUEST)))
    session.take_outbound()
    session.receive_data(w.headers(3, w.block(w.REQUEST)))  # ids must increase (§5.1.1)
    assert goaway_of(session) == (5, E.PROTOCOL_ERROR)


STREAM_ERRORS = [
    ("PRIORITY of 4", w.frame(w.PRIORITY, 0, 1, bytes(4)), E.FRAME_SIZE_ERROR),
    ("PRIORITY on itself", w.priority(1, 1), E.PROTOCOL_ERROR),
    ("WINDOW_UPDATE of 0", w.window_update(1, 0), E.PROTOCOL_ERROR),
    ("stream window past 2^31-1", w.window_update(1, 2**31 - 65535), E.FLOW_CONTROL_ERROR),
    ("DATA past the stream window", w.data(1, bytes(16384)) * 5, E.FLOW_CONTROL_ERROR),
    ("HEADERS without END_STREAM after the request", w.headers(1, b"\x88"), E.PROTOCOL_ERROR),
]


@pytest.mark.parametrize(
    ("wire", "code"), [case[1:] for case in STREAM_ERRORS], ids=[c[0] for c in STREAM_ERRORS]
)
def test_stream_error(wire: bytes, code: ErrorCode) -> None:
    session = w.server(connection_window=2**20)
    session.receive_data(OPEN_1)
    assert_stream_error(session, wire, 1, code)


def test_headers_depending_on_itself_resets_only_that_stream() -> None:
    session = w.server()
    body = struct.pack(">LB", 1, 15) + w.block(w.REQUEST)
    assert_stream_error(session, w.frame(w.HEADERS, 0x24, 1, body), 1, E.PROTOCOL_ERROR)
    # the block was decoded: the next stream's fields index the same table
    assert isinstance(session.receive_data(w.headers(3, w.block(w.REQUEST)))[0], RequestReceived)


def test_half_closed_remote_refuses_data_and_headers() -> None:
    for late in (w.data(1, b"x"), w.headers(1, b"\x88", end_stream=True)):
        session = w.server()
        session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=True))
        assert_stream_error(session, late, 1, E.STREAM_CLOSED)


def test_after_end_stream_both_ways_data_and_headers_are_a_connection_error() -> None:
    """RFC 9113 §5.1 "closed": after the peer's END_STREAM, any frame but WINDOW_UPDATE,
    PRIORITY and RST_STREAM is a connection error STREAM_CLOSED (h2spec 5.1/12)."""
    for late in (w.data(1, b"x"), w.headers(1, b"\x88", end_stream=True)):
        session = w.server()
        session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=True))
        session.send_headers(1, [(b":status", b"200")], end_stream=True)
        session.take_outbound()
        assert session.receive_data(w.window_update(1, 1) + w.priority(1, 3)) == []
        events = session.receive_data(late)
        assert [type(event) for event in events] == [ConnectionFailed]
        assert events[0].error_code == E.STREAM_CLOSED
        assert w.summary(session.take_outbound())[-1][:1] == (w.GOAWAY,)


def test_after_our_reset_frames_are_ignored_but_data_still_counts() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.reset_stream(1, E.CANCEL)
    assert w.summary(session.take_outbound()) == [(w.RST_STREAM, 1, E.CANCEL)]
    late = w.data(1, bytes(16384)) * 2 + w.window_update(1, 5) + w.rst_stream(1, 0)
    assert session.receive_data(late + w.headers(1, b"\x88", end_stream=True)) == []
    assert w.summary(session.take_outbound()) == [(w.WINDOW_UPDATE, 0, 32768)]


def test_after_the_peers_reset_data_is_stream_closed() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    assert session.receive_data(w.rst_stream(1, 0x99)) == [StreamReset(1, 0x99, remote=True)]
    assert_stream_error(session, w.data(1, b"x"), 1, E.STREAM_CLOSED)
    assert session.receive_data(w.window_update(1, 1) + w.priority(1, 3)) == []


def test_over_max_concurrent_streams_is_refused() -> None:
    session = w.server(max_concurrent_streams=1)
    session.receive_data(OPEN_1)
    assert_stream_error(session, w.headers(3, w.block(w.REQUEST)), 3, E.REFUSED_STREAM)
    session.receive_data(w.data(1, b"", end_stream=True))
    session.send_headers(1, [(b":status", b"200")], end_stream=True)
    assert isinstance(session.receive_data(w.headers(5, w.block(w.REQUEST)))[0], RequestReceived)


def test_unknown_frames_settings_and_error_codes_are_ignored_or_carried() -> None:
    session = w.server()
    events = session.receive_data(
        w.frame(0xBB, 0xFF, 7, b"junk") + w.settings((0x99, 5)) + w.goaway(0, 0x1234, b"bye")
    )
    assert events[-1] == GoAwayReceived(0x1234, 0, b"bye")
    assert w.summary(session.take_outbound()) == [(w.SETTINGS, w.ACK, 0)]


def test_goaway_received_leaves_open_streams_working() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.goaway(1, 0))
    assert session.goaway_received
    events = session.receive_data(w.data(1, b"abc", end_stream=True))
    assert events == [DataReceived(1, b"abc", 3, True)]
    session.send_headers(1, [(b":status", b"200")])
    assert session.send_data(1, b"ok", end_stream=True) == 2


def test_goaway_sent_ignores_new_streams_but_keeps_hpack_in_step() -> None:
    session = w.server()
    encoder = __import__("hpack").Encoder()
    session.receive_data(w.headers(1, w.block(w.REQUEST, encoder)))
    session.send_goaway()
    assert w.summary(session.take_outbound()) == [(w.GOAWAY, 1, 0)]
    assert session.receive_data(w.headers(3, w.block([*w.REQUEST, (b"x", b"y")], encoder))) == []
    assert session.receive_data(w.data(3, b"x")) == []
    trailers = w.headers(1, w.block([(b"x", b"y")], encoder), end_stream=True)
    assert session.receive_data(trailers) == [TrailersReceived(1, [(b"x", b"y")])]


def test_ping_is_answered() -> None:
    session = w.server()
    assert session.receive_data(w.ping(b"abcdefgh")) == [PingReceived(b"abcdefgh")]
    assert w.parse(session.take_outbound()) == [w.Sent(w.PING, w.ACK, 0, b"abcdefgh")]


def test_window_updates_are_reported() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    events = session.receive_data(w.window_update(0, 10) + w.window_update(1, 20))
    assert events == [WindowUpdated(0, 10), WindowUpdated(1, 20)]
    assert session.local_window(1) == 65545  # the connection window is the smaller


@pytest.mark.parametrize(
    "preface",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r",
        b"GET / HTTP/1.1\r\n",
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n",
    ],
)
def test_a_bad_preface_is_a_protocol_error(preface: bytes) -> None:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    session.take_outbound()
    assert_connection_error(session, preface, E.PROTOCOL_ERROR)


def test_the_first_frame_must_be_settings() -> None:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    session.take_outbound()
    assert_connection_error(session, w.PREFACE + w.ping(), E.PROTOCOL_ERROR)


def test_bytes_can_arrive_one_at_a_time() -> None:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    wire = w.PREFACE + w.settings() + OPEN_1 + w.data(1, b"hello", end_stream=True, pad=3)
    events = []
    for index in range(len(wire)):
        events += session.receive_data(wire[index : index + 1])
    assert [type(e).__name__ for e in events] == [
        "RemoteSettingsChanged",
        "RequestReceived",
        "DataReceived",
    ]
    assert events[2] == DataReceived(1, b"hello", 9, True)


def test_priority_on_an_idle_stream_is_ignored_and_opens_nothing() -> None:
    session = w.server()
    assert session.receive_data(w.priority(5, 0)) == []
    assert isinstance(session.receive_data(OPEN_1)[0], RequestReceived)


def test_the_last_stream_id_of_our_goaways_never_grows() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.send_goaway()
    session.receive_data(w.headers(3, w.block(w.REQUEST)))  # ignored: above the last id
    session.send_goaway()
    session.close(E.INTERNAL_ERROR)
    goaways = [s for s in w.parse(session.take_outbound()) if s.kind == w.GOAWAY]
    assert [(g.last_stream_id, g.code) for g in goaways] == [(1, 0), (1, 0), (1, 2)]
    assert session.goaway_sent
