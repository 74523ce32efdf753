"""The fenced wait's kept record of a descriptor number shared with trio's own waits (a
writer's abort holds it; trio's reader finds it busy), reused after trio dropped it, and
after ``notify_closing`` with a writer on it. (From the review of the branch; holds for
trio's public wait as well.)"""

from __future__ import annotations

import socket

import trio
import trio.lowlevel
import trio.testing
from trio._core._run import GLOBAL_RUN_CONTEXT

from h2ws_proxy.transport.trio_waits import readable_waiter


def _pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _fill(sock: socket.socket) -> None:
    while True:
        try:
            sock.send(b"x" * 65536)
        except BlockingIOError:
            return


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(1 << 20)
        except BlockingIOError:
            return


async def test_the_kept_record_with_trios_writer_and_reader() -> None:
    wait = readable_waiter()
    registered = GLOBAL_RUN_CONTEXT.runner.io_manager._registered
    c, d = _pair()
    with c, d:
        _fill(c)
        woke: list[str] = []
        for _round in range(3):
            woke.clear()
            async with trio.open_nursery() as nursery:

                async def ours() -> None:
                    await wait(c)
                    woke.append("ours")

                async def theirs_reading() -> None:
                    try:
                        await trio.lowlevel.wait_readable(c)
                    except trio.BusyResourceError:
                        woke.append("busy")

                async def writer(scope: trio.CancelScope) -> None:
                    with scope:
                        await trio.lowlevel.wait_writable(c)
                        woke.append("write")

                writer_scope = trio.CancelScope()
                nursery.start_soon(ours)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(writer, writer_scope)
                nursery.start_soon(theirs_reading)
                await trio.testing.wait_all_tasks_blocked()
                assert woke == ["busy"]
                d.send(b"y")
                await trio.testing.wait_all_tasks_blocked()
                assert woke == ["busy", "ours"]
                assert c.recv(10) == b"y"
                writer_scope.cancel()  # trio's abort, on the record our wait set up
            assert c.fileno() not in registered
        # notify_closing with our reader and trio's writer on it, then a new socket there.
        got: list[type] = []
        async with trio.open_nursery() as nursery:

            async def ours_closed() -> None:
                try:
                    await wait(c)
                except trio.ClosedResourceError as error:
                    got.append(type(error))

            async def writer_closed() -> None:
                try:
                    await trio.lowlevel.wait_writable(c)
                except trio.ClosedResourceError as error:
                    got.append(type(error))

            nursery.start_soon(ours_closed)
            nursery.start_soon(writer_closed)
            await trio.testing.wait_all_tasks_blocked()
            fd = c.fileno()
            trio.lowlevel.notify_closing(c)
            c.close()
            e, f = _pair()  # before the woken tasks run: the number reused at once
            assert e.fileno() == fd

            async def ours_again() -> None:
                await wait(e)
                got.append(bytes)

            nursery.start_soon(ours_again)
            await trio.testing.wait_all_tasks_blocked()
            assert got == [trio.ClosedResourceError, trio.ClosedResourceError]
            f.send(b"z")
        assert got[-1] is bytes
        assert e.recv(10) == b"z"
        assert fd not in registered
        e.close()
        f.close()
