"""H2Session's own rules around h2: the stream table's bounds and the count of open streams."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings

from h2ws_proxy.config import Limits
from h2ws_proxy.h2_session import H2Session

LIMIT = 4
REQUEST = [
    (":method", "CONNECT"),
    (":protocol", "websocket"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "proxy.test"),
    ("sec-websocket-version", "13"),
]


def connected_pair() -> tuple[h2.connection.H2Connection, H2Session]:
    session = H2Session(
        Limits(max_concurrent_streams=LIMIT), connect_protocol_enabled=True, on_output=lambda: None
    )
    session.start()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    session.receive(client.data_to_send())
    client.receive_data(bytes(session.take_outbound()))
    session.receive(client.data_to_send())
    # The client would stop at our limit; these tests go past it on purpose.
    client.remote_settings = h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        },
    )
    return client, session


def open_stream(client: h2.connection.H2Connection, session: H2Session) -> int:
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, REQUEST)
    session.receive(client.data_to_send())
    return stream_id


def test_closed_streams_leave_the_table_once_it_outgrows_the_limit() -> None:
    client, session = connected_pair()
    for _ in range(10 * LIMIT):
        stream_id = open_stream(client, session)
        # Both sides end the stream: h2 keeps it in its table as closed.
        session.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
        client.end_stream(stream_id)
        session.receive(client.data_to_send())
        assert len(session.conn.streams) <= LIMIT + 1
    assert session.conn.open_inbound_streams == 0


def test_open_streams_are_counted_exactly_past_the_limit() -> None:
    client, session = connected_pair()
    for expected in range(1, LIMIT + 3):
        open_stream(client, session)
        count = session.conn.open_inbound_streams
        # Within the limit the table's size stands in; past it the count is exact.
        assert count == expected
