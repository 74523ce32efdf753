"""The fenced wait's kept records (per descriptor number: a ``WaitTaskRescheduled``, its
abort and a spare ``EpollWaiters``) are bounded: a burst of connections that each read once,
then closed, leaves nearly nothing behind for the loop's life, as trio's own wait leaves
nothing once the descriptors are closed. (From the review of the branch: without the bound
it left ~570 bytes per descriptor number.)"""

from __future__ import annotations

import gc
import resource
import socket
import tracemalloc

import trio
import trio.testing
from trio._core._run import GLOBAL_RUN_CONTEXT

from h2ws_proxy.transport.socket_stream import LeanSocketStream
from h2ws_proxy.transport.trio_waits import _KEPT_DESCRIPTORS, readable_waiter

SPIKE = 2000


def _descriptors_for(pairs: int) -> None:
    """The test process's soft descriptor limit raised to what ``pairs`` socket pairs need
    (as the proxy raises its own, server/descriptors.py): the soft limit is often 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * pairs + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"hard limit {hard} < {needed}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_spike_of_closed_connections_leaves_no_wait_records_behind() -> None:
    _descriptors_for(SPIKE)
    # One connection first: the loop's waiter and everything made once are there already.
    a, b = socket.socketpair()
    warm = LeanSocketStream(a)
    b.send(b"x")
    await warm.receive_some(10)
    b.send(b"y")
    await warm.receive_some(10)
    warm.close_now()
    b.close()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        pairs = [socket.socketpair() for _ in range(SPIKE)]
        streams = [LeanSocketStream(a) for a, _ in pairs]
        async with trio.open_nursery() as nursery:
            # Every connection waits for its first bytes (the proxy's client reads do).
            for stream in streams:
                nursery.start_soon(stream.receive_some, 10)
            await trio.testing.wait_all_tasks_blocked()
            for _, peer in pairs:
                peer.send(b"z")
        for stream in streams:
            stream.close_now()
        for _, peer in pairs:
            peer.close()
        del pairs, streams, stream, peer
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [
        stat
        for stat in after.compare_to(before, "filename")
        if "h2ws_proxy" in stat.traceback[0].filename and stat.count_diff > 0
    ]
    blocks = sum(stat.count_diff for stat in ours)
    kept = sum(stat.size_diff for stat in ours)
    # Trio's own wait keeps a block or two (a table grown for the spike); kept records for
    # every number waited on would be several blocks per descriptor, for the loop's life.
    assert blocks < SPIKE // 10, f"{blocks} blocks, {kept} bytes kept after {SPIKE} closed"


async def test_a_pending_wait_survives_its_kept_record_being_emptied() -> None:
    """The table is emptied while a wait is pending on one of its numbers: a cancel still
    aborts that wait with the record it set, readiness still wakes the next one, and a wait
    on a number whose record is in use does not take a fresh spare for it."""
    wait = readable_waiter()
    registered = GLOBAL_RUN_CONTEXT.runner.io_manager._registered
    _descriptors_for(2 * _KEPT_DESCRIPTORS + 1)
    a, b = socket.socketpair()
    others = [socket.socketpair() for _ in range(2 * _KEPT_DESCRIPTORS)]
    try:
        async with trio.open_nursery() as nursery:
            cancelled = trio.CancelScope()

            async def pending() -> None:
                with cancelled:
                    await wait(a)

            nursery.start_soon(pending)
            await trio.testing.wait_all_tasks_blocked()
            record = registered[a.fileno()]
            for mine, peer in others:  # every one's first wait: the table fills and empties
                peer.send(b"x")
                await wait(mine)
            assert registered[a.fileno()] is record
            cancelled.cancel()
        assert a.fileno() not in registered
        b.send(b"y")
        with trio.fail_after(2):
            await wait(a)
        assert a.recv(10) == b"y"
    finally:
        for mine, peer in [(a, b), *others]:
            mine.close()
            peer.close()
