"""A plain connection's client reads made by its poller's rounds (http2/polled_reads.py): the
task read loop's rules kept. A real poller on its own task, real sockets (a socketpair as
the client's connection); the writer is reduced to the two things the reads ask of it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from h2ws_proxy.http2.client_writer import READER_HIGH_WATER
from h2ws_proxy.http2.polled_reads import PolledClientReads
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream


class OutputBacklog:
    """What the reads ask of the connection's writer: how much output waits, and a wait
    for it to drain below a bound."""

    def __init__(self) -> None:
        self.queued = 0
        self._drained = trio.Event()

    def outbound_bytes(self) -> int:
        return self.queued

    async def wait_outbound_below(self, limit: int) -> None:
        while self.queued > limit:
            await self._drained.wait()
            self._drained = trio.Event()

    def drain(self) -> None:
        self.queued = 0
        self._drained.set()


class Harness:
    def __init__(self, nursery: trio.Nursery, act_result: bool = True) -> None:
        self.ours, self.client = socket.socketpair()
        self.poller = BackendPoller()
        nursery.start_soon(self.poller.run)
        self.backlog = OutputBacklog()
        self.scope = trio.CancelScope()
        self.acted: list[bytes] = []
        self.act_result = act_result
        self.reads = PolledClientReads(
            LeanSocketStream(self.ours),
            self.act,
            poller=self.poller,
            writer=self.backlog,  # type: ignore[arg-type]
            scope=self.scope,
            nursery=nursery,
        )
        self.error: BaseException | None = None
        self.over = trio.Event()

    def act(self, data: bytes) -> bool:
        self.acted.append(data)
        if data == b"boom":
            raise ValueError("acting failed")
        return self.act_result

    async def run(self) -> None:
        try:
            with self.scope:
                await self.reads.run()
        except ValueError as error:
            self.error = error
        finally:
            self.over.set()


@pytest.fixture
async def harness(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    made = Harness(nursery)
    nursery.start_soon(made.run)
    await trio.testing.wait_all_tasks_blocked()
    yield made
    made.client.close()
    made.ours.close()


async def test_each_read_is_acted_on_in_a_round(harness: Harness) -> None:
    rounds = harness.poller.rounds
    harness.client.send(b"one")
    await trio.testing.wait_all_tasks_blocked()
    harness.client.send(b"two")
    await trio.testing.wait_all_tasks_blocked()
    assert harness.acted == [b"one", b"two"]
    assert harness.poller.rounds == rounds + 2


async def test_an_eof_ends_the_reading(harness: Harness) -> None:
    harness.client.shutdown(socket.SHUT_WR)
    with trio.fail_after(5):
        await harness.over.wait()
    assert harness.error is None
    # Out of the poller's set: nothing more reaches it.
    assert harness.reads.watched is False


async def test_no_read_above_the_readers_high_water_until_the_output_drains(
    harness: Harness,
) -> None:
    harness.backlog.queued = READER_HIGH_WATER + 1
    harness.client.send(b"held")
    await trio.testing.wait_all_tasks_blocked()
    assert harness.acted == []
    assert harness.reads.watched is False  # paused: the socket stays ready, unread
    harness.backlog.drain()
    await trio.testing.wait_all_tasks_blocked()
    assert harness.acted == [b"held"]


async def test_nothing_is_read_once_the_reading_was_told_to_end(harness: Harness) -> None:
    # In one round: the scope cancelled (as by a connection error), then the client's bytes.
    harness.scope.cancel()
    harness.client.send(b"late")
    harness.poller.dispatch()
    assert harness.acted == []
    with trio.fail_after(5):
        await harness.over.wait()


async def test_an_error_acting_on_a_read_is_raised_by_the_connections_task(
    harness: Harness,
) -> None:
    harness.client.send(b"boom")
    with trio.fail_after(5):
        await harness.over.wait()
    assert isinstance(harness.error, ValueError)


async def test_the_connection_over_ends_the_reading(nursery: trio.Nursery) -> None:
    made = Harness(nursery, act_result=False)
    nursery.start_soon(made.run)
    await trio.testing.wait_all_tasks_blocked()
    made.client.send(b"goaway")
    with trio.fail_after(5):
        await made.over.wait()
    assert made.acted == [b"goaway"]
    made.client.close()
    made.ours.close()
