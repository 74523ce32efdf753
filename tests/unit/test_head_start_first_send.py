"""A new tunnel's dial from the reader's turn (``backend/head_start.py``): on Linux the
upgrade's first send is what asks whether the connect completed, with no ``getpeername``
before it; a connect still in progress or refused is handed to the task as before."""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import pytest
import trio

from h2ws_proxy.backend import head_start
from h2ws_proxy.backend.balancer import ServerState
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.http.upgrade_wire import UpgradeRequest
from h2ws_proxy.transport import socket_stream

pytestmark = [
    pytest.mark.socket,
    pytest.mark.skipif(not socket_stream.SEND_TELLS_CONNECT, reason="Linux's send semantics"),
]

UPGRADE = UpgradeRequest(target=b"/", headers=(), data=b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")


def _server(port: int) -> ServerState:
    return ServerState(BackendAddress(scheme="http", host="127.0.0.1", port=port))


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)  # an accept queue of one: a full one leaves later connects pending
    yield sock
    sock.close()


async def test_a_near_backend_gets_the_upgrade_with_no_getpeername(
    listener: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    def asked(_sock: socket.socket) -> bool:
        raise AssertionError("getpeername asked before the first send")

    monkeypatch.setattr(socket_stream, "_connected", asked)
    head = head_start.start_dial(_server(listener.getsockname()[1]), b"k", UPGRADE, Limits(), None)
    assert head.stream is not None
    assert head.begun is None
    assert head.error is None
    assert head.unsent == b""
    assert head.connected >= head.started
    accepted, _ = listener.accept()
    with accepted:
        accepted.settimeout(5)
        assert accepted.recv(1000) == UPGRADE.data
    head.stream.close_now()


async def test_a_refused_connect_goes_to_the_task_with_its_error() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # bound, never listening: the kernel refuses
    head = head_start.start_dial(_server(port), b"k", UPGRADE, Limits(), None)
    assert head.stream is None
    assert head.begun is not None
    sock, code = head.begun
    assert code == errno.ECONNREFUSED  # the send took it from the socket: it is kept here
    assert head.unsent == UPGRADE.data
    with pytest.raises(ConnectionRefusedError) as raised:
        await socket_stream.open_tcp_to_ip("127.0.0.1", port, begun=head.begun)
    assert raised.value.errno == errno.ECONNREFUSED
    assert sock.fileno() == -1  # closed by the task's dial


async def test_a_connect_still_in_progress_sends_nothing_and_the_task_completes_it(
    listener: socket.socket,
) -> None:
    port = listener.getsockname()[1]
    heads = []
    with trio.fail_after(10):
        # Fill the accept queue until the kernel leaves a connect pending (its SYN dropped).
        for _ in range(16):
            head = head_start.start_dial(_server(port), b"k", UPGRADE, Limits(), None)
            heads.append(head)
            if head.begun is not None:
                break
        pending = heads[-1]
        assert pending.begun is not None, "no connect was left pending"
        assert pending.begun[1] == errno.EINPROGRESS
        assert pending.stream is None
        assert pending.unsent == UPGRADE.data  # nothing queued before the connection
        for earlier in heads[:-1]:
            assert earlier.stream is not None
            earlier.stream.close_now()
        # The queue drained, the pending connect completes and the task's dial finishes it.
        accepted = [listener.accept()[0] for _ in heads[:-1]]

        async def accept_last() -> None:
            await trio.lowlevel.wait_readable(listener)
            accepted.append(listener.accept()[0])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_last)
            stream = await socket_stream.open_tcp_to_ip("127.0.0.1", port, begun=pending.begun)
        await stream.send_all(pending.unsent)
        last = accepted[-1]
        last.settimeout(5)
        assert last.recv(1000) == UPGRADE.data
    stream.close_now()
    for sock in accepted:
        sock.close()


async def test_an_upgrade_the_first_send_takes_in_part_is_sent_whole_once_in_order(
    listener: socket.socket,
) -> None:
    """(Review.) A first send that completes the connect but takes only part of a large
    upgrade: the rest is ``unsent``, and the task's send of it gives the backend every
    byte once, in order."""
    big = UpgradeRequest(target=b"/", headers=(), data=bytes(range(256)) * 4096)  # 1 MiB
    head = head_start.start_dial(_server(listener.getsockname()[1]), b"k", big, Limits(), None)
    assert head.stream is not None
    assert head.begun is None
    assert head.error is None
    assert 0 < len(head.unsent) < len(big.data)  # taken in part
    assert big.data.endswith(head.unsent)
    accepted, _ = listener.accept()
    received = bytearray()
    with accepted, trio.fail_after(10):
        accepted.setblocking(False)

        async def read_all() -> None:
            while len(received) < len(big.data):
                await trio.lowlevel.wait_readable(accepted)
                received.extend(accepted.recv(1 << 16))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await head.stream.send_all(head.unsent)
    assert bytes(received) == big.data
    head.stream.close_now()
