"""ProxySession: our session as the front end drives it, against h2's client as the peer.

What it adds around the sans-IO session: the config's settings, the writer's wake-up after
every output, short answers, outbound heads made fit for HTTP/2, and streams over the limit
left to the front end to refuse.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

from h2ws_proxy.config import Limits
from h2ws_proxy.h2session import ErrorCode, RequestReceived, StreamUnusable
from h2ws_proxy.http2.proxy_session import ProxySession

LIMIT = 4
REQUEST = [
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "proxy.test"),
]


def connected_pair(
    limits: Limits | None = None, *, lift_limit: bool = True
) -> tuple[h2.connection.H2Connection, ProxySession, list[int]]:
    wakes: list[int] = []
    session = ProxySession(
        limits or Limits(max_concurrent_streams=LIMIT),
        connect_protocol_enabled=True,
        on_output=lambda: wakes.append(1),
    )
    session.start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    session.receive(client.data_to_send())
    client.receive_data(bytes(session.take_outbound()))
    session.receive(client.data_to_send())
    client.receive_data(bytes(session.take_outbound()))
    if not lift_limit:
        return client, session, wakes
    # The client would stop at our limit; some tests go past it on purpose.
    client.remote_settings = h2.settings.Settings(
        client=False,
        initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000},
    )
    return client, session, wakes


def open_stream(client: h2.connection.H2Connection, session: ProxySession) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, REQUEST, end_stream=True)
    events = session.receive(client.data_to_send())
    assert [type(event) for event in events] == [RequestReceived]
    return stream_id


def answered(headers: list[tuple[bytes, bytes]], *, twice: bool = False) -> object:
    """What the client receives for ``headers`` on a new stream (StreamUnusable if refused)."""
    client, session, _ = connected_pair()
    stream_id = open_stream(client, session)
    session.take_outbound()
    try:
        session.send_headers(stream_id, headers)
        if twice:
            session.send_headers(stream_id, headers, end_stream=True)
    except StreamUnusable:
        return StreamUnusable
    events = client.receive_data(bytes(session.take_outbound()))
    return [
        [tuple(field) for field in event.headers]
        for event in events
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived)
    ]


def test_the_preface_advertises_the_config_and_opens_the_connection_window() -> None:
    limits = Limits(max_concurrent_streams=8, stream_window_bytes=100_000)
    client, _, wakes = connected_pair(limits, lift_limit=False)
    settings = client.remote_settings
    assert settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] == 100_000
    assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
    assert settings[h2.settings.SettingCodes.ENABLE_PUSH] == 0
    # One stalled stream holds only its own window: the connection's has room for all.
    assert client.outbound_flow_control_window >= 8 * 100_000 - 65535
    assert wakes  # every output woke the writer


def test_a_plain_200_goes_out_as_it_is() -> None:
    assert answered([(b":status", b"200")]) == [[(b":status", b"200")]]


def test_a_200_sent_again_as_trailers_is_refused() -> None:
    assert answered([(b":status", b"200")], twice=True) is StreamUnusable


def test_fields_http2_forbids_never_go_out() -> None:
    # Relayed from a backend's answer, had a filter before missed them.
    stripped = [(b"connection", b"close"), (b"keep-alive", b"5"), (b"upgrade", b"websocket")]
    stripped += [(b"transfer-encoding", b"chunked"), (b"proxy-connection", b"close")]
    for field in stripped:
        assert answered([(b":status", b"200"), field, (b"x-kept", b"1")]) == [
            [(b":status", b"200"), (b"x-kept", b"1")]
        ]
    assert answered([(b":status", b"200"), (b"te", b"gzip")]) is StreamUnusable
    assert answered([(b":status", b"200"), (b"X-Upper", b" padded ")]) == [
        [(b":status", b"200"), (b"x-upper", b"padded")]
    ]


def test_credentials_are_never_indexed() -> None:
    client, session, _ = connected_pair()
    stream_id = open_stream(client, session)
    session.take_outbound()
    session.send_headers(stream_id, [(b":status", b"401"), (b"authorization", b"secret")])
    frame = bytes(session.take_outbound())
    fields = hpack.Decoder().decode(frame[9:], raw=True)
    # RFC 7541 §6.2.3: hpack hands a field sent as never indexed back as such.
    assert [type(field) for field in fields] == [
        hpack.HeaderTuple,
        hpack.NeverIndexedHeaderTuple,
    ]


def test_a_short_answer_fits_the_window_or_goes_without_its_body() -> None:
    client, session, _ = connected_pair()
    stream_id = open_stream(client, session)
    session.take_outbound()
    session.respond(stream_id, 404, "no route")
    events = client.receive_data(bytes(session.take_outbound()))
    heads = [event for event in events if isinstance(event, h2.events.ResponseReceived)]
    assert dict(heads[0].headers)[b":status"] == b"404"
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert body == b"no route\n"
    assert any(isinstance(event, h2.events.StreamEnded) for event in events)
    session.respond(stream_id, 500, "again")  # the stream is over: nothing, no error
    assert not session.take_outbound()


def test_streams_over_the_limit_are_left_to_the_front_end() -> None:
    client, session, _ = connected_pair()
    for _ in range(LIMIT + 2):
        open_stream(client, session)  # each reported, none refused by the session
    assert session.open_stream_count == LIMIT + 2
    session.take_outbound()
    session.reset(LIMIT * 2 + 3, ErrorCode.REFUSED_STREAM)
    events = client.receive_data(bytes(session.take_outbound()))
    assert [(type(e), e.error_code) for e in events] == [
        (h2.events.StreamReset, ErrorCode.REFUSED_STREAM)
    ]


def test_local_misuse_is_one_error_and_writes_nothing() -> None:
    client, session, wakes = connected_pair()
    stream_id = open_stream(client, session)
    session.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
    session.take_outbound()
    count = len(wakes)
    for call in (
        lambda: session.send_headers(stream_id, [(b":status", b"200")]),
        lambda: session.end_stream(stream_id),
        lambda: session.send_data(stream_id, b"late"),
    ):
        try:
            call()
        except StreamUnusable:
            pass
        else:
            raise AssertionError("a closed stream took a frame")
    assert not session.take_outbound()
    assert len(wakes) == count


# ---- a whole answer in one call (send_prepared_answer) ----

FRAME_HEADERS, FRAME_DATA, END_STREAM = 0x1, 0x0, 0x1


def frames_of(data: bytes) -> list[tuple[int, int, int]]:
    """(type, flags, payload length) of each frame in ``data``."""
    out, pos = [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        out.append((data[pos + 3], data[pos + 4], length))
        pos += 9 + length
    return out


def prepared_answer(
    body: bytes, window: int | None = None
) -> tuple[int, bytes, list[h2.events.Event], int]:
    """(what ``send_prepared_answer`` said went, the bytes it queued, the client's events,
    wake-ups) for a 200 and ``body`` on a new stream, the client's window at ``window``."""
    client, session, wakes = connected_pair()
    if window is not None:
        client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        session.receive(client.data_to_send())
        client.receive_data(bytes(session.take_outbound()))
    stream_id = open_stream(client, session)
    session.take_outbound()
    count = len(wakes)
    head = [(b":status", b"200"), (b"content-length", str(len(body)).encode())]
    sent = session.send_prepared_answer(stream_id, head, body)
    out = bytes(session.take_outbound())
    return sent, out, client.receive_data(out), len(wakes) - count


def test_a_whole_answer_is_its_head_and_one_data_frame_with_the_end() -> None:
    sent, out, events, wakes = prepared_answer(b"hello")
    assert sent == 5
    # The frames send_prepared_head and send_data(end_stream=True) would have sent.
    assert frames_of(out)[1:] == [(FRAME_DATA, END_STREAM, 5)]
    assert frames_of(out)[0][:2] == (FRAME_HEADERS, 0x4)  # END_HEADERS only
    assert [type(event) for event in events] == [
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.StreamEnded,
    ]
    assert wakes == 1  # one wake-up for the three


def test_a_whole_answer_without_body_bytes_ends_on_an_empty_data_frame() -> None:
    # As the head and then the end (``end_now``) went before: HEADERS, then DATA(END_STREAM).
    sent, out, events, _ = prepared_answer(b"")
    assert sent == 0
    assert frames_of(out)[1:] == [(FRAME_DATA, END_STREAM, 0)]
    assert h2.events.StreamEnded in [type(event) for event in events]


def test_a_whole_answer_past_the_window_sends_what_fits_and_keeps_the_end() -> None:
    sent, out, events, _ = prepared_answer(b"x" * 10, window=4)
    assert sent == 4
    assert frames_of(out)[1:] == [(FRAME_DATA, 0, 4)]  # no END_STREAM: the rest is owed
    assert h2.events.StreamEnded not in [type(event) for event in events]


def test_a_whole_answer_on_a_closed_stream_is_refused_and_writes_nothing() -> None:
    client, session, wakes = connected_pair()
    stream_id = open_stream(client, session)
    session.reset(stream_id, ErrorCode.CANCEL)
    session.take_outbound()
    count = len(wakes)
    try:
        session.send_prepared_answer(stream_id, [(b":status", b"200")], b"late")
    except StreamUnusable:
        pass
    else:
        raise AssertionError("a closed stream took an answer")
    assert not session.take_outbound()
    assert len(wakes) == count
