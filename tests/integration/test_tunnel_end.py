"""A tunnel's end as the backend sends it: its Close and its FIN, read in one poller round.

A backend answers the WebSocket's Close with its own and then ends its side (RFC 6455
§7.1.1); both are usually in the socket together by the time the proxy looks. The polled
downward direction (``relay/polled.py``) reads once more after a chunk that brought the
backend's Close, so the tunnel ends in that round rather than the poller's next, and ends
as before: the Close and END_STREAM to the client, both close codes in the access line,
``end=clean``. Real loopback sockets; the backend writes its Close and its FIN in one step
(no checkpoint between), so the proxy finds both together.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio
from wsproto.frame_protocol import CloseReason, FrameProtocol

from h2ws_proxy.relay.polled import PolledDownward
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.setup import backend_url, make_config
from tests.integration.test_tunnel_opening import CONNECT

pytestmark = pytest.mark.socket

#: The backend's Close 1000 (unmasked: server to client).
BACKEND_CLOSE = b"\x88\x02\x03\xe8"


def client_close() -> bytes:
    return FrameProtocol(client=True, extensions=[]).close(CloseReason(1000))


def close_and_end_at_once(connection: BackendConnection) -> None:
    """The backend's Close and FIN with no checkpoint between them."""
    stream = connection.stream
    assert isinstance(stream, trio.SocketStream)
    os.write(stream.socket.fileno(), BACKEND_CLOSE)
    stream.socket.shutdown(socket.SHUT_WR)


class Rounds:
    """Counts the poller rounds that read a tunnel's backend: the rounds
    (``BackendPoller.rounds``) in which ``PolledDownward.on_readable`` ran. Not every round:
    on the data plane the connection's client reads are rounds of the same poller too
    (``http2/polled_reads.py``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._seen: set[tuple[int, int]] = set()
        on_readable = PolledDownward.on_readable

        def counted(watcher: PolledDownward) -> None:
            poller = watcher._poller
            self._seen.add((id(poller), poller.rounds))
            on_readable(watcher)

        monkeypatch.setattr(PolledDownward, "on_readable", counted)

    @property
    def count(self) -> int:
        return len(self._seen)


async def run_proxy(
    nursery: trio.Nursery, backend: ScriptedBackend, test: Callable[[H2TestClient], Awaitable[None]]
) -> None:
    port = await nursery.start(backend.run)
    config = make_config(("/", backend_url(port)))
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(functools.partial(serve, config))
        address = bound.listeners[0]
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with open_h2_client(stream) as client:
            await test(client)
        proxy.cancel_scope.cancel()


async def opened(client: H2TestClient) -> StreamState:
    state = await client.response(await client.request(CONNECT))
    assert state.status == 200
    return state


async def test_the_backends_close_and_end_after_the_clients_end_take_one_round(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, proxy_records: ProxyRecords
) -> None:
    """``compare.py``'s ``open``: the client's Close with END_STREAM, the backend's answer."""
    rounds = Rounds(monkeypatch)
    before: list[int] = []

    async def answer_at_eof(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        while await connection.receive():  # the client's Close, then the proxy's FIN
            pass
        before.append(rounds.count)
        close_and_end_at_once(connection)

    async def test(client: H2TestClient) -> None:
        state = await opened(client)
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
        assert (bytes(state.data), state.reset_code) == (BACKEND_CLOSE, None)

    await run_proxy(nursery, ScriptedBackend(answer_at_eof), test)
    assert rounds.count - before[0] == 1  # the Close and the FIN: one round
    line = (await proxy_records.wait_for(lambda r: r.event == "tunnel.closed", 10, "line")).fields
    assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
        1000,
        1000,
        "clean",
    )


async def test_a_backend_that_closes_first_half_closes_in_one_round(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, proxy_records: ProxyRecords
) -> None:
    """The backend's Close and FIN first: END_STREAM to the client in the same round, the
    client's side still open; the client's Close and end then end the tunnel cleanly."""
    rounds = Rounds(monkeypatch)
    before: list[int] = []
    asked = trio.Event()

    async def close_first(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        await asked.wait()
        before.append(rounds.count)
        close_and_end_at_once(connection)
        while await connection.receive():  # the client's Close, then the proxy's FIN
            pass

    async def test(client: H2TestClient) -> None:
        state = await opened(client)
        asked.set()
        with trio.fail_after(10):
            await client.wait_for(lambda: state.ended)
        assert rounds.count - before[0] == 1
        assert (bytes(state.data), state.reset_code) == (BACKEND_CLOSE, None)
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
        assert state.reset_code is None

    await run_proxy(nursery, ScriptedBackend(close_first), test)
    line = (await proxy_records.wait_for(lambda r: r.event == "tunnel.closed", 10, "line")).fields
    assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
        1000,
        1000,
        "clean",
    )
