"""A tunnel whose two Close frames and the client's end have all passed ends at the backend's
Close, without waiting for the backend's FIN, and its END_STREAM goes on the Close's frame.

The client's Close with END_STREAM goes to the backend as the Close and a FIN; the backend's
Close that answers it is the last thing the backend may send (RFC 6455 §5.5.1), and the
proxy, the backend's client, may close once it has sent and received a Close (§7.1.1). So
the polled downward direction (``relay/polled.py``) ends the tunnel at that Close rather
than reading once more for the EOF: a read per tunnel fewer, one DATA frame (the Close,
with END_STREAM) where there were two, and a backend that answers the Close but never ends
its side no longer holds the tunnel to the half-closed timeout.
"""

from __future__ import annotations

import os
import socket

import h2.events
import pytest
import trio

from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient
from tests.helpers.records import ProxyRecords
from tests.integration.test_tunnel_end import BACKEND_CLOSE, client_close, opened, run_proxy

pytestmark = pytest.mark.socket


async def test_the_backends_close_after_the_clients_end_ends_the_tunnel(
    nursery: trio.Nursery, proxy_records: ProxyRecords
) -> None:
    """The backend answers with its Close and keeps its side open: the client gets the
    Close and END_STREAM all the same, and the line says ``clean``."""
    client_finished = trio.Event()

    async def close_without_fin(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        while await connection.receive():  # the client's Close, then the proxy's FIN
            pass
        stream = connection.stream
        assert isinstance(stream, trio.SocketStream)
        os.write(stream.socket.fileno(), BACKEND_CLOSE)  # and no FIN until the client is done
        await client_finished.wait()

    async def test(client: H2TestClient) -> None:
        frames: list[h2.events.DataReceived] = []
        on_event = client._on_event

        def seen(event: h2.events.Event) -> None:
            if isinstance(event, h2.events.DataReceived):
                frames.append(event)
            on_event(event)

        client._on_event = seen  # type: ignore[method-assign]
        state = await opened(client)
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(5):  # well within the half-closed timeout (10 s)
            await client.finished(state)
        client_finished.set()
        assert (bytes(state.data), state.reset_code) == (BACKEND_CLOSE, None)
        (close_frame,) = frames  # the Close, with END_STREAM: no empty DATA frame after it
        assert close_frame.data == BACKEND_CLOSE
        assert close_frame.stream_ended is not None

    await run_proxy(nursery, ScriptedBackend(close_without_fin), test)
    line = (await proxy_records.wait_for(lambda r: r.event == "tunnel.closed", 10, "line")).fields
    assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
        1000,
        1000,
        "clean",
    )


async def test_a_backend_close_before_the_clients_end_still_waits_for_its_fin(
    nursery: trio.Nursery, proxy_records: ProxyRecords
) -> None:
    """The backend's Close first, its side kept open: the client's side is open too, so
    the tunnel goes on (the client's stream is not ended) until the backend's FIN."""
    fin = trio.Event()

    async def close_then_fin_later(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        stream = connection.stream
        assert isinstance(stream, trio.SocketStream)
        os.write(stream.socket.fileno(), BACKEND_CLOSE)
        await fin.wait()
        stream.socket.shutdown(socket.SHUT_WR)
        while await connection.receive():
            pass

    async def test(client: H2TestClient) -> None:
        state = await opened(client)
        with trio.fail_after(5):
            await client.wait_for(lambda: bytes(state.data) == BACKEND_CLOSE)
        await trio.sleep(0.2)
        assert not state.ended  # no END_STREAM before the backend's end
        fin.set()
        with trio.fail_after(5):
            await client.wait_for(lambda: state.ended)
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(5):
            await client.finished(state)

    await run_proxy(nursery, ScriptedBackend(close_then_fin_later), test)
    line = (await proxy_records.wait_for(lambda r: r.event == "tunnel.closed", 10, "line")).fields
    assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
        1000,
        1000,
        "clean",
    )
