"""A polled tunnel's backend leaves the poller's epoll set by its close, with no ``epoll_ctl``.

Closing a socket's only descriptor drops it from every epoll set, so a tunnel that ends and
closes its backend in the same turn (``PolledDownward.close_tunnel``) only forgets it in
the poller (``BackendPoller.forget_closing``). A backend whose end comes while the tunnel
stays open (the client's side still open) is taken out of the set at once, as before: its
EOF stays readable, and the poller must not be woken by it again. The kernel's own list of
the set (``/proc/self/fdinfo``) is what is checked, with the ``EPOLL_CTL_DEL`` calls made.
"""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

import pytest
import trio

from h2ws_proxy.http2.polled_reads import PolledClientReads
from h2ws_proxy.transport.poller import BackendPoller
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient
from tests.helpers.records import ProxyRecords
from tests.integration.test_tunnel_end import (
    BACKEND_CLOSE,
    Rounds,
    client_close,
    close_and_end_at_once,
    opened,
    run_proxy,
)

pytestmark = pytest.mark.socket


class RecordingEpoll:
    """A poller's epoll, whose ``unregister`` calls (``EPOLL_CTL_DEL``) are recorded."""

    def __init__(self, real: select.epoll) -> None:
        self._real = real
        self.unregistered: list[int] = []

    def register(self, fd: int, mask: int) -> None:
        self._real.register(fd, mask)

    def unregister(self, fd: int) -> None:
        self.unregistered.append(fd)
        self._real.unregister(fd)

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        return self._real.poll(timeout, maxevents)

    def fileno(self) -> int:
        return self._real.fileno()

    def close(self) -> None:
        self._real.close()


class Pollers:
    """Every poller made while the test runs, each with a :class:`RecordingEpoll`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[BackendPoller] = []
        init = BackendPoller.__init__

        def recording(poller: BackendPoller, **options: Any) -> None:
            init(poller, **options)
            poller._epoll = RecordingEpoll(poller._epoll)  # type: ignore[assignment]
            self.made.append(poller)

        monkeypatch.setattr(BackendPoller, "__init__", recording)

    def the_one(self) -> tuple[BackendPoller, RecordingEpoll]:
        (poller,) = self.made
        assert isinstance(poller._epoll, RecordingEpoll)
        return poller, poller._epoll


def in_the_set(epoll: RecordingEpoll) -> list[int]:
    """The descriptors in the epoll set, as the kernel lists them."""
    info = Path(f"/proc/self/fdinfo/{epoll.fileno()}").read_text()
    return [int(line.split()[1]) for line in info.splitlines() if line.startswith("tfd:")]


def backends_in_the_set(poller: BackendPoller, epoll: RecordingEpoll) -> list[int]:
    """As :func:`in_the_set`, less the client's own socket, which the poller watches too on
    the run loop's data plane (``http2/polled_reads.py``)."""
    watchers = poller._watchers
    return [fd for fd in in_the_set(epoll) if not isinstance(watchers.get(fd), PolledClientReads)]


async def both_lines_clean(proxy_records: ProxyRecords) -> None:
    await proxy_records.wait_for(
        lambda r: len(proxy_records.named("tunnel.closed")) == 2, 10, "second tunnel.closed"
    )
    for line in proxy_records.named("tunnel.closed"):
        assert (line["close_code_client"], line["close_code_backend"], line["end"]) == (
            1000,
            1000,
            "clean",
        )


async def warm_up(client: H2TestClient) -> None:
    """A first tunnel, opened and ended: the proxy learns the backend's 101
    (``backend/known_101.py``), so the next one opens and runs without a task of its own,
    as ``compare.py``'s ``open`` tunnels do."""
    state = await opened(client)
    await client.send_data(state, client_close(), end_stream=True)
    with trio.fail_after(10):
        await client.finished(state)


async def answer_at_eof(connection: BackendConnection) -> None:
    await connection.accept(await connection.read_upgrade())
    while await connection.receive():  # the client's Close, then the proxy's FIN
        pass
    close_and_end_at_once(connection)


async def test_a_tunnel_closed_in_its_ends_turn_leaves_the_set_without_a_del(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, proxy_records: ProxyRecords
) -> None:
    """The usual end (``compare.py``'s ``open``): the client's Close with END_STREAM, then
    the backend's Close and FIN, and the tunnel closed in that poller round."""
    pollers = Pollers(monkeypatch)
    backend_rounds = Rounds(monkeypatch)
    watched: list[list[int]] = []

    async def answer_at_eof_seen(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        while await connection.receive():
            pass
        watched.append(backends_in_the_set(*pollers.the_one()))
        close_and_end_at_once(connection)

    backend = ScriptedBackend(answer_at_eof)

    async def test(client: H2TestClient) -> None:
        await warm_up(client)
        poller, epoll = pollers.the_one()
        epoll.unregistered.clear()
        backend.behaviour = answer_at_eof_seen
        state = await opened(client)
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
        assert (bytes(state.data), state.reset_code) == (BACKEND_CLOSE, None)
        rounds = backend_rounds.count
        await trio.sleep(0.2)
        assert backend_rounds.count == rounds  # not woken again by the closed socket
        assert backends_in_the_set(poller, epoll) == []
        assert epoll.unregistered == []  # the close took it out

    await run_proxy(nursery, backend, test)
    (in_the_set_then,) = watched
    assert len(in_the_set_then) == 1  # the backend was in the set till its end
    await both_lines_clean(proxy_records)


async def test_a_backend_that_ends_first_leaves_the_set_at_once(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, proxy_records: ProxyRecords
) -> None:
    """The backend's Close and FIN while the client's side is open: its socket stays open
    but out of the set (``EPOLL_CTL_DEL``), and the poller is not woken by its EOF again."""
    pollers = Pollers(monkeypatch)
    backend_rounds = Rounds(monkeypatch)
    asked = trio.Event()
    backend_fd: list[int] = []
    rounds_before: list[int] = []

    async def close_first(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        backend_fd.extend(backends_in_the_set(*pollers.the_one()))
        await asked.wait()
        rounds_before.append(backend_rounds.count)
        close_and_end_at_once(connection)
        while await connection.receive():  # the client's Close, then the proxy's FIN
            pass

    backend = ScriptedBackend(answer_at_eof)

    async def test(client: H2TestClient) -> None:
        await warm_up(client)
        poller, epoll = pollers.the_one()
        epoll.unregistered.clear()
        backend.behaviour = close_first
        state = await opened(client)
        asked.set()
        with trio.fail_after(10):
            await client.wait_for(lambda: state.ended)
        await trio.sleep(0.2)
        # Its end's round, and none for the EOF after.
        assert backend_rounds.count - rounds_before[0] == 1
        assert backends_in_the_set(poller, epoll) == []
        assert epoll.unregistered == backend_fd  # taken out as its end came
        await client.send_data(state, client_close(), end_stream=True)
        with trio.fail_after(10):
            await client.finished(state)
        assert epoll.unregistered == backend_fd  # and not again at its close

    await run_proxy(nursery, backend, test)
    assert len(backend_fd) == 1
    await both_lines_clean(proxy_records)
