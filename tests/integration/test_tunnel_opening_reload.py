"""A reload that changes ``handshake_timeout_s`` while tunnels open: each opening keeps the
deadline it was dialled under, and the connection's timers keep firing for later ones.

The polled opening (http2/tunnel_opening.py) arms its deadline on the connection's timers;
it once disarmed it with the limit read again, which after a reload left it stuck at the
head of a queue (no deadline, never removed) and every later opening on the connection
without its 504. Run on both paths (see test_tunnel_opening.py).
"""

from __future__ import annotations

import dataclasses

import pytest
import trio

from h2ws_proxy.relay import context
from h2ws_proxy.server import serve as serve_module
from tests.helpers.backends import BackendConnection
from tests.integration.test_tunnel_opening import CONNECT, PATHS, Case, run_case

pytestmark = pytest.mark.socket


def servers_made(monkeypatch: pytest.MonkeyPatch) -> list[context.ServerContext]:
    """The ServerContext ``serve`` makes, to reload it as ``Reloader.apply`` would."""
    made: list[context.ServerContext] = []
    original = context.ServerContext

    def make(*args: object, **kwargs: object) -> context.ServerContext:
        made.append(original(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(serve_module, "ServerContext", make)
    return made


def reload_limits(server: context.ServerContext, **limits: float) -> None:
    config = server.config
    config = dataclasses.replace(config, limits=dataclasses.replace(config.limits, **limits))
    server.switch(server.next_generation(config))


@PATHS
async def test_an_opening_keeps_the_deadline_it_was_dialled_under(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, polled: bool
) -> None:
    """A (answers late) and B (never answers) wait; the limit goes 1 s -> 5 s; A opens,
    B still gets its 504 at 1 s; then back to 1 s, and C (silent too) gets its 504."""
    servers = servers_made(monkeypatch)
    asked = [trio.Event() for _ in range(3)]
    go_a = trio.Event()
    connections = [0]

    async def behaviour(connection: BackendConnection) -> None:
        number = connections[0]
        connections[0] += 1
        request = await connection.read_upgrade()
        asked[number].set()
        if number == 0:  # A
            await go_a.wait()
            await connection.accept(request)
            await connection.echo_until_eof()
        else:  # B, C: silent until the proxy gives up
            assert await connection.receive() == b""

    async def test(case: Case) -> None:
        client = case.client
        (server,) = servers
        a = await client.request(CONNECT)
        with trio.fail_after(5):
            await asked[0].wait()
        b = await client.request(CONNECT)
        with trio.fail_after(5):
            await asked[1].wait()
        reload_limits(server, handshake_timeout_s=5.0)
        go_a.set()
        with trio.fail_after(5):
            await client.response(a)
        with trio.fail_after(3):  # under 5 s: B keeps the 1 s it was dialled under
            await client.finished(b)
        reload_limits(server, handshake_timeout_s=1.0)
        c = await client.request(CONNECT)
        with trio.fail_after(5):
            await asked[2].wait()
        with trio.fail_after(3):
            await client.finished(c)
        await client.send_data(a, b"", end_stream=True)
        with trio.fail_after(5):
            await client.finished(a)
        assert (a.status, b.status, c.status) == (200, 504, 504)

    await run_case(nursery, monkeypatch, polled, behaviour, test, handshake_timeout_s=1.0)
