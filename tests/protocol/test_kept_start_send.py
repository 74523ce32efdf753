"""A lean start's write of the request head (relay/kept_start.py): the socket's own send,
where anything short of the whole head, an error included, leaves the request to the task
path with nothing kept: the server given back, the connection closed and out of the
poller."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.relay.kept_start import KeptStart, LastRequest, start_on_kept_connection
from h2ws_proxy.transport.poller import BackendPoller
from tests.protocol.test_repeated_request_intake import KeptServers


@pytest.fixture
async def poller() -> AsyncIterator[BackendPoller]:
    made = BackendPoller()
    yield made
    made.close()


def parked_connection(kept: KeptServers, poller: BackendPoller) -> BackendConnection:
    kept.park(0, poller)
    (connection,) = kept.server.pool._idle.everything()
    return connection


def fill_send_buffer(connection: BackendConnection) -> None:
    """Our side's send buffer full (the peer reads nothing): the next send takes nothing."""
    socket = connection.socket
    assert socket is not None
    while socket.send_nowait(bytes(65536)):
        pass


def start_first_request(kept: KeptServers, poller: BackendPoller) -> KeptStart | None:
    """The lean start of the first route's request on the connection parked in ``poller``."""
    request, route = kept.request(0)
    return start_on_kept_connection(
        kept.server, route, request, None, lambda: poller, LastRequest()
    )


def assert_given_up(
    kept: KeptServers, connection: BackendConnection, poller: BackendPoller
) -> None:
    assert connection.stream.fileno() == -1  # type: ignore[attr-defined]  # closed
    assert connection.fd not in poller._watchers
    assert not kept.server.pool._idle.everything()
    balancer = kept.server.balancers.of(kept.config.routes[0].backend)
    assert [server.active for server in balancer.servers] == [0]


async def test_the_head_goes_whole_with_the_sockets_own_send(poller: BackendPoller) -> None:
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backend = kept.park(0, poller)
        start = start_first_request(kept, poller)
        assert start is not None
        connection = start[2]
        assert connection.send_head is not None
        assert backend.recv(65536).startswith(b"GET /0 HTTP/1.1\r\n")
    finally:
        kept.close()


async def test_a_head_the_kernel_does_not_take_leaves_the_request_to_the_task_path(
    poller: BackendPoller,
) -> None:
    kept = KeptServers("http://127.0.0.1:9")
    try:
        connection = parked_connection(kept, poller)
        fill_send_buffer(connection)
        start = start_first_request(kept, poller)
        assert start is None
        assert_given_up(kept, connection, poller)
    finally:
        kept.close()


async def test_a_send_error_leaves_the_request_to_the_task_path(poller: BackendPoller) -> None:
    kept = KeptServers("http://127.0.0.1:9")
    try:
        connection = parked_connection(kept, poller)

        def broken(_data: bytes) -> int:
            raise ConnectionResetError("reset by peer")

        connection.send_head = broken
        start = start_first_request(kept, poller)
        assert start is None
        assert_given_up(kept, connection, poller)
    finally:
        kept.close()


async def test_the_sockets_own_send_error_leaves_the_request_to_the_task_path(
    poller: BackendPoller,
) -> None:
    """A real ``OSError`` from the socket's own send (EPIPE: its write side was shut down
    behind the stream's back, so the pool's quiet check still passes), not a stand-in: the
    request goes to the task path, nothing sent, nothing kept."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        connection = parked_connection(kept, poller)
        connection.stream._sock.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]
        start = start_first_request(kept, poller)
        assert start is None
        assert_given_up(kept, connection, poller)
    finally:
        kept.close()
