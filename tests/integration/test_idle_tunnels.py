"""Idle HTTP/2 tunnels hold no task, and still end as they should, with real sockets on
loopback.

A polled tunnel's run leaves its task once the tunnel idles (``relay/tunnel_polled.py``):
the reader forwards the client's bytes, the poller the backend's, the connection's timers
keep its deadlines. These check that no task is left per idle tunnel, and that its idle
timeout, the client's reset and the client's end still end it, each with its access line.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.records import ProxyRecords, capture_proxy_records
from tests.helpers.setup import make_config

pytestmark = pytest.mark.socket

CANCEL = 0x8
#: The tasks a tunnel may run in (the stream's task, a run resumed after it idled).
TUNNEL_TASKS = ("h2ws_proxy.http2.frontend.tunnel", "h2ws_proxy.relay.tunnel_polled.resumed")


async def echo(conn: BackendConnection) -> None:
    await conn.accept(await conn.read_upgrade())
    await conn.echo_until_eof()


def tunnel_tasks() -> list[str]:
    """The names of the tasks running tunnels now, in this trio run (proxy included)."""
    found: list[str] = []

    def walk(task: trio.lowlevel.Task) -> None:
        if task.name in TUNNEL_TASKS:
            found.append(task.name)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    walk(trio.lowlevel.current_root_task())
    return found


async def closed_lines(records: ProxyRecords, count: int) -> list[dict[str, object]]:
    await records.wait_for(
        lambda _r: len(records.named("tunnel.closed")) >= count, 10, f"{count} tunnel.closed"
    )
    return records.named("tunnel.closed")


async def test_idle_tunnels_hold_no_task_and_end_at_the_idle_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedBackend(echo)
    await nursery.start(backend.run)
    config = make_config(("/", backend.url), idle_timeout_s=1.0)
    with capture_proxy_records() as records:
        address = await start_proxy(config)
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with open_h2_client(stream) as client:
            tunnels = [await client.websocket("/") for _ in range(4)]
            for ws in tunnels:  # the backend echoes raw bytes
                await client.send_data(ws.state, b"hi")
                await client.wait_for(lambda ws=ws: bytes(ws.state.data) == b"hi")
            assert tunnel_tasks() == []  # all four idle, none with a task
            lines = await closed_lines(records, 4)
            for ws in tunnels:
                await client.wait_for(lambda ws=ws: ws.state.reset_code is not None)
                assert ws.state.reset_code == CANCEL
    assert [line["end"] for line in lines] == ["idle_timeout"] * 4
    assert all(line["bytes_up"] == line["bytes_down"] == 2 for line in lines)


async def test_a_reset_and_an_end_reach_tunnels_without_a_task(
    nursery: trio.Nursery, start_proxy: StartProxy
) -> None:
    backend = ScriptedBackend(echo)
    await nursery.start(backend.run)
    config = make_config(("/", backend.url), idle_timeout_s=60.0)
    with capture_proxy_records() as records:
        address = await start_proxy(config)
        stream = await trio.open_tcp_stream(address.host, address.port)
        async with open_h2_client(stream) as client:
            reset, ended = await client.websocket("/"), await client.websocket("/")
            await client.send_data(ended.state, b"hi")
            await client.wait_for(lambda: bytes(ended.state.data) == b"hi")
            assert tunnel_tasks() == []
            await client.reset(reset.state, CANCEL)
            (line,) = await closed_lines(records, 1)
            assert line["end"] == "client_aborted"
            await client.end_stream(ended.state)  # the echo backend ends after it
            lines = await closed_lines(records, 2)
            await client.wait_for(lambda: ended.state.ended)
            assert ended.state.reset_code is None  # ended cleanly: no reset
    assert lines[1]["end"] == "clean"
    assert tunnel_tasks() == []
