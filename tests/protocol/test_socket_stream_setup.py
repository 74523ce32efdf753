"""LeanSocketStream's connect and close paths: what a new tunnel's backend stream does first
and last (see socket_stream.py's rules on waiting and on ``aclose``)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from h2ws_proxy.transport.socket_stream import LeanSocketStream, open_tcp_to_ip

pytestmark = pytest.mark.socket


async def test_connected_stream_waits_for_the_first_answer_and_reads_it() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        stream = await open_tcp_to_ip("127.0.0.1", listener.getsockname()[1])
        accepted, _ = listener.accept()
        with accepted:
            await stream.send_all(b"request")
            assert accepted.recv(10) == b"request"
            received: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def receive() -> None:
                    received.append(await stream.receive_some(100))

                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                assert not received  # it waits: nothing has been answered yet
                accepted.send(b"answer")
            assert received == [b"answer"]
            # Bytes already queued when a receive starts are read too.
            accepted.send(b"more")
            await trio.sleep(0.05)
            assert await stream.receive_some(100) == b"more"
        await stream.aclose()


async def test_connect_to_a_closed_port_is_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        await open_tcp_to_ip("127.0.0.1", port)


async def test_connect_honours_a_cancelled_scope() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with trio.CancelScope() as scope:
            scope.cancel()
            await open_tcp_to_ip("127.0.0.1", listener.getsockname()[1])
        assert scope.cancelled_caught


async def test_aclose_when_cancelled_closes_and_leaves_the_cancel_to_the_next_checkpoint() -> None:
    ours, theirs = socket.socketpair()
    stream = LeanSocketStream(ours)
    with theirs:
        with trio.CancelScope() as scope:
            scope.cancel()
            await stream.aclose()  # no Cancelled here ...
            assert ours.fileno() == -1
            await trio.lowlevel.checkpoint()  # ... but here
            pytest.fail("the cancellation was lost")  # pragma: no cover
        assert scope.cancelled_caught
        assert theirs.recv(10) == b""  # the peer sees the close
        await trio.aclose_forcefully(stream)  # closing twice is fine
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some(10)


async def test_aclose_is_a_schedule_point() -> None:
    ours, theirs = socket.socketpair()
    stream = LeanSocketStream(ours)
    task = trio.lowlevel.current_task()
    with theirs:
        # What trio.testing.assert_checkpoints counts, less the cancel point it also wants.
        before = task._schedule_points
        await stream.aclose()
        assert task._schedule_points == before + 1
