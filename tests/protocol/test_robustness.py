"""What one client or backend can do to a connection: it must not hurt the others.

In memory with a jumping clock: a client's polite GOAWAY, tunnels that end without
consuming their bytes (credit must come back), a backend that answers 200 instead of 101,
and a backend that closes while its last bytes are still on their way to a slow client.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hyperframe.frame import GoAwayFrame

from tests.helpers.backends import BackendConnection
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import CONNECT_HEADERS, MemoryNet, echo_backend, open_memory_client
from tests.helpers.setup import make_config

pytestmark = pytest.mark.usefixtures("both_backend_kinds")

CANCEL = 0x8


async def test_client_goaway_lets_open_tunnels_finish_then_the_connection_ends(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(("/", "http://127.0.0.1:9"))
    net = MemoryNet(nursery, echo_backend)
    client_stream = await open_memory_client(nursery, config, net)
    async with open_h2_client(client_stream) as client:
        ws = await client.websocket("/")
        # A polite goodbye, as Node's session.close() sends: written raw, because h2 (the
        # client library here) would stop sending anything itself afterwards.
        await client.stream.send_all(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
        await client.send_data(ws.state, b"after goaway")
        await client.wait_for(lambda: bytes(ws.state.data) == b"after goaway")
        await client.end_stream(ws.state)
        await client.finished(ws.state)
        assert ws.state.reset_code is None
        await client.closed.wait()  # the proxy closed the connection after the last tunnel


async def test_credit_of_bytes_a_tunnel_never_consumed_comes_back(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    window = 65535
    config = make_config(
        ("/", "http://127.0.0.1:9"), max_concurrent_streams=4, stream_window_bytes=window
    )

    async def stuck_or_echo(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        request = await conn.read_upgrade()
        await conn.accept(request)
        if request.target == b"/stuck":
            await trio.sleep_forever()  # never reads: the proxy's writes to it block
        await conn.echo_until_eof()

    net = MemoryNet(nursery, stuck_or_echo, lockstep=True)
    async with open_h2_client(
        await open_memory_client(nursery, config, net), connection_window=window
    ) as client:
        # Four times: fill a stuck tunnel's whole window, then give up on it. Without the
        # credit coming back, the proxy's connection window (4 x 65535) would be gone.
        for _ in range(4):
            stuck = await client.websocket("/stuck")
            await client.send_data(stuck.state, b"s" * window)
            await trio.testing.wait_all_tasks_blocked()
            await client.reset(stuck.state, CANCEL)
            await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(60):  # virtual time: fails at once if the window is gone
            fresh = await client.websocket("/echo")
            await client.send_data(fresh.state, b"x" * (2 * window))
            await client.wait_for(lambda: len(fresh.state.data) == 2 * window)


async def test_backend_2xx_instead_of_101_is_a_502_not_a_tunnel(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def plain_http(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.read_upgrade()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n<html>")

    net = MemoryNet(nursery, plain_http)
    config = make_config(("/", "http://127.0.0.1:9"))
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        await client.finished(ws.state)
        assert ws.status == 502
        assert b"<html>" not in bytes(ws.state.data)


async def test_backend_close_while_its_last_bytes_wait_for_a_slow_client_is_clean(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    last_words = b"\x88\x02\x03\xe8" + b"z" * 96  # a Close frame and some bytes: 100 in all

    async def says_goodbye_and_leaves(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.accept(await conn.read_upgrade())
        await stream.send_all(last_words)
        await stream.aclose()  # a full close: writes to it now fail

    net = MemoryNet(nursery, says_goodbye_and_leaves)
    config = make_config(("/", "http://127.0.0.1:9"))
    # The client's window is 10 bytes: the backend's bytes must wait for it.
    async with open_h2_client(
        await open_memory_client(nursery, config, net), settings={0x4: 10}
    ) as client:
        ws = await client.websocket("/", auto_ack=False)
        await client.wait_for(lambda: len(ws.state.data) == 10)
        await client.send_data(ws.state, b"client close frame")  # hits the closed backend
        await client.send_data(ws.state, b"and more")
        await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(60):  # virtual time
            while not ws.state.ended:
                await client.ack(ws.state)
                await client.wait_for(
                    lambda: (
                        ws.state.unacked > 0 or ws.state.ended or ws.state.reset_code is not None
                    )
                )
                assert ws.state.reset_code is None
        assert bytes(ws.state.data) == last_words
        await client.end_stream(ws.state)
        await client.ping()
        assert ws.state.reset_code is None


async def test_huge_backend_response_head_is_a_502_and_bounded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    sent = 0

    async def endless_head(stream: trio.abc.HalfCloseableStream) -> None:
        nonlocal sent
        conn = BackendConnection(stream)
        await conn.read_upgrade()
        await stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n")
        line = b"X-Filler: " + b"f" * 1000 + b"\r\n"
        while sent < 10 * 1024 * 1024:  # stops by itself; the proxy should stop it sooner
            await stream.send_all(line)
            sent += len(line)

    net = MemoryNet(nursery, endless_head, lockstep=True)
    config = make_config(("/", "http://127.0.0.1:9"), max_header_list_bytes=16384)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        ws = await client.websocket("/")
        await client.finished(ws.state)
        assert ws.status == 502
        # The proxy read at most the head limit plus one read before giving up.
        assert sent <= 16384 + 65536 + 2000


async def test_client_data_while_a_rejection_is_relayed_is_dropped_not_an_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    body = b"r" * 150_000  # more than the client's window: the relay is still running

    async def rejects(stream: trio.abc.HalfCloseableStream) -> None:
        conn = BackendConnection(stream)
        await conn.read_upgrade()
        await stream.send_all(
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    net = MemoryNet(nursery, rejects)
    config = make_config(("/", "http://127.0.0.1:9"), max_rejection_body_bytes=200_000)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        state = await client.response(await client.request(CONNECT_HEADERS))
        assert state.status == 403
        await client.send_data(state, b"late bytes", end_stream=True)  # the client gives up
        await client.finished(state)
        await client.ping()
        assert state.reset_code is None
        assert bytes(state.data) == body


async def test_route_without_websocket_refuses_both_protocols_and_auto_does_not_advertise(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    import dataclasses

    from h2ws_proxy.config import advertises_connect_protocol

    base = make_config(("/", "http://127.0.0.1:9"), enable_connect_protocol="auto")  # type: ignore[arg-type]
    plain_http_only = dataclasses.replace(base.routes[0], websocket=False)
    config = dataclasses.replace(base, routes=(plain_http_only,))
    assert not advertises_connect_protocol(config, config.listeners[0])
    net = MemoryNet(nursery, echo_backend)
    async with open_h2_client(await open_memory_client(nursery, config, net)) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 0
    forced = dataclasses.replace(
        config, listeners=(dataclasses.replace(config.listeners[0], enable_connect_protocol=True),)
    )
    async with open_h2_client(await open_memory_client(nursery, forced, net)) as client:
        state = await client.finished(await client.request(CONNECT_HEADERS))
        assert state.status == 501
        assert b"websocket = false" in bytes(state.data)
    h1 = await open_memory_client(nursery, config, net)
    await h1.send_all(
        b"GET / HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    answer = b""
    while data := await h1.receive_some():
        answer += data
    assert answer.startswith(b"HTTP/1.1 501 ")
    assert net.dials == 0
