"""Flow control, settings, HPACK and client-role rules, from raw frames."""

from __future__ import annotations

import hpack
import pytest

from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    ErrorCode,
    H2Session,
    LocalSettings,
    RequestReceived,
    ResponseReceived,
    Role,
    SessionUsageError,
    SettingCode,
    StreamReset,
    StreamUnusable,
)
from tests.unit.http2_session import wire as w

E = ErrorCode
OPEN_1 = w.headers(1, w.block(w.REQUEST))


def client() -> H2Session:
    """A client session past the handshake, stream 1 opened."""
    session = H2Session(Role.CLIENT, LocalSettings())
    session.initiate()
    session.receive_data(w.settings())
    session.send_headers(1, w.REQUEST)
    session.take_outbound()
    return session


# -- our preface and the connection window ---------------------------------------------------


def test_initiate_sends_settings_and_raises_the_connection_window() -> None:
    session = H2Session(Role.SERVER, LocalSettings(connection_window=2**20, max_frame_size=2**15))
    session.initiate()
    frames = w.parse(session.take_outbound())
    assert [f.kind for f in frames] == [w.SETTINGS, w.WINDOW_UPDATE]
    assert frames[1].increment == 2**20 - 65535
    session = H2Session(Role.CLIENT, LocalSettings(enable_connect_protocol=True))
    session.initiate()
    wire = bytes(session.take_outbound())
    assert wire.startswith(w.PREFACE)
    assert b"\x00\x08\x00\x00\x00\x01" not in wire  # ENABLE_CONNECT_PROTOCOL: servers only


def test_local_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        LocalSettings(max_frame_size=100)
    with pytest.raises(ValueError, match="initial_window_size"):
        LocalSettings(initial_window_size=2**31)


# -- flow control ------------------------------------------------------------------------------


def test_data_over_the_connection_window_is_a_connection_error() -> None:
    session = w.server(initial_window_size=2**20)  # streams are not the limit
    session.receive_data(w.settings(ack=True) + OPEN_1)
    events = session.receive_data(w.data(1, bytes(16384)) * 4 + w.data(1, bytes(100)))
    assert events[-1] == ConnectionFailed(E.FLOW_CONTROL_ERROR, "DATA over connection window")


def test_a_larger_stream_window_applies_before_the_ack() -> None:
    session = w.server(initial_window_size=100000, connection_window=2**20)
    session.receive_data(OPEN_1)
    events = session.receive_data(w.data(1, bytes(16384)) * 5)
    assert len(events) == 5
    assert all(isinstance(e, DataReceived) for e in events)


def test_a_smaller_stream_window_binds_once_acked() -> None:
    session = w.server(initial_window_size=1000)
    session.receive_data(OPEN_1)
    assert isinstance(session.receive_data(w.data(1, bytes(5000)))[0], DataReceived)
    session.receive_data(w.settings(ack=True))  # now 1000, and stream 1 has used 5000
    assert session.receive_data(w.data(1, b"x")) == [
        StreamReset(1, E.FLOW_CONTROL_ERROR, remote=False)
    ]


def test_credit_is_returned_per_half_window_for_stream_and_connection() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.data(1, bytes(16384)) * 3)
    session.acknowledge_received_data(1, 30000)
    assert session.take_outbound() == b""
    session.acknowledge_received_data(1, 3000)
    assert w.summary(session.take_outbound()) == [
        (w.WINDOW_UPDATE, 0, 33000),
        (w.WINDOW_UPDATE, 1, 33000),
    ]


def test_padding_is_credited_at_once() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    events = session.receive_data(w.data(1, b"abc", pad=200) * 200)
    assert events[0] == DataReceived(1, b"abc", 204, False)
    # 200 * 201 bytes of padding: past half the window, so credit went back already.
    assert [s[0] for s in w.summary(session.take_outbound())] == [w.WINDOW_UPDATE] * 2


def test_initial_window_change_moves_open_streams_send_windows() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.receive_data(w.settings((SettingCode.INITIAL_WINDOW_SIZE, 10)))
    session.send_headers(1, [(b":status", b"200")])
    assert session.send_data(1, b"x" * 100) == 10
    session.receive_data(w.settings((SettingCode.INITIAL_WINDOW_SIZE, 0)))
    assert session.local_window(1) == 0  # -10 in truth (RFC 9113 §6.9.2)
    session.receive_data(w.window_update(1, 15))
    assert session.local_window(1) == 5


def test_initial_window_change_that_overflows_a_stream_is_a_connection_error() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.window_update(1, 2**31 - 1 - 65535))
    events = session.receive_data(w.settings((SettingCode.INITIAL_WINDOW_SIZE, 65536)))
    assert events[-1] == ConnectionFailed(E.FLOW_CONTROL_ERROR, "window over 2^31-1")


def test_send_data_splits_by_the_peers_max_frame_size() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.window_update(0, 100000) + w.window_update(1, 100000))
    session.send_headers(1, [(b":status", b"200")])
    session.take_outbound()
    assert session.send_data(1, memoryview(bytes(40000)), end_stream=True) == 40000
    frames = w.parse(session.take_outbound())
    assert [(len(f.payload), f.flags) for f in frames] == [(16384, 0), (16384, 0), (7232, 1)]
    with pytest.raises(StreamUnusable):
        session.end_stream(1)


# -- header blocks -------------------------------------------------------------------------------


def test_cookie_crumbs_are_joined() -> None:
    session = w.server()
    fields = [*w.REQUEST, (b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2")]
    events = session.receive_data(w.headers(1, w.block(fields)))
    assert isinstance(events[0], RequestReceived)
    assert events[0].headers == [*w.REQUEST, (b"x", b"y"), (b"cookie", b"a=1; b=2")]


def test_a_header_block_too_long_to_hold_is_a_connection_error() -> None:
    session = w.server(max_header_list_size=100)
    wire = w.headers(1, bytes(16000), end_headers=False)
    wire += w.frame(w.CONTINUATION, 0, 1, bytes(16000)) * 4
    events = session.receive_data(wire)
    assert events[-1] == ConnectionFailed(E.ENHANCE_YOUR_CALM, "header block too long")


def test_a_header_list_hpack_cannot_hold_is_enhance_your_calm() -> None:
    session = w.server(max_header_list_size=100)
    encoder = hpack.Encoder()
    block = encoder.encode([*w.REQUEST, (b"x", b"v" * 300)])
    block += encoder.encode([(b"x", b"v" * 300)]) * 10  # indexed: 1 byte, 333 decoded
    events = session.receive_data(w.headers(1, block))
    assert isinstance(events[-1], ConnectionFailed)
    assert events[-1].error_code == E.ENHANCE_YOUR_CALM


def test_our_encoder_announces_a_shrink_then_grow() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST)))
    session.receive_data(w.settings((1, 0)) + w.settings((1, 0)) + w.settings((1, 4096)))
    session.take_outbound()
    session.send_headers(1, [(b":status", b"200"), (b"x-a", b"b")])
    block = w.parse(session.take_outbound())[0].payload
    assert block.startswith(b"\x20\x3f\xe1\x1f")  # size update 0, then 4096 (RFC 7541 §4.2)
    decoder = hpack.Decoder()
    assert decoder.decode(block, raw=True) == [(b":status", b"200"), (b"x-a", b"b")]


def test_the_same_table_size_again_announces_nothing() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.settings((1, 4096)))
    session.take_outbound()
    session.send_headers(1, [(b":status", b"200")])
    assert w.parse(session.take_outbound())[0].payload == b"\x88"


def test_trailers_must_end_the_stream_when_we_send_them() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.send_headers(1, [(b":status", b"200")])
    with pytest.raises(SessionUsageError):
        session.send_headers(1, [(b"x", b"y")])


# -- client role ---------------------------------------------------------------------------------


def test_client_role_reads_responses_and_refuses_push() -> None:
    session = client()
    encoder = hpack.Encoder()
    events = session.receive_data(
        w.headers(1, encoder.encode([(b":status", b"200")])) + w.data(1, b"hi", end_stream=True)
    )
    assert events == [
        ResponseReceived(1, [(b":status", b"200")], False),
        DataReceived(1, b"hi", 2, True),
    ]
    events = session.receive_data(w.frame(w.PUSH_PROMISE, 4, 1, bytes(4)))
    assert events[-1] == ConnectionFailed(E.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (w.headers(2, b"\x88"), E.PROTOCOL_ERROR),  # a server cannot open streams
        (w.headers(3, b"\x88"), E.PROTOCOL_ERROR),  # nor answer one never opened
        (w.settings((2, 1)), E.PROTOCOL_ERROR),  # ENABLE_PUSH=1 from a server (§6.5.2)
    ],
)
def test_client_role_connection_errors(wire: bytes, code: ErrorCode) -> None:
    events = client().receive_data(wire)
    assert isinstance(events[-1], ConnectionFailed)
    assert events[-1].error_code == code


def test_an_informational_response_cannot_end_the_stream() -> None:
    session = client()
    events = session.receive_data(
        w.headers(1, hpack.Encoder().encode([(b":status", b"100")]), end_stream=True)
    )
    assert events == [StreamReset(1, E.PROTOCOL_ERROR, remote=False)]


def test_the_servers_preface_must_start_with_settings() -> None:
    session = H2Session(Role.CLIENT, LocalSettings())
    session.initiate()
    events = session.receive_data(w.ping())
    assert events[-1] == ConnectionFailed(E.PROTOCOL_ERROR, "first frame is not SETTINGS")


def test_the_clients_preface_must_go_on_with_settings() -> None:
    """A whole HEADERS block (the receive loop's short way) is no exception."""
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    events = session.receive_data(w.PREFACE + w.headers(1, w.block(w.REQUEST)))
    assert events == [ConnectionFailed(E.PROTOCOL_ERROR, "first frame is not SETTINGS")]


def test_close_is_final() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.close(E.INTERNAL_ERROR, "bye")
    assert w.summary(session.take_outbound()) == [(w.GOAWAY, 1, E.INTERNAL_ERROR)]
    assert session.receive_data(w.ping()) == []
    with pytest.raises(StreamUnusable):
        session.send_data(1, b"x")
    assert session.local_window(1) == 0


def test_end_stream_on_a_negative_window_leaves_the_windows_alone() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.settings((SettingCode.INITIAL_WINDOW_SIZE, 10)))
    session.send_headers(1, [(b":status", b"200")])
    assert session.send_data(1, b"x" * 10) == 10
    session.receive_data(w.settings((SettingCode.INITIAL_WINDOW_SIZE, 0)))  # stream: -10
    session.end_stream(1)  # an empty DATA frame costs no window
    session.receive_data(w.window_update(0, 100))
    assert session.local_window(1) == 0  # closed for sending
    frames = w.parse(session.take_outbound())
    assert (frames[-1].kind, frames[-1].flags, frames[-1].payload) == (w.DATA, w.END_STREAM, b"")


def test_receive_data_takes_bytearray_and_memoryview() -> None:
    session = w.server()
    session.receive_data(bytearray(OPEN_1))
    events = session.receive_data(memoryview(w.data(1, b"abc")))
    assert events == [DataReceived(1, b"abc", 3, False)]
    assert type(events[0].data) is bytes


def test_push_cannot_be_enabled_and_settings_acks_are_counted() -> None:
    with pytest.raises(ValueError, match="push"):
        LocalSettings(enable_push=True)
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    assert session.unacknowledged_settings == 1
    session.receive_data(w.PREFACE + w.settings() + w.settings(ack=True))
    assert session.unacknowledged_settings == 0


def test_data_waits_for_the_final_head() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    with pytest.raises(SessionUsageError):
        session.send_data(1, b"early")
    with pytest.raises(SessionUsageError):
        session.send_headers(1, [(b"x", b"no status")])
    session.send_headers(1, [(b":status", b"103")])
    with pytest.raises(SessionUsageError):
        session.end_stream(1)
    session.send_headers(1, [(b":status", b"200")])
    session.end_stream(1)


def test_a_lowered_header_table_must_be_announced_once_acked() -> None:
    # RFC 7541 §4.2: after our SETTINGS_HEADER_TABLE_SIZE=0 is ACKed, the peer's next block
    # opens with a size update to 0 at most; hpack checks the table at each block's end.
    for block, failed in ((b"\x20" + w.block(w.REQUEST), False), (w.block(w.REQUEST), True)):
        session = w.server(header_table_size=0)
        events = session.receive_data(w.settings(ack=True) + w.headers(1, block))
        assert isinstance(events[-1], ConnectionFailed) is failed
        if failed:
            assert events[-1] == ConnectionFailed(
                ErrorCode.COMPRESSION_ERROR, "Encoder did not shrink table size to within the max"
            )


def test_before_the_ack_the_old_table_size_is_still_allowed() -> None:
    session = w.server(header_table_size=0)
    assert isinstance(session.receive_data(OPEN_1)[0], RequestReceived)


@pytest.mark.parametrize("block", [b"\x00\x05ab", b"\x00\x01a\x85ab", b"\x00\x81"])
def test_truncated_hpack_strings_are_compression_errors(block: bytes) -> None:
    events = w.server().receive_data(w.headers(1, block))
    assert isinstance(events[-1], ConnectionFailed)
    assert events[-1].error_code == ErrorCode.COMPRESSION_ERROR
