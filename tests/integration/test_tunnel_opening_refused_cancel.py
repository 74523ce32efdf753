"""A client reset that reaches the proxy in the same read as its extended CONNECT, to a
backend that refuses: the polled opening (``http2/tunnel_opening.py``) must end it as the
task's own dial does (cancelled, nothing answered), whatever its first send learnt."""

from __future__ import annotations

import functools
import socket

import pytest
import trio

from h2ws_proxy.http2 import tunnel_opening
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.setup import backend_url, make_config
from tests.integration.test_tunnel_opening import CANCEL, CONNECT

pytestmark = pytest.mark.socket


@pytest.mark.parametrize("polled", [True, False], ids=["polled_opening", "task_path_control"])
async def test_a_reset_with_the_connect_to_a_refusing_backend_ends_cancelled(
    monkeypatch: pytest.MonkeyPatch, proxy_records: ProxyRecords, polled: bool
) -> None:
    if not polled:
        monkeypatch.setattr(tunnel_opening, "_open_polled", lambda *_args: False)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel refuses
    port = closed.getsockname()[1]
    config = make_config(("/", backend_url(port)))
    stats = ServerStats()
    with closed:
        async with trio.open_nursery() as proxy:
            bound: BoundAddresses = await proxy.start(functools.partial(serve, config, stats=stats))
            address = bound.listeners[0]
            stream = await trio.open_tcp_stream(address.host, address.port)
            async with open_h2_client(stream) as client:
                stream_id = client.conn.get_next_available_stream_id()
                client.conn.send_headers(stream_id, CONNECT)
                client.conn.reset_stream(stream_id, CANCEL)
                await client.flush()  # both frames in one write: one read of the proxy's
                await proxy_records.wait_for(
                    lambda record: record.event == "tunnel.refused", 10, "for the reset tunnel"
                )
                await client.ping()
            proxy.cancel_scope.cancel()
    refused = proxy_records.named("tunnel.refused")
    assert [(line["status"], line["end"]) for line in refused] == [("-", "client_aborted")]
    assert proxy_records.named("h2.request_refused") == []  # no 502 for a reset stream
