"""The caller's cancel scope as the tunnel's own (``run_tunnel(scope=...)``).

The HTTP/2 frontend enters one scope per stream for the dial and the tunnel after it (a
scope per idle tunnel is memory and CPU): the tunnel keeps its timers on it, and a client
reset cancels it. Cancelled that way the tunnel ends as CANCELLED (the frontend then says
why), never as a timeout, and its backend is closed at once even when no pump is waiting
on the client.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from h2ws_proxy.relay.outcome import RelayEnd, RelayStats
from h2ws_proxy.relay.relay_state import TIMER_SLACK_S
from h2ws_proxy.relay.tunnel import run_tunnel
from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.records import capture_proxy_records
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

CANCEL = 0x8


async def test_cancelling_the_handed_scope_ends_the_tunnel_as_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _client_peer = trio.testing.memory_stream_pair()
    backend, backend_peer = trio.testing.memory_stream_pair()
    scope = trio.CancelScope()
    stats = RelayStats()

    async def tunnel() -> None:
        with scope:
            await run_tunnel(client, backend, idle_timeout_s=60.0, stats=stats, scope=scope)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tunnel)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert scope.cancelled_caught
    assert stats.end is RelayEnd.CANCELLED
    assert trio.current_time() == 0.0
    with pytest.raises(trio.BrokenResourceError):  # the backend stream was closed
        await backend_peer.send_all(b"x")


async def test_a_timer_still_ends_it_as_a_timeout_when_the_scope_was_handed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    client, _client_peer = trio.testing.memory_stream_pair()
    backend, _backend_peer = trio.testing.memory_stream_pair()
    stats = RelayStats()
    with trio.CancelScope() as scope:
        await run_tunnel(client, backend, idle_timeout_s=60.0, stats=stats, scope=scope)
    # (Here the pumps' nursery holds the timer; with the backend poller it is the caller's
    # scope: test_timeouts runs the frontend's tunnels both ways, over socket backends too.)
    assert stats.end is RelayEnd.IDLE_TIMEOUT
    assert 60.0 <= trio.current_time() <= 60.0 + TIMER_SLACK_S


async def test_a_reset_after_the_clients_end_closes_the_quiet_backend_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """No pump waits on the client here (its side ended); the reset must still end the
    tunnel at once, as client_aborted, and close the backend."""
    backend_saw_eof = trio.Event()

    async def quiet_backend(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        while await stream.receive_some(65536):
            pass
        backend_saw_eof.set()
        await trio.sleep_forever()  # never ends its side

    config = make_config(("/", "http://127.0.0.1:9"), idle_timeout_s=60.0)
    net = MemoryNet(nursery, quiet_backend)
    with capture_proxy_records() as records:
        async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
            ws = await client.websocket("/")
            assert ws.status == 200
            await client.end_stream(ws.state)
            await backend_saw_eof.wait()
            await trio.testing.wait_all_tasks_blocked()
            reset_at = trio.current_time()
            await client.reset(ws.state, CANCEL)
            line = await records.wait_for(
                lambda r: r.event == "tunnel.closed", 1.0, "tunnel.closed after the reset"
            )
            assert line.get("end") == "client_aborted"
            assert trio.current_time() == reset_at
