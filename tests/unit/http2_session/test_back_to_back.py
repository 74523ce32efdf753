"""A client-role session and a server-role session wired back to back, in memory."""

from __future__ import annotations

import pytest

from h2ws_proxy.h2session import (
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    H2Session,
    InformationalResponseReceived,
    LocalSettings,
    ProtocolNotNegotiated,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    Role,
    SettingCode,
    SettingsAcknowledged,
    StreamReset,
    StreamState,
    StreamUnusable,
    TooManyStreams,
    TrailersReceived,
    WindowUpdated,
)

CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":path", b"/chat"),
    (b":authority", b"example.com"),
]
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]


class Pair:
    """Two sessions and the events each side saw since the last :meth:`exchange`."""

    def __init__(self, server: LocalSettings | None = None, client: LocalSettings | None = None):
        self.client = H2Session(Role.CLIENT, client or LocalSettings())
        self.server = H2Session(Role.SERVER, server or LocalSettings(enable_connect_protocol=True))
        self.client.initiate()
        self.server.initiate()
        self.exchange()

    def exchange(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until both are quiet; (client's events, server's events)."""
        client_events: list[Event] = []
        server_events: list[Event] = []
        while True:
            to_server, to_client = self.client.take_outbound(), self.server.take_outbound()
            if not to_server and not to_client:
                return client_events, server_events
            server_events += self.server.receive_data(bytes(to_server))
            client_events += self.client.receive_data(bytes(to_client))


def test_handshake_settles_settings_both_ways() -> None:
    pair = Pair()
    assert pair.client.peer_settings.enable_connect_protocol
    assert not pair.server.peer_settings.enable_connect_protocol
    assert pair.client.peer_settings.max_concurrent_streams == 100


def test_a_request_and_its_response_with_trailers() -> None:
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    pair.client.send_headers(stream_id, GET, end_stream=True)
    _, server_events = pair.exchange()
    size = sum(len(name) + len(value) + 32 for name, value in GET)  # RFC 9113 §6.5.2
    assert server_events == [RequestReceived(stream_id, GET, True, size)]
    assert pair.server.stream_state(stream_id) is StreamState.HALF_CLOSED_REMOTE
    pair.server.send_headers(stream_id, [(b":status", b"103"), (b"link", b"</a>")])
    pair.server.send_headers(stream_id, [(b":status", b"200")])
    assert pair.server.send_data(stream_id, b"body") == 4
    pair.server.send_headers(stream_id, [(b"x-t", b"1")], end_stream=True)
    client_events, _ = pair.exchange()
    assert client_events == [
        InformationalResponseReceived(stream_id, [(b":status", b"103"), (b"link", b"</a>")]),
        ResponseReceived(stream_id, [(b":status", b"200")], False),
        DataReceived(stream_id, b"body", 4, False),
        TrailersReceived(stream_id, [(b"x-t", b"1")]),
    ]
    assert pair.client.open_stream_count == pair.server.open_stream_count == 0
    with pytest.raises(StreamUnusable):
        pair.server.send_data(stream_id, b"late")


def test_extended_connect_with_data_both_ways_under_flow_control() -> None:
    small = LocalSettings(initial_window_size=1000, connection_window=65535)
    pair = Pair(
        server=LocalSettings(enable_connect_protocol=True, initial_window_size=1000), client=small
    )
    stream_id = pair.client.next_stream_id()
    pair.client.send_headers(stream_id, CONNECT)
    pair.exchange()
    pair.server.send_headers(stream_id, [(b":status", b"200")])
    assert pair.client.send_data(stream_id, b"a" * 3000) == 1000  # the server's stream window
    assert pair.server.send_data(stream_id, b"b" * 3000) == 1000  # the client's
    assert pair.client.local_window(stream_id) == 0
    assert pair.client.send_data(stream_id, b"more") == 0  # never raises for a shut window
    client_events, server_events = pair.exchange()
    assert [e for e in server_events if isinstance(e, DataReceived)] == [
        DataReceived(stream_id, b"a" * 1000, 1000, False)
    ]
    # Credit policy (flow.py): a window used up gets credit once a quarter is owed...
    pair.server.acknowledge_received_data(stream_id, 100)
    assert pair.exchange() == ([], [])
    pair.server.acknowledge_received_data(stream_id, 300)
    client_events, _ = pair.exchange()
    assert client_events == [WindowUpdated(stream_id, 400)]
    # ...otherwise once half the window is owed; the connection's (65535) is not yet due.
    pair.server.acknowledge_received_data(stream_id, 499)
    assert pair.exchange() == ([], [])
    pair.server.acknowledge_received_data(stream_id, 101)
    client_events, _ = pair.exchange()
    assert client_events == [WindowUpdated(stream_id, 600)]
    assert pair.client.local_window(stream_id) == 1000
    assert pair.client.send_data(stream_id, b"c" * 10, end_stream=True) == 10
    pair.server.end_stream(stream_id)
    client_events, server_events = pair.exchange()
    assert server_events == [DataReceived(stream_id, b"c" * 10, 10, True)]
    assert isinstance(client_events[-1], DataReceived)
    assert client_events[-1].end_stream


def test_extended_connect_needs_the_servers_setting() -> None:
    pair = Pair(server=LocalSettings(enable_connect_protocol=False))
    with pytest.raises(ProtocolNotNegotiated):
        pair.client.send_headers(1, CONNECT)
    assert pair.client.take_outbound() == b""


def test_resets_either_way() -> None:
    pair = Pair()
    pair.client.send_headers(1, CONNECT)
    pair.client.send_headers(3, CONNECT)
    pair.exchange()
    pair.client.reset_stream(1, ErrorCode.CANCEL)
    pair.server.reset_stream(3, 0x99)
    client_events, server_events = pair.exchange()
    assert server_events == [StreamReset(1, ErrorCode.CANCEL, remote=True)]
    assert client_events == [StreamReset(3, 0x99, remote=True)]
    pair.client.reset_stream(1, ErrorCode.CANCEL)  # already closed: nothing
    assert pair.client.take_outbound() == b""


def test_goaway_from_the_server_lets_open_streams_finish() -> None:
    pair = Pair()
    pair.client.send_headers(1, CONNECT)
    pair.exchange()
    pair.client.send_headers(3, CONNECT)  # in flight when the server says goodbye
    pair.server.send_goaway()
    client_events, server_events = pair.exchange()
    assert client_events == [
        GoAwayReceived(ErrorCode.NO_ERROR, 1, b""),
        StreamReset(3, ErrorCode.REFUSED_STREAM, remote=True),
    ]
    assert server_events == []  # stream 3 is above the last stream id: ignored
    with pytest.raises(StreamUnusable):
        pair.client.send_headers(5, CONNECT)
    pair.server.send_headers(1, [(b":status", b"200")])
    pair.server.send_data(1, b"still here", end_stream=True)
    client_events, _ = pair.exchange()
    assert client_events[-1] == DataReceived(1, b"still here", 10, True)


def test_client_respects_the_servers_stream_limit() -> None:
    pair = Pair(server=LocalSettings(max_concurrent_streams=1))
    pair.client.send_headers(1, GET)
    with pytest.raises(TooManyStreams):
        pair.client.send_headers(3, GET)


def test_settings_update_and_ack() -> None:
    pair = Pair()
    pair.server.update_settings({SettingCode.INITIAL_WINDOW_SIZE: 100})
    client_events, server_events = pair.exchange()
    assert client_events == [RemoteSettingsChanged({SettingCode.INITIAL_WINDOW_SIZE: 100})]
    assert server_events == [SettingsAcknowledged({SettingCode.INITIAL_WINDOW_SIZE: 100})]
    pair.client.send_headers(1, GET)
    assert pair.client.send_data(1, b"x" * 500) == 100


def test_headers_larger_than_a_frame_go_as_continuations() -> None:
    pair = Pair()
    big = [*GET, (b"x-big", b"v" * 40000)]
    pair.client.send_headers(1, big, end_stream=True)
    _, server_events = pair.exchange()
    assert isinstance(server_events[0], RequestReceived)
    assert server_events[0].headers == big
    assert not server_events[0].oversized


def test_header_list_over_our_limit_is_flagged() -> None:
    pair = Pair(server=LocalSettings(max_header_list_size=1000))
    pair.client.send_headers(1, [*GET, (b"x-big", b"v" * 2000)], end_stream=True)
    _, server_events = pair.exchange()
    assert isinstance(server_events[0], RequestReceived)
    assert server_events[0].oversized


def test_peer_table_size_changes_are_announced_to_the_decoder() -> None:
    pair = Pair()
    fields = [*GET, (b"x-one", b"1")]
    pair.client.send_headers(1, fields, end_stream=True)
    pair.exchange()
    # The server shrinks its table to 0 and back: the client's next block must say so
    # (RFC 7541 §4.2), or its indexes would name entries the server evicted.
    pair.server.update_settings({SettingCode.HEADER_TABLE_SIZE: 0})
    pair.exchange()
    pair.server.update_settings({SettingCode.HEADER_TABLE_SIZE: 4096})
    pair.exchange()
    pair.client.send_headers(3, fields, end_stream=True)
    _, server_events = pair.exchange()
    assert isinstance(server_events[0], RequestReceived)
    assert server_events[0].headers == fields
