"""A tunnel opened without a task (http2/tunnel_opening.py) ends every opening as the task did.

Each test runs twice: ``polled_opening`` opens the tunnel under test after a first tunnel
taught the proxy the backend's plain 101 (``backend/known_101.py``), so the reader's turn
dials, the connection's poller waits for the answer and a 101 like the first opens the
tunnel with no task; anything else is handed to the task from where it got.
``task_path_control`` makes the same opening where the task does all of it (the opening
from the reader's turn switched off), the behaviour the polled one must match. Real
loopback sockets: the polled opening only dials IP addresses with the default dial.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from h2ws_proxy.http2 import frontend, stream_tasks, tunnel_opening
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ServerStats
from h2ws_proxy.relay.relay_state import Relay
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.records import ProxyRecords
from tests.helpers.setup import backend_url, make_config

pytestmark = pytest.mark.socket

CANCEL = 0x8
PATHS = pytest.mark.parametrize(
    "polled", [True, False], ids=["polled_opening", "task_path_control"]
)
Behaviour = Callable[[BackendConnection], Awaitable[None]]
CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"proxy.test"),
    (b"sec-websocket-version", b"13"),
]


def teach_then(behaviour: Behaviour) -> Behaviour:
    """The backend's behaviour: its first connection a plain echoing WebSocket (the tunnel
    that teaches the proxy its 101), every later one ``behaviour``."""
    connections = [0]

    async def run(connection: BackendConnection) -> None:
        connections[0] += 1
        if connections[0] == 1:
            await connection.accept(await connection.read_upgrade())
            await connection.echo_until_eof()
        else:
            await behaviour(connection)

    return run


async def echo_through(client: H2TestClient, data: bytes, first: bytes = b"") -> None:
    """Open a tunnel, receive ``first`` (sent behind the 101), have ``data`` echoed, and
    end it both ways (the echo backend ends at the proxy's FIN); its end must be clean."""
    state = await client.response(await client.request(CONNECT))
    assert state.status == 200
    with trio.fail_after(10):
        await client.wait_for(lambda: bytes(state.data) == first)
        await client.send_data(state, data)
        await client.wait_for(lambda: bytes(state.data) == first + data)
        await client.send_data(state, b"", end_stream=True)
        await client.finished(state)
    assert state.reset_code is None


class Case:
    """A proxy in front of a scripted backend, and its client."""

    def __init__(self, client: H2TestClient, backend: ScriptedBackend, stats: ServerStats):
        self.client, self.backend, self.stats = client, backend, stats
        self.tasks_served = self.handed_off = 0

    async def teach(self) -> None:
        """The first tunnel: opened, echoed, closed both ways."""
        await echo_through(self.client, b"first")
        with trio.fail_after(10):
            await self.backend.connections[0].closed.wait()


async def run_case(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    polled: bool,
    behaviour: Behaviour,
    test: Callable[[Case], Awaitable[None]],
    **limits: float,
) -> tuple[ServerStats, int, int]:
    """Start a backend and the proxy, teach the proxy the 101, then run ``test``; the
    server's stats, how many tunnels a task served after the first, and how many
    openings the polled one handed to a task."""
    if not polled:
        monkeypatch.setattr(tunnel_opening, "_open_polled", lambda *_args: False)
    served = [0]
    serve_tunnel = stream_tasks.StreamTasks.serve_tunnel

    async def counted(self: stream_tasks.StreamTasks, *args: object) -> None:
        served[0] += 1
        await serve_tunnel(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(stream_tasks.StreamTasks, "serve_tunnel", counted)
    handed_off = [0]
    continue_in_task = tunnel_opening._continue_in_task

    def counted_hand_off(*args: object) -> None:
        handed_off[0] += 1
        continue_in_task(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(tunnel_opening, "_continue_in_task", counted_hand_off)
    backend = ScriptedBackend(teach_then(behaviour))
    port = await nursery.start(backend.run)
    config = make_config(("/", backend_url(port)), **limits)
    stats = ServerStats()
    async with trio.open_nursery() as proxy:
        bound: BoundAddresses = await proxy.start(functools.partial(serve, config, stats=stats))
        address = bound.listeners[0]
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with open_h2_client(stream) as client:
            case = Case(client, backend, stats)
            await case.teach()
            taught, taught_hand_offs = served[0], handed_off[0]
            await test(case)
            case.tasks_served = served[0] - taught
            case.handed_off = handed_off[0] - taught_hand_offs
        proxy.cancel_scope.cancel()
    return stats, case.tasks_served, case.handed_off


@PATHS
async def test_a_known_101_opens_the_tunnel_without_a_task(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    async def echo(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade(), extra=b"behind")
        await connection.echo_until_eof()

    async def test(case: Case) -> None:
        await echo_through(case.client, b"second", first=b"behind")

    _stats, tasks_served, handed_off = await run_case(nursery, monkeypatch, polled, echo, test)
    assert (tasks_served, handed_off) == ((0, 0) if polled else (1, 0))
    lines = proxy_records.named("tunnel.closed")
    assert [(line["status"], line["end"]) for line in lines] == [(200, "clean")] * 2


@PATHS
async def test_a_101_in_two_pieces_is_read_on_by_the_task(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    async def slow_101(connection: BackendConnection) -> None:
        request = await connection.read_upgrade()
        stream = connection.stream
        original = stream.send_all

        async def in_two(data: bytes) -> None:
            await original(data[:20])
            await trio.sleep(0.05)  # the proxy reads the first piece alone
            await original(data[20:])

        stream.send_all = in_two  # type: ignore[method-assign]
        await connection.accept(request)
        stream.send_all = original  # type: ignore[method-assign]
        await connection.echo_until_eof()

    async def test(case: Case) -> None:
        await echo_through(case.client, b"after")

    _stats, tasks_served, handed_off = await run_case(nursery, monkeypatch, polled, slow_101, test)
    assert (tasks_served, handed_off) == (1, 1 if polled else 0)
    lines = proxy_records.named("tunnel.closed")
    assert [(line["status"], line["end"]) for line in lines] == [(200, "clean")] * 2


@PATHS
async def test_another_answer_goes_back_as_it_came(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    async def forbidden(connection: BackendConnection) -> None:
        await connection.read_upgrade()
        await connection.stream.send_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: test\r\n\r\nnope"
        )
        await connection.receive()

    async def test(case: Case) -> None:
        state = await case.client.finished(await case.client.request(CONNECT))
        assert state.status == 403
        assert bytes(state.data) == b"nope"
        assert state.headers is not None
        assert (b"x-why", b"test") in state.headers

    _stats, _tasks, handed_off = await run_case(nursery, monkeypatch, polled, forbidden, test)
    assert handed_off == (1 if polled else 0)
    refused = proxy_records.named("tunnel.refused")
    assert [line["status"] for line in refused] == [403]


@PATHS
async def test_a_backend_that_closes_without_answering_gives_502(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    async def hang_up(connection: BackendConnection) -> None:
        await connection.read_upgrade()

    async def test(case: Case) -> None:
        state = await case.client.finished(await case.client.request(CONNECT))
        assert state.status == 502

    _stats, _tasks, handed_off = await run_case(nursery, monkeypatch, polled, hang_up, test)
    assert handed_off == (1 if polled else 0)
    refused = proxy_records.named("tunnel.refused")
    assert [(line["status"], line["error"]) for line in refused] == [
        (502, "backend closed the connection without answering")
    ]


@PATHS
async def test_the_answers_deadline_gives_504(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    async def silent(connection: BackendConnection) -> None:
        await connection.read_upgrade()
        assert await connection.receive() == b""  # until the proxy closes

    async def test(case: Case) -> None:
        started = trio.current_time()
        state = await case.client.finished(await case.client.request(CONNECT))
        assert state.status == 504
        assert trio.current_time() - started >= 0.3
        with trio.fail_after(10):
            await case.backend.connections[1].closed.wait()

    _stats, _tasks, handed_off = await run_case(
        nursery, monkeypatch, polled, silent, test, handshake_timeout_s=0.3
    )
    assert handed_off == (1 if polled else 0)
    assert [line["status"] for line in proxy_records.named("tunnel.refused")] == [504]


@PATHS
async def test_a_client_reset_while_the_backend_answers_closes_the_backend(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    asked = trio.Event()

    async def silent(connection: BackendConnection) -> None:
        await connection.read_upgrade()
        asked.set()
        assert await connection.receive() == b""  # until the proxy closes

    async def test(case: Case) -> None:
        state = await case.client.request(CONNECT)
        with trio.fail_after(10):
            await asked.wait()
        await case.client.reset(state, CANCEL)
        with trio.fail_after(10):
            await case.backend.connections[1].closed.wait()
        await proxy_records.wait_for(
            lambda record: record.event == "tunnel.refused", 10, "for the reset tunnel"
        )
        assert case.stats.tunnels == 0

    stats, _tasks, handed_off = await run_case(nursery, monkeypatch, polled, silent, test)
    assert handed_off == (1 if polled else 0)
    refused = proxy_records.named("tunnel.refused")
    assert [(line["status"], line["end"]) for line in refused] == [("-", "client_aborted")]
    assert stats.backend_servers is not None
    assert [server["active"] for server in stats.backend_servers()] == [0]


@PATHS
async def test_the_client_connection_closed_while_the_backend_answers(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    asked = trio.Event()

    async def silent(connection: BackendConnection) -> None:
        await connection.read_upgrade()
        asked.set()
        assert await connection.receive() == b""  # until the proxy closes

    async def test(case: Case) -> None:
        await case.client.request(CONNECT)
        with trio.fail_after(10):
            await asked.wait()
        await case.client.stream.aclose()
        with trio.fail_after(10):
            await case.backend.connections[1].closed.wait()
        await proxy_records.wait_for(
            lambda record: record.event == "tunnel.refused", 10, "for the cut tunnel"
        )

    stats, _tasks, handed_off = await run_case(nursery, monkeypatch, polled, silent, test)
    assert handed_off == (1 if polled else 0)
    refused = proxy_records.named("tunnel.refused")
    assert [(line["status"], line["end"]) for line in refused] == [("-", "client_aborted")]
    assert stats.backend_servers is not None
    assert [server["active"] for server in stats.backend_servers()] == [0]


@PATHS
async def test_an_ended_tunnel_leaves_no_garbage_cycle(
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
    proxy_records: ProxyRecords,
    polled: bool,
) -> None:
    """Its objects go with their last reference (the stream's scope was the relay, which
    holds the stream: every tunnel was cyclic garbage, each costing the collector)."""

    async def echo(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        await connection.echo_until_eof()

    async def test(case: Case) -> None:
        gc.collect()
        gc.disable()
        try:
            await echo_through(case.client, b"second")
            await proxy_records.wait_for(
                lambda record: (
                    record.event == "tunnel.closed"
                    and len(proxy_records.named("tunnel.closed")) == 2
                ),
                10,
                "for the second tunnel",
            )
            alive = [type(o).__name__ for o in gc.get_objects() if type(o) in (Relay, H2Stream)]
        finally:
            gc.enable()
        assert alive == []

    await run_case(nursery, monkeypatch, polled, echo, test)


@PATHS
async def test_a_tunnel_stream_notes_a_cancel_until_its_opening_adopts_a_scope(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, polled: bool
) -> None:
    """No trio scope is made at the intake: the polled opening adopts itself, the task's
    dial a trio scope of its own, made as it starts (a reset noted before carries over)."""
    at_intake: list[type] = []
    start_tunnel = frontend.start_tunnel

    def noted(*args: Any) -> None:
        at_intake.append(type(args[2].scope))
        start_tunnel(*args)

    monkeypatch.setattr(frontend, "start_tunnel", noted)
    in_task: list[type] = []
    served = stream_tasks.StreamTasks.serve_tunnel

    async def scoped(self: stream_tasks.StreamTasks, stream: H2Stream, *args: Any) -> None:
        in_task.append(type(stream.scope))
        await served(self, stream, *args)

    monkeypatch.setattr(stream_tasks.StreamTasks, "serve_tunnel", scoped)

    async def echo(connection: BackendConnection) -> None:
        await connection.accept(await connection.read_upgrade())
        await connection.echo_until_eof()

    async def test(case: Case) -> None:
        await echo_through(case.client, b"second")

    await run_case(nursery, monkeypatch, polled, echo, test)
    assert at_intake == [CancelNoted, CancelNoted]
    # The first tunnel (the one that teaches the 101) is the task's on both paths.
    assert in_task == ([trio.CancelScope] if polled else [trio.CancelScope] * 2)
