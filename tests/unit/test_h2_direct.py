"""DATA frames read and written around h2 (h2_direct) do exactly what h2 would have done.

The inbound tests are differential: the same client bytes, cut into the same random pieces,
go to a session with direct streams and to one whose every frame goes whole to h2's own
parser and handlers (h2 alone, but for the cut into whole frames: h2 would refuse a bad
frame header before its body arrived, and drop the events of the frames before it); the
events (a direct DATA counted as h2's silent DataReceived), the errors, the flow-control
windows, the stream states and the bytes queued for the client must all agree.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame, WindowUpdateFrame
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.h2lib_direct import DirectData
from h2ws_proxy.http2.h2lib_session import H2Session, StreamUnusable
from tests.helpers.frames import frame

LIMITS = Limits(stream_window_bytes=1000)
#: Streams the client opens (extended CONNECTs); the server answers 200 on them.
OPEN_STREAMS = (1, 3, 5)


def new_client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))


def client_opening() -> bytes:
    """Preface, SETTINGS and three extended CONNECT streams, as one client writes them."""
    client = new_client()
    client.initiate_connection()
    for stream_id in OPEN_STREAMS:
        client.send_headers(
            stream_id,
            [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "proxy.test"),
                ("sec-websocket-version", "13"),
            ],
        )
    return client.data_to_send()


def opened_session(*, direct: bool, h2_alone: bool = False, limits: Limits = LIMITS) -> H2Session:
    """A server session whose streams 1, 3 and 5 got their 200 (direct ones registered);
    with ``h2_alone`` every frame goes, whole, to h2's own parser and handlers."""
    session = H2Session(limits, connect_protocol_enabled=True, on_output=lambda: None)
    session._inbound.takes_frames = not h2_alone
    session.start()
    session.receive(client_opening())
    for stream_id in OPEN_STREAMS:
        session.send_headers(stream_id, [(b":status", b"200")])
        if direct:
            session.direct_streams.add(stream_id)
    session.receive(frame(0x4, 0x1, 0, b""))  # the client acknowledges our SETTINGS
    session.take_outbound()
    return session


def normalized(items: list[h2.events.Event | DirectData]) -> list[object]:
    """Events as comparable values; a DATA h2 took without a word equals a direct one."""
    out: list[object] = []
    for item in items:
        if isinstance(item, DirectData) or (
            isinstance(item, h2.events.DataReceived)
            and item.stream_ended is None
            and item.data
            and item.flow_controlled_length == len(item.data)
        ):
            out.append(("data", item.stream_id, item.data))
        else:
            out.append(repr(item))
    return out


def state_of(session: H2Session) -> object:
    conn = session.conn
    streams = {
        stream_id: (
            stream.state_machine.state,
            stream._inbound_window_manager.current_window_size,
            stream.outbound_flow_control_window,
        )
        for stream_id, stream in conn.streams.items()
    }
    windows = (
        conn._inbound_flow_control_window_manager.current_window_size,
        conn.outbound_flow_control_window,
    )
    return conn.state_machine.state, windows, streams


def feed(session: H2Session, pieces: list[bytes]) -> tuple[list[object], str | None]:
    events: list[h2.events.Event | DirectData] = []
    for piece in pieces:
        try:
            events += session.receive(piece)
        except h2.exceptions.ProtocolError as error:
            return normalized(events), type(error).__name__
    return normalized(events), None


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def request_block(headers: list[tuple[str, str]]) -> bytes:
    """``headers`` as an HPACK block any decoder takes (a fresh encoder: literals that
    index themselves, so both sessions' tables grow alike)."""
    return hpack.Encoder().encode(headers)


REQUEST_BLOCKS = [
    request_block(
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "proxy.test")]
    ),
    request_block(
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", "/chat"),
            (":authority", "proxy.test"),
            ("sec-websocket-version", "13"),
            ("cookie", "a=b"),
            ("cookie", "c=d"),
        ]
    ),
    b"",  # an empty block: no pseudo-headers
]

frames = st.lists(
    st.one_of(
        # Mostly DATA, with any flags (padding, END_STREAM) and sizes around the windows.
        st.builds(
            frame,
            frame_type=st.just(0x0),
            flags=st.sampled_from([0, 0, 0, 0x1, 0x8, 0x9, 0x20]),
            stream_id=st.sampled_from([0, 1, 1, 3, 5, 7, 9]),
            payload=st.one_of(st.binary(max_size=40), st.builds(bytes, st.integers(0, 1100))),
        ),
        st.builds(
            frame,
            frame_type=st.sampled_from([0x1, 0x3, 0x6, 0x8, 0x9, 0x2, 0xFA]),  # HEADERS, RST, PING...
            flags=st.sampled_from([0, 0x1, 0x4, 0x5]),
            stream_id=st.sampled_from([0, 1, 3, 5, 7]),
            payload=st.one_of(st.binary(max_size=12), st.just(struct.pack(">I", 8))),
        ),
        # HEADERS that open streams: whole requests, with and without priority fields.
        st.builds(
            frame,
            frame_type=st.just(0x1),
            flags=st.sampled_from([0x4, 0x5, 0x24, 0x25, 0x2C, 0x20]),
            stream_id=st.sampled_from([7, 9, 11, 13, 8]),
            payload=st.one_of(
                st.sampled_from(REQUEST_BLOCKS),
                st.builds(bytes.__add__, st.binary(max_size=6), st.sampled_from(REQUEST_BLOCKS)),
            ),
        ),
    ),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(frames=frames, cuts=st.lists(st.integers(0, 10_000), max_size=8))
# A padded DATA with END_STREAM (h2's to judge) and then a plain DATA on the same stream in
# one read: the second must meet the half-closed stream (STREAM_CLOSED), not pass as direct.
@example(
    frames=[
        b"\x00\x00\x01\x00\x09\x00\x00\x00\x01\x00",
        b"\x00\x00\x01\x00\x00\x00\x00\x00\x01\x00",
    ],
    cuts=[],
)
def test_same_outcome_as_h2_alone(frames: list[bytes], cuts: list[int]) -> None:
    data = b"".join(frames)
    direct = opened_session(direct=True)
    reference = opened_session(direct=False, h2_alone=True)
    pieces = cut(data, cuts)
    assert feed(direct, pieces) == feed(reference, pieces)
    assert state_of(direct) == state_of(reference)
    assert direct.take_outbound() == reference.take_outbound()


def test_direct_data_and_events_keep_their_order() -> None:
    session = opened_session(direct=True)
    session.direct_streams.discard(3)
    data = (
        frame(0x0, 0, 1, b"one")
        + frame(0x0, 0, 3, b"h2's")  # not direct: an event from h2
        + frame(0x6, 0, 0, b"12345678")  # PING
        + frame(0x0, 0, 1, b"two")
        + frame(0x0, 0x1, 1, b"end")  # END_STREAM: h2 decides
    )
    items = session.receive(data)
    kinds = [type(item).__name__ for item in items]
    assert kinds == [
        "DirectData",
        "DataReceived",
        "PingReceived",
        "DirectData",
        "DataReceived",
        "StreamEnded",
    ]
    assert [item.data for item in items if isinstance(item, DirectData)] == [b"one", b"two"]


def test_a_frame_split_byte_by_byte_arrives_once_whole() -> None:
    session = opened_session(direct=True)
    data = frame(0x0, 0, 5, bytes(range(200)))
    items: list[h2.events.Event | DirectData] = []
    for i in range(len(data)):
        items += session.receive(data[i : i + 1])
    assert items == [DirectData(5, bytes(range(200)))]


def test_credit_for_direct_data_goes_back_through_h2() -> None:
    session = opened_session(direct=True)
    assert session.receive(frame(0x0, 0, 1, bytes(600))) == [DirectData(1, bytes(600))]
    assert session.conn.streams[1]._inbound_window_manager.current_window_size == 400
    session.acknowledge(1, 600)  # past half the 1000-byte window: h2 sends WINDOW_UPDATE
    update = Frame.parse_frame_header(memoryview(session.take_outbound()[:9]))[0]
    assert isinstance(update, WindowUpdateFrame)
    assert update.stream_id == 1
    assert session.conn.streams[1]._inbound_window_manager.current_window_size == 1000


def test_an_oversized_frame_is_refused_from_its_header_alone() -> None:
    session = opened_session(direct=True)
    header = struct.pack(">I", 16385)[1:] + bytes([0x0, 0]) + struct.pack(">I", 1)
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        session.receive(header + bytes(100))  # the rest of the frame never needs to come
    goaway = Frame.parse_frame_header(memoryview(session.take_outbound()[:9]))[0]
    assert isinstance(goaway, GoAwayFrame)


def test_data_past_the_stream_window_is_h2s_flow_control_error() -> None:
    session = opened_session(direct=True)
    with pytest.raises(h2.exceptions.FlowControlError):
        session.receive(frame(0x0, 0, 1, bytes(1001)))


def test_data_inside_a_header_block_is_h2s_protocol_error() -> None:
    session = opened_session(direct=True)
    open_block = frame(0x1, 0, 7, b"")  # HEADERS without END_HEADERS
    with pytest.raises(h2.exceptions.ProtocolError):
        session.receive(open_block + frame(0x0, 0, 1, b"sneaky"))


def test_data_on_a_reset_direct_stream_is_h2s_business() -> None:
    session = opened_session(direct=True)
    session.reset(1, ErrorCodes.CANCEL)
    session.take_outbound()
    items = session.receive(frame(0x0, 0, 1, b"late"))
    assert not any(isinstance(item, DirectData) for item in items)


@pytest.mark.parametrize("size", [0, 1, 16384, 16385, 70000])
def test_direct_send_writes_what_h2_writes(size: int) -> None:
    direct, reference = opened_session(direct=True), opened_session(direct=False)
    data = memoryview(bytes(range(256)) * 300)[:size]
    sent = direct.send_data(1, data)
    # The client's window is h2's default 65,535 bytes: both stop there.
    assert sent == reference._send_data_through_h2(1, data) == min(size, 65535)
    assert direct.take_outbound() == reference.take_outbound()
    assert state_of(direct) == state_of(reference)


def test_direct_send_on_a_closed_stream_raises_as_h2_does() -> None:
    session = opened_session(direct=True)
    session.reset(3, ErrorCodes.CANCEL)
    with pytest.raises(StreamUnusable):
        session.send_data(3, memoryview(b"x"))


def requested_session(*, client_ended: bool) -> H2Session:
    """A server session with streams 1, 3 and 5 requested and not answered yet; with
    ``client_ended`` the client has ended stream 1 (half-closed remote)."""
    session = H2Session(LIMITS, connect_protocol_enabled=True, on_output=lambda: None)
    session.start()
    session.receive(client_opening())
    session.receive(frame(0x4, 0x1, 0, b""))
    if client_ended:
        session.receive(frame(0x0, 0x1, 1, b""))
    session.take_outbound()
    return session


def stream_flags(session: H2Session) -> object:
    return {
        stream_id: (stream.state_machine.headers_sent, stream.state_machine.stream_closed_by)
        for stream_id, stream in session.conn.streams.items()
    }


@pytest.mark.parametrize("client_ended", [False, True])
@pytest.mark.parametrize("end_stream", [False, True])
def test_a_plain_200_is_written_as_h2_writes_it(client_ended: bool, end_stream: bool) -> None:
    direct, reference = (requested_session(client_ended=client_ended) for _ in range(2))
    direct.send_headers(1, [(b":status", b"200")], end_stream=end_stream)
    reference.conn.send_headers(1, [(b":status", b"200")], end_stream=end_stream)
    reference.flush()
    assert direct.take_outbound() == reference.take_outbound()
    assert state_of(direct) == state_of(reference)
    assert stream_flags(direct) == stream_flags(reference)
    # The HPACK context is untouched: h2's next block is the same on both.
    headers = [(b":status", b"200"), (b"x-next", b"1")]
    for session in (direct, reference):
        session.send_headers(3, headers)
    assert direct.take_outbound() == reference.take_outbound()


def test_a_plain_200_after_a_table_size_change_goes_through_h2() -> None:
    """RFC 7541 §4.2: the size update opens the next header block; h2's encoder writes it."""
    direct, reference = (requested_session(client_ended=False) for _ in range(2))
    settings_frame = frame(0x4, 0, 0, struct.pack(">HI", 0x1, 100))  # HEADER_TABLE_SIZE
    for session in (direct, reference):
        session.receive(settings_frame)
        session.take_outbound()
    direct.send_headers(1, [(b":status", b"200")])
    reference.conn.send_headers(1, [(b":status", b"200")])
    reference.flush()
    sent = direct.take_outbound()
    assert sent == reference.take_outbound()
    assert sent[9:10] != b"\x88"  # the block starts with the size update, not the field


def test_a_second_plain_200_is_refused_as_h2_refuses_it() -> None:
    """h2 takes it for trailers without END_STREAM, a ProtocolError: StreamUnusable."""
    session = requested_session(client_ended=False)
    session.send_headers(1, [(b":status", b"200")])
    with pytest.raises(StreamUnusable):
        session.send_headers(1, [(b":status", b"200")])


def test_a_plain_200_on_a_reset_stream_raises_as_h2_does() -> None:
    session = requested_session(client_ended=False)
    session.receive(frame(0x3, 0, 1, struct.pack(">I", ErrorCodes.CANCEL)))
    with pytest.raises(StreamUnusable):
        session.send_headers(1, [(b":status", b"200")])


@pytest.mark.parametrize("client_ended", [False, True])
def test_end_stream_is_written_as_h2_writes_it(client_ended: bool) -> None:
    direct, reference = (requested_session(client_ended=client_ended) for _ in range(2))
    for session in (direct, reference):
        session.send_headers(1, [(b":status", b"200")])
        session.take_outbound()
    direct.end_stream(1)
    reference.conn.end_stream(1)
    reference.flush()
    assert direct.take_outbound() == reference.take_outbound()
    assert state_of(direct) == state_of(reference)
    assert stream_flags(direct) == stream_flags(reference)


def test_end_stream_twice_raises_as_h2_does() -> None:
    session = requested_session(client_ended=False)
    session.send_headers(1, [(b":status", b"200")])
    session.end_stream(1)
    with pytest.raises(StreamUnusable):
        session.end_stream(1)


# ---- answer heads of ordinary requests (send_response_head) ----

_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
#: What h11's field-value grammar takes inside a value (no NUL, no CR/LF/VT/FF).
_VALUE_BYTES = bytes(b for b in range(0x21, 0x100) if b != 0x7F) + b"\x7f"

field_names = st.one_of(
    # h11 reads the framing fields itself (and the test adds its own content-length).
    st.text(_TOKEN_CHARS, min_size=1, max_size=12).filter(
        lambda name: name not in ("content-length", "transfer-encoding")
    ),
    # Common names, and those h2 keeps out of the HPACK table.
    st.sampled_from(
        [
            *("content-type", "date", "server", "cache-control", "set-cookie"),
            *("authorization", "proxy-authorization", "cookie"),
        ]
    ),
)
#: Names h2 drops or refuses (h11 passes them on; the exchange would have removed them).
dropped_names = st.sampled_from(["te", "connection", "keep-alive", "upgrade", "proxy-connection"])
field_values = st.one_of(
    st.just(b""),
    st.builds(
        b" ".join,
        st.lists(
            st.binary(min_size=1, max_size=30).map(lambda raw: raw.translate(_VALUE_MAP)),
            min_size=1,
            max_size=4,
        ),
    ),
)
_VALUE_MAP = bytes(_VALUE_BYTES[b % len(_VALUE_BYTES)] for b in range(256))


def parsed_by_h11(status: int, fields: list[tuple[str, bytes]]) -> list[tuple[bytes, bytes]]:
    """``fields`` as h11 hands them to the exchange, from the bytes a backend would send."""
    import h11

    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("host", "b")]))
    client.send(h11.EndOfMessage())
    head = f"HTTP/1.1 {status} X\r\n".encode()
    head += b"".join(name.encode() + b": " + value + b"\r\n" for name, value in fields)
    client.receive_data(head + b"content-length: 0\r\n\r\n")
    event = client.next_event()
    assert isinstance(event, (h11.Response, h11.InformationalResponse))
    return [(name, value) for name, value in event.headers if name != b"content-length"]


def refusal(send: Callable[[], object]) -> str | None:
    """The error h2 gave, by its words (StreamUnusable carries them), or None."""
    try:
        send()
    except (StreamUnusable, h2.exceptions.ProtocolError) as error:
        return str(error)
    return None


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([100, 103, 200, 204, 302, 404, 500]),
    fields=st.lists(st.tuples(field_names, field_values), max_size=6),
    dropped=st.lists(st.tuples(dropped_names, field_values), max_size=1),
    end_stream=st.booleans(),
    client_ended=st.booleans(),
)
def test_an_answer_head_is_written_as_h2_writes_it(
    status: int,
    fields: list[tuple[str, bytes]],
    dropped: list[tuple[str, bytes]],
    end_stream: bool,
    client_ended: bool,
) -> None:
    """The same head, the same bytes, the same stream states and the same HPACK table
    afterwards; or the same refusal."""
    fields = fields + dropped
    assert_written_as_h2_writes_it(
        status, parsed_by_h11(status, fields), end_stream and status >= 200, client_ended
    )


@pytest.mark.parametrize("end_stream", [False, True])
def test_an_answer_head_past_the_frame_size_continues_as_h2s_does(end_stream: bool) -> None:
    """HEADERS, then CONTINUATION frames (END_STREAM on the first, END_HEADERS on the last).
    Bytes whose Huffman codes are longer than 8 bits go into HPACK as they are: 16,512 of
    them pass the 16 KiB frame size."""
    headers = parsed_by_h11(200, [("x-big", bytes(range(0x80, 0x100)) * 129)])
    sent = assert_written_as_h2_writes_it(200, headers, end_stream, client_ended=False)
    second = 9 + int.from_bytes(sent[:3])
    assert (sent[3], sent[second + 3]) == (0x1, 0x9)  # HEADERS, CONTINUATION


def assert_written_as_h2_writes_it(
    status: int, headers: list[tuple[bytes, bytes]], end_stream: bool, client_ended: bool
) -> bytes:
    """Checks as the test above says; returns what was sent."""
    direct, reference = (requested_session(client_ended=client_ended) for _ in range(2))
    assert refusal(
        lambda: direct.send_response_head(1, status, headers, end_stream=end_stream)
    ) == refusal(
        lambda: reference.conn.send_headers(
            1, [(b":status", str(status).encode()), *headers], end_stream=end_stream
        )
    )
    reference.flush()
    sent = bytes(direct.take_outbound())
    assert sent == reference.take_outbound()
    assert state_of(direct) == state_of(reference)
    assert stream_flags(direct) == stream_flags(reference)
    # The HPACK context is the same: the next block is too.
    after = [(b":status", b"200"), (b"date", b"today"), *headers]
    assert refusal(lambda: direct.send_headers(3, after)) == refusal(
        lambda: reference.send_headers(3, after)
    )
    assert direct.take_outbound() == reference.take_outbound()
    return sent


def test_an_answer_head_after_the_response_is_refused_as_h2_refuses_it() -> None:
    session = requested_session(client_ended=False)
    session.send_response_head(1, 200, [(b"content-type", b"text/plain")], end_stream=False)
    with pytest.raises(StreamUnusable):
        session.send_response_head(1, 200, [(b"content-type", b"text/plain")], end_stream=False)


def test_an_answer_head_on_a_reset_stream_raises_as_h2_does() -> None:
    session = requested_session(client_ended=False)
    session.receive(frame(0x3, 0, 1, struct.pack(">I", ErrorCodes.CANCEL)))
    with pytest.raises(StreamUnusable):
        session.send_response_head(1, 200, [(b"content-type", b"text/plain")], end_stream=True)


def test_an_answer_head_announces_a_table_size_change_first() -> None:
    """RFC 7541 §4.2: the size update opens the next header block, written directly or not."""
    session = requested_session(client_ended=False)
    session.receive(frame(0x4, 0, 0, struct.pack(">HI", 0x1, 100)))  # HEADER_TABLE_SIZE
    session.take_outbound()
    session.send_response_head(1, 200, [(b"content-type", b"text/plain")], end_stream=True)
    sent = session.take_outbound()
    assert sent[3] == 0x1  # HEADERS
    assert sent[9] & 0xE0 == 0x20  # its block starts with a size update
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 100
    assert decoder.decode(bytes(sent[9:])) == [(":status", "200"), ("content-type", "text/plain")]


def reference_acknowledge(session: H2Session, stream_id: int, size: int) -> None:
    """The credit going back through h2 itself."""
    if size > 0:
        session.conn.acknowledge_received_data(size, stream_id)
        session.flush()


#: Windows small enough that both the streams' (20,000) and the connection's (h2's initial
#: 65,535, above three streams' worth) are given back within a few steps.
CREDIT_LIMITS = Limits(stream_window_bytes=20_000, max_concurrent_streams=3)

credit_steps = st.lists(
    st.one_of(
        st.tuples(st.just("data"), st.sampled_from(OPEN_STREAMS), st.integers(0, 8_000)),
        st.tuples(st.just("ack"), st.sampled_from(OPEN_STREAMS), st.integers(0, 24_000)),
        st.tuples(st.just("client_end"), st.sampled_from(OPEN_STREAMS), st.just(0)),
        st.tuples(st.just("client_reset"), st.sampled_from(OPEN_STREAMS), st.just(0)),
        st.tuples(st.just("reset"), st.sampled_from(OPEN_STREAMS), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(steps=credit_steps)
# Credit for a stream reset after its bytes came: the connection's window only.
@example(steps=[("data", 1, 8000), ("reset", 1, 0), ("ack", 1, 24_000)])
# One acknowledgement that updates both the connection's window and the stream's (past
# half of h2's 65,535-byte connection window): the connection's frame comes first.
@example(
    steps=[("data", stream_id, 8000) for stream_id in OPEN_STREAMS for _ in range(2)]
    + [("ack", 3, 24_000), ("ack", 5, 16_000)]
)
def test_credit_goes_back_as_h2_gives_it(steps: list[tuple[str, int, int]]) -> None:
    """Received bytes, their credit in any amounts (past the windows too), stream ends and
    resets either way: the WINDOW_UPDATEs written and h2's windows stay those of h2's own
    ``acknowledge_received_data``."""
    direct = opened_session(direct=True, limits=CREDIT_LIMITS)
    reference = opened_session(direct=True, limits=CREDIT_LIMITS)
    for step, stream_id, size in steps:
        if step == "ack":
            direct.acknowledge(stream_id, size)
            reference_acknowledge(reference, stream_id, size)
        else:
            data = {
                "data": frame(0x0, 0, stream_id, bytes(size)),
                "client_end": frame(0x0, 0x1, stream_id, b""),
                "client_reset": frame(0x3, 0, stream_id, struct.pack(">I", 8)),
                "reset": b"",
            }[step]
            outcomes = []
            for session in (direct, reference):
                if step == "reset":
                    session.reset(stream_id, ErrorCodes.CANCEL)
                outcomes.append(feed(session, [data]) if data else None)
            assert outcomes[0] == outcomes[1]
            if outcomes[0] is not None and outcomes[0][1] is not None:
                return  # a connection error (data past a window): h2 is done with it
        assert direct.take_outbound() == reference.take_outbound()
        assert state_of(direct) == state_of(reference)
