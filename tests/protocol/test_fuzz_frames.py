"""Property-based fuzzing of the frontends with random and mutated input.

Hypothesis feeds each frontend bytes no client should send: random HTTP/2 frames (any
type, flags, stream id and payload, after a valid preface), mutations of a valid extended
CONNECT, and random HTTP/1.1 request heads. Whatever comes in, the proxy must

* never hit an unexpected error (``ServerStats.unexpected_errors`` stays 0),
* end the connection once the client goes away, leaving no task behind it,
* leave no backend connection open,
* and keep a healthy tunnel on another connection of the same server echoing.
"""

from __future__ import annotations

import contextlib
import struct

import hpack
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.connection import handle_client
from tests.helpers.frames import PREFACE, frame
from tests.helpers.h2_client import open_h2_client
from tests.helpers.memory import MemoryNet, echo_backend
from tests.helpers.setup import make_config

CONFIG = make_config(("/", "http://127.0.0.1:9"), max_concurrent_streams=8)
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def connect_block(path: bytes = b"/") -> bytes:
    return hpack.Encoder().encode(
        [
            (b":method", b"CONNECT"),
            (b":protocol", b"websocket"),
            (b":scheme", b"https"),
            (b":path", path),
            (b":authority", b"proxy.test"),
            (b"sec-websocket-version", b"13"),
        ]
    )


SETTINGS_FRAME = frame(0x4, 0, 0, b"")
OPEN_TUNNEL_ON_STREAM_1 = PREFACE + SETTINGS_FRAME + frame(0x1, 0x4, 1, connect_block())
random_frames = st.lists(
    st.builds(
        frame,
        frame_type=st.one_of(st.integers(0, 9), st.integers(0, 255)),
        flags=st.integers(0, 255),
        stream_id=st.sampled_from([0, 1, 2, 3, 5, 7, 101, 2**31 - 1]),
        payload=st.one_of(
            st.binary(max_size=48),
            st.just(connect_block()),
            st.builds(lambda n: struct.pack(">I", n), st.integers(0, 2**32 - 1)),
        ),
    ),
    max_size=25,
)


async def run_with_healthy_neighbour(attack: bytes, *, after_open_tunnel: bool = False) -> None:
    """Serve ``attack`` on one connection while a tunnel on another keeps echoing.

    With ``after_open_tunnel`` the attack connection first opens a tunnel on stream 1 and
    the attack starts once its 200 went out: its DATA then takes the direct path
    (h2_direct) instead of h2's.
    """
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            net = MemoryNet(nursery, echo_backend)
            server = ServerContext(CONFIG, Router(CONFIG.routes), trio.Event(), net.connect)
            healthy_side, proxy_side = trio.testing.memory_stream_pair()
            info = ClientInfo(1, CONFIG.listeners[0], "127.0.0.1", tls=False)
            nursery.start_soon(handle_client, proxy_side, server, info)
            async with open_h2_client(healthy_side) as healthy:
                ws = await healthy.websocket("/")
                assert ws.status == 200
                await serve_attack(server, attack, after_open_tunnel=after_open_tunnel)
                await healthy.send_data(ws.state, b"still echoing")
                await healthy.wait_for(lambda: bytes(ws.state.data).endswith(b"still echoing"))
                assert server.stats.unexpected_errors == 0
                assert server.stats.connections == 1  # only the healthy one is left
                assert server.stats.tunnels == 1
                # Every backend connection the attack caused is closed again.
                assert sum(not closed.is_set() for closed in net.backend_closed) == 1
            nursery.cancel_scope.cancel()


async def serve_attack(
    server: ServerContext, attack: bytes, *, after_open_tunnel: bool = False
) -> None:
    client_side, proxy_side = trio.testing.memory_stream_pair()
    info = ClientInfo(2, CONFIG.listeners[0], "127.0.0.1", tls=False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handle_client, proxy_side, server, info)
        if after_open_tunnel:
            await client_side.send_all(OPEN_TUNNEL_ON_STREAM_1)
            await trio.testing.wait_all_tasks_blocked()
            assert server.stats.tunnels == 2  # the healthy one and this one
        # The proxy may close on us half-way through: fine.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await client_side.send_all(attack)
        await trio.testing.wait_all_tasks_blocked()
        await client_side.aclose()  # the client goes away: handle_client must end


@FUZZ
@given(frames=random_frames)
async def test_random_http2_frames(frames: list[bytes]) -> None:
    await run_with_healthy_neighbour(PREFACE + SETTINGS_FRAME + b"".join(frames))


tunnel_frames = st.lists(
    st.one_of(
        st.builds(
            frame,
            frame_type=st.just(0x0),
            flags=st.sampled_from([0, 0, 0, 0x1, 0x8, 0x9]),
            stream_id=st.sampled_from([1, 1, 1, 3, 0]),
            payload=st.one_of(st.binary(max_size=48), st.builds(bytes, st.integers(0, 70_000))),
        ),
        random_frames.map(b"".join),
    ),
    max_size=12,
)


@FUZZ
@given(frames=tunnel_frames)
async def test_random_frames_on_a_connection_with_an_open_tunnel(frames: list[bytes]) -> None:
    await run_with_healthy_neighbour(b"".join(frames), after_open_tunnel=True)


@FUZZ
@given(
    path=st.binary(min_size=0, max_size=20),
    flips=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 255)), max_size=4),
    data=st.binary(max_size=64),
    end_stream=st.booleans(),
)
async def test_mutated_extended_connect(
    path: bytes, flips: list[tuple[int, int]], data: bytes, end_stream: bool
) -> None:
    block = bytearray(connect_block(b"/" + path))
    for position, mask in flips:
        if block:
            block[position % len(block)] ^= mask
    headers = frame(0x1, 0x4 | (0x1 if end_stream else 0), 1, bytes(block))
    await run_with_healthy_neighbour(PREFACE + SETTINGS_FRAME + headers + frame(0x0, 0, 1, data))


@FUZZ
@given(
    head=st.one_of(
        st.binary(max_size=300),
        st.builds(
            lambda method, target, extra: (
                method + b" " + target + b" HTTP/1.1\r\nHost: proxy.test\r\n"
                b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + b"\r\n"
            ),
            st.sampled_from([b"GET", b"POST", b"get", b"CONNECT", b"G\x00T"]),
            st.sampled_from([b"/", b"/x?y", b"*", b"http://a/", b"/\r\n", b"/ /"]),
            st.binary(max_size=80),
        ),
    )
)
async def test_random_http11_heads(head: bytes) -> None:
    if head.startswith(PREFACE[:1]) and PREFACE.startswith(head[: len(PREFACE)]):
        head = b"X" + head  # keep this one on the HTTP/1.1 path
    await run_with_healthy_neighbour(head)
