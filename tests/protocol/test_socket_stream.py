"""LeanSocketStream on a real socketpair: bytes, EOF, backpressure, errors, closing."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.socket_stream import (
    NOTSENT_LOWAT_BYTES,
    LeanSocketStream,
    is_ip_literal,
    open_tcp_to_ip,
)
from tests.helpers.listeners import full_accept_queue

pytestmark = pytest.mark.socket


def _pair() -> tuple[LeanSocketStream, socket.socket]:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return LeanSocketStream(ours), theirs


async def test_bytes_both_ways_and_eof() -> None:
    stream, peer = _pair()
    with peer:
        await stream.send_all(b"hello")
        await trio.lowlevel.wait_readable(peer)
        assert peer.recv(100) == b"hello"
        peer.send(b"world")
        assert await stream.receive_some(100) == b"world"
        # The read was short, so the next one waits for readability first: it must still
        # see bytes that arrive while it waits.
        async with trio.open_nursery() as nursery:

            async def send_later() -> None:
                await trio.testing.wait_all_tasks_blocked()
                peer.send(b"later")

            nursery.start_soon(send_later)
            assert await stream.receive_some(100) == b"later"
        await stream.send_eof()
        await stream.send_eof()  # idempotent
        await trio.lowlevel.wait_readable(peer)
        assert peer.recv(100) == b""
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"after eof")
        peer.shutdown(socket.SHUT_WR)
        assert await stream.receive_some(100) == b""
        await stream.aclose()


async def test_receive_checkpoints_when_data_was_waiting() -> None:
    stream, peer = _pair()
    with peer:
        peer.send(b"x" * 10)
        with trio.testing.assert_checkpoints():
            assert await stream.receive_some(4) == b"xxxx"  # a full read: tries recv first
        with trio.testing.assert_checkpoints():
            assert await stream.receive_some(100) == b"x" * 6
        await stream.aclose()


async def test_send_all_waits_for_a_full_buffer() -> None:
    stream, peer = _pair()
    payload = b"y" * (4 * 1024 * 1024)  # far more than a socketpair buffers
    received = bytearray()

    async def drain() -> None:
        while len(received) < len(payload):
            await trio.lowlevel.wait_readable(peer)
            received.extend(peer.recv(1 << 20))

    with peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            await stream.send_all(payload)
        assert received == payload
        await stream.aclose()


async def test_peer_reset_is_broken_and_close_is_closed() -> None:
    stream, peer = _pair()
    peer.close()
    with pytest.raises(trio.BrokenResourceError):
        await stream.send_all(b"z" * 65536)  # a unix socketpair fails at once (EPIPE)
    await stream.aclose()
    await stream.aclose()  # idempotent
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some(10)
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"z")


async def _receive_until_closed(stream: LeanSocketStream, errors: list[BaseException]) -> None:
    """Wait to receive; the ClosedResourceError a close wakes it with goes to ``errors``."""
    try:
        await stream.receive_some(10)
    except trio.ClosedResourceError as error:
        errors.append(error)


async def test_close_wakes_a_waiting_receiver() -> None:
    stream, peer = _pair()
    errors: list[BaseException] = []

    with peer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_until_closed, stream, errors)
            await trio.testing.wait_all_tasks_blocked()
            await stream.aclose()
    assert len(errors) == 1


async def test_close_wakes_a_waiting_receiver_after_a_send_waited_and_finished() -> None:
    """Each direction's wait is tracked on its own: a send's wait that ended must not make
    the close forget the receive still waiting (it would never wake, and trio would keep a
    record of a descriptor that is gone)."""
    stream, peer = _pair()
    errors: list[BaseException] = []

    with peer, trio.fail_after(10):  # a receiver left waiting would hang the nursery
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_receive_until_closed, stream, errors)
            await trio.testing.wait_all_tasks_blocked()
            async with trio.open_nursery() as sending:
                sending.start_soon(stream.send_all, b"x" * (4 * 1024 * 1024))
                received = 0
                while received < 4 * 1024 * 1024:  # the send waits for room, then ends
                    await trio.lowlevel.wait_readable(peer)
                    received += len(peer.recv(1024 * 1024))
            await stream.aclose()
    assert len(errors) == 1


@pytest.mark.parametrize("wait_ends", ["answered", "cancelled"])
async def test_a_closed_streams_descriptor_number_can_be_waited_on_again(wait_ends: str) -> None:
    """Closing after a wait ended skips trio's notify_closing: trio must hold nothing for
    the descriptor, so a new socket given the same number is watched afresh."""
    stream, peer = _pair()
    with peer:
        fd = stream.fileno()
        with trio.move_on_after(0 if wait_ends == "cancelled" else 10):
            if wait_ends == "answered":
                peer.send(b"x")
            await stream.receive_some(10)
        await stream.aclose()
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert fd in (ours.fileno(), theirs.fileno())  # the lowest free numbers come back
        reused, other = (ours, theirs) if ours.fileno() == fd else (theirs, ours)
        other.send(b"y")
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(reused)
        assert reused.recv(10) == b"y"


async def test_open_tcp_to_ip_connects_and_reports_refusal() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        stream = await open_tcp_to_ip("127.0.0.1", port)
        assert stream._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # As trio.SocketStream: the kernel's unsent backlog stays bounded (backpressure).
        lowat = stream._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
        assert lowat == NOTSENT_LOWAT_BYTES
        accepted, _ = listener.accept()
        with accepted:
            await stream.send_all(b"ping")
            assert accepted.recv(10) == b"ping"
        await stream.aclose()
    # The listener is closed: nothing listens on that port any more.
    with pytest.raises(ConnectionRefusedError):
        await open_tcp_to_ip("127.0.0.1", port)
    assert is_ip_literal("::1")
    assert is_ip_literal("127.0.0.1")
    assert not is_ip_literal("localhost")


async def test_send_nowait_takes_what_fits_and_reports_errors() -> None:
    stream, peer = _pair()
    with peer:
        assert stream.send_nowait(b"abc") == 3
        await trio.lowlevel.wait_readable(peer)
        assert peer.recv(10) == b"abc"
        # Fill the kernel's buffer: a short count, then 0, never a wait or an exception.
        total = 0
        while (sent := stream.send_nowait(bytes(65536))) > 0:
            total += sent
        assert total > 0
        assert stream.send_nowait(b"more") == 0
        peer.close()
        with pytest.raises(trio.BrokenResourceError):
            stream.send_nowait(b"x")  # a unix socketpair: EPIPE at once
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            stream.send_nowait(b"x")


async def test_open_tcp_to_ip_calls_before_wait_only_when_it_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[float] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        stream = await open_tcp_to_ip(
            "127.0.0.1", listener.getsockname()[1], before_wait=lambda: calls.append(1.0)
        )
        await stream.aclose()
    assert calls == []  # a loopback connect completes at once
    listener, fillers = full_accept_queue()
    try:
        with trio.move_on_after(30):
            await open_tcp_to_ip(
                "127.0.0.1",
                listener.getsockname()[1],
                before_wait=lambda: calls.append(trio.current_time()),
            )
        assert calls == [0.0]  # called once, before the wait
    finally:
        for sock in [listener, *fillers]:
            sock.close()


async def test_a_failed_end_fails_again_when_asked_again() -> None:
    """A tunnel's reader may try the FIN first and leave a failure to the pump, which asks
    again: the second attempt must fail too, not pass as sent."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stream = await open_tcp_to_ip("127.0.0.1", listener.getsockname()[1])
        accepted, _ = listener.accept()
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        accepted.close()  # a reset
        await trio.lowlevel.wait_readable(stream._sock)
        for _ in range(2):
            with pytest.raises(trio.BrokenResourceError):
                stream.end_now()
        await stream.aclose()


@pytest.mark.parametrize("poll", [True, False], ids=["poll", "peek"])
async def test_quiet_means_nothing_to_read_and_no_end(
    poll: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the backend pool asks of an idle connection; both ways of asking agree, and
    asking consumes nothing."""
    if not poll:
        monkeypatch.setattr("h2ws_proxy.transport.socket_stream._QUIET_POLL", None)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        fresh = [await open_tcp_to_ip("127.0.0.1", listener.getsockname()[1]) for _ in range(3)]
        peers = [listener.accept()[0] for _ in fresh]
        sent_bytes, closed, _reset = fresh
        assert [stream.is_quiet() for stream in fresh] == [True, True, True]
        peers[0].send(b"x")  # bytes nobody asked for
        peers[1].shutdown(socket.SHUT_WR)  # the backend closed its idle connection
        peers[2].setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peers[2].close()  # RST
        for stream in fresh:
            await trio.lowlevel.wait_readable(stream.fileno())
        assert [stream.is_quiet() for stream in fresh] == [False, False, False]
        assert await sent_bytes.receive_some(10) == b"x"  # still there: nothing consumed
        assert await closed.receive_some(10) == b""
        assert sent_bytes.is_quiet()
        for stream in fresh:
            await stream.aclose()
        for peer in peers:
            peer.close()
