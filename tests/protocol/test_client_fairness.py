"""No single client can lock the others out: per-client caps, room made at the listener's
cap, and the first-request timer.

Real loopback sockets, with clients on distinct loopback addresses (127.0.0.2 plays the
hostile client, 127.0.0.3 the one that must still be served): the proxy tells clients
apart by their source address, which only a real socket has.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from h2ws_proxy.config import SocketAddress
from h2ws_proxy.relay.client_limits import client_key
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.frames import EMPTY_SETTINGS, PREFACE
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.memory import MemoryNet, echo_backend, open_memory_client
from tests.helpers.raw_h2 import read_frames_until
from tests.helpers.records import capture_proxy_records
from tests.helpers.setup import make_config

HOSTILE, OTHER = "127.0.0.2", "127.0.0.3"
SETTINGS, GOAWAY = 0x4, 0x7
GET: list[tuple[bytes, bytes]] = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"proxy.test"),
]


async def _answer(conn: BackendConnection) -> None:
    """A backend: 204 to each ordinary request; an upgrade is accepted and echoed."""
    while True:
        request = await conn.read_upgrade()
        if any(name.lower() == b"upgrade" for name, _ in request.headers):
            await conn.accept(request)
            await conn.echo_until_eof()
            return
        await conn.stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")


async def _backend(nursery: trio.Nursery) -> str:
    backend = ScriptedBackend(_answer)
    await nursery.start(backend.run)
    return backend.url


async def _connect(address: SocketAddress, source: str) -> trio.SocketStream:
    return await trio.open_tcp_stream(address.host, address.port, local_address=source)


@contextlib.asynccontextmanager
async def _h2(address: SocketAddress, source: str) -> AsyncIterator[H2TestClient]:
    async with open_h2_client(await _connect(address, source)) as client:
        yield client


async def _served_within_a_second(address: SocketAddress, source: str) -> None:
    """A new connection from ``source`` gets a GET answered within a second."""
    with trio.fail_after(1.0):
        async with _h2(address, source) as client:
            state = await client.finished(await client.request(GET, end_stream=True))
            assert state.status == 204


async def _closed_without_a_byte(stream: trio.SocketStream) -> bool:
    with trio.fail_after(5):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:
            return True  # reset: closed too


# ---- the client key ----


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same /64: the same client
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the IPv4 client
        ("fe80::1%eth0", "fe80::/64"),
        (None, None),
    ],
)
def test_clients_are_told_apart_by_address_and_ipv6_by_its_64(
    address: str | None, key: str | None
) -> None:
    assert client_key(address) == key


# ---- per-client caps ----


@pytest.mark.socket
async def test_connections_past_the_clients_cap_are_closed_and_others_still_served(
    start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    # max_connections 30: the default share per client is a tenth, 3.
    config = make_config(("/", await _backend(nursery)), max_connections=30)
    address = await start_proxy(config)
    with capture_proxy_records() as records:
        held = []
        for _ in range(3):
            stream = await _connect(address, HOSTILE)
            await stream.send_all(PREFACE + EMPTY_SETTINGS)
            assert await stream.receive_some(9)  # served: our SETTINGS
            held.append(stream)
        for _ in range(5):
            assert await _closed_without_a_byte(await _connect(address, HOSTILE))
        await _served_within_a_second(address, OTHER)
        await held.pop().aclose()
        # A place of its own freed: the same client is served again.
        with trio.fail_after(5):
            while True:
                stream = await _connect(address, HOSTILE)
                await stream.send_all(PREFACE + EMPTY_SETTINGS)
                if await stream.receive_some(9):
                    break
                await stream.aclose()  # the close was not seen yet: try again
        # Five refusals in well under a second: one line, the rest counted in the next.
        lines = records.named("client.over_connection_limit")
        assert len(lines) == 1
        assert lines[0]["client"] == HOSTILE
        assert lines[0]["max_connections_per_client"] == 3
    for stream in held:
        await stream.aclose()


@pytest.mark.socket
async def test_tunnels_past_the_clients_cap_get_429_over_both_protocols(
    start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    config = make_config(("/", await _backend(nursery)), max_tunnels_per_client=2)
    address = await start_proxy(config)
    async with _h2(address, HOSTILE) as first, _h2(address, HOSTILE) as second:
        one = await first.websocket("/")
        two = await second.websocket("/")  # another connection, the same client
        assert (one.status, two.status) == (200, 200)
        three = await first.websocket("/")
        assert three.status == 429
        h1 = await _connect(address, HOSTILE)
        await h1.send_all(
            b"GET / HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in answer:
                answer += await h1.receive_some()
        assert answer.startswith(b"HTTP/1.1 429 ")
        await h1.aclose()
        # Another client is not affected.
        async with _h2(address, OTHER) as other:
            assert (await other.websocket("/")).status == 200
        # A tunnel that ends gives its place back (ended without a Close frame: the
        # client's abort, as its backend would see 1006; any end frees the place).
        with capture_proxy_records() as records:
            await first.end_stream(one.state)  # the echo backend ends too
            # This client's: the other client's tunnel (its connection closed just above)
            # may end inside this capture too, and is client_aborted as well.
            await records.wait_for(
                lambda record: (
                    record.event == "tunnel.closed"
                    and record.get("end") == "client_aborted"
                    and str(record.get("client")).startswith(f"{HOSTILE}:")
                ),
                5,
                "for the tunnel the client ended",
            )
        assert (await second.websocket("/")).status == 200


# ---- the listener's cap ----


@pytest.mark.socket
async def test_at_the_cap_busy_connections_are_kept_and_new_clients_wait(
    start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    config = make_config(
        ("/", await _backend(nursery)),
        max_connections=2,
        max_connections_per_client=0,
        max_tunnels_per_client=0,
    )
    address = await start_proxy(config)
    async with _h2(address, HOSTILE) as first, _h2(address, HOSTILE) as second:
        for client in (first, second):  # each busy with a tunnel: neither may be evicted
            assert (await client.websocket("/")).status == 200
        third = await _connect(address, OTHER)  # the backlog takes it
        await third.send_all(PREFACE + EMPTY_SETTINGS)
        with trio.move_on_after(0.5) as waited:
            await third.receive_some(9)
        assert waited.cancelled_caught, "a third connection was served past max_connections"
        await first.stream.aclose()
        with trio.fail_after(10):
            assert await third.receive_some(9)  # a place freed: now it is served
        await third.aclose()


@pytest.mark.socket
async def test_at_the_cap_the_longest_idle_connection_makes_room(
    start_proxy: StartProxy, nursery: trio.Nursery
) -> None:
    config = make_config(
        ("/", await _backend(nursery)), max_connections=2, max_connections_per_client=0
    )
    address = await start_proxy(config)
    with capture_proxy_records() as records:
        oldest = await _connect(address, HOSTILE)
        await oldest.send_all(PREFACE + EMPTY_SETTINGS)
        with trio.fail_after(5):
            assert (await read_frames_until(oldest, {SETTINGS}))[-1][0] == SETTINGS
        keeper = await _connect(address, HOSTILE)
        await keeper.send_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        with trio.fail_after(5):
            assert (await keeper.receive_some()).startswith(b"HTTP/1.1 204 ")
        # Both idle now: an HTTP/2 connection without a stream, a kept-alive HTTP/1.1 one.
        await _served_within_a_second(address, OTHER)
        # The oldest was told to go: GOAWAY(NO_ERROR), then the close.
        with trio.fail_after(5):
            frames = await read_frames_until(oldest, {GOAWAY})
        assert frames[-1][0] == GOAWAY
        assert frames[-1][3][4:8] == b"\x00\x00\x00\x00"
        assert await _closed_without_a_byte(oldest)
        assert records.named("h2.evicted_idle")
        assert records.named("listener.full")[0]["max_connections"] == 2


@pytest.mark.socket
@pytest.mark.parametrize("per_client", [None, 0], ids=["default-share", "no-per-client-cap"])
async def test_one_address_cannot_lock_out_another(
    start_proxy: StartProxy, nursery: trio.Nursery, per_client: int | None
) -> None:
    """127.0.0.2 holds as many preface-only and half-sent connections as it can, and keeps
    reopening them; 127.0.0.3 is still served within a second, throughout. With the per-client
    cap (the default) the hostile client holds a tenth of the places; without it, it fills
    the listener and the longest idle of its connections make room."""
    config = make_config(
        ("/", await _backend(nursery)),
        max_connections=40,
        max_connections_per_client=per_client,
        idle_connection_timeout_s=300.0,
    )
    address = await start_proxy(config)
    attempts = 0

    async def hold_one() -> None:
        nonlocal attempts
        while attempts < 2000:  # bounded: at most this many connections in all
            attempts += 1
            try:
                stream = await _connect(address, HOSTILE)
                if attempts % 2:
                    await stream.send_all(PREFACE + EMPTY_SETTINGS)  # and no request
                else:
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never ended
                while await stream.receive_some():  # held until the proxy lets go
                    pass
            except (trio.BrokenResourceError, OSError):
                pass
            await trio.sleep(0.01)  # then reopen it

    async with trio.open_nursery() as attack:
        for _ in range(80):  # twice the listener's places
            attack.start_soon(hold_one)
        await trio.sleep(0.5)  # let it take what it can before the first probe
        for _ in range(10):  # throughout the attack
            await _served_within_a_second(address, OTHER)
            await trio.sleep(0.05)
        attack.cancel_scope.cancel()


# ---- the first request ----


async def test_http2_connection_without_a_request_gets_goaway_at_the_handshake_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    config = make_config(
        ("/", "http://127.0.0.1:9"), client_handshake_timeout_s=5.0, idle_connection_timeout_s=0
    )
    client = await open_memory_client(nursery, config, MemoryNet(nursery, echo_backend))
    started = trio.current_time()
    await client.send_all(PREFACE + EMPTY_SETTINGS)  # the whole preface, then nothing
    frames = await read_frames_until(client, {GOAWAY})
    assert frames[-1][0] == GOAWAY
    assert frames[-1][3][4:8] == b"\x00\x00\x00\x00"  # NO_ERROR: nothing was wrong but silence
    # The SETTINGS arrived at once; the request was due within the timeout after them.
    assert trio.current_time() - started == 5.0
