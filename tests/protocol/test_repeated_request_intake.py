"""A repeated request's intake: kept_start's LastRequest keeps the route's balancer and the
server last found plain, and the HTTP/2 connection takes a request equal to its last one
without parsing, routing or translating it again. What it keeps must never outlive what it
stands for: a server checked down since, a reload that moved the route, the stream limit.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable

import h11
import hpack
import pytest
import trio
import trio.testing

from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.h2session.errors import ErrorCode
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http.request_head import parse_h2_request_head
from h2ws_proxy.http2.admission import accept_http
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.kept_start import LastRequest, start_on_kept_connection
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.socket_stream import LeanSocketStream
from tests.helpers.frames import PREFACE, frame
from tests.helpers.memory import MemoryNet, open_memory_client
from tests.helpers.setup import make_config
from tests.protocol.test_http_exchange import answer, read_request
from tests.unit.http2_session import wire as w


@pytest.fixture
async def poller() -> AsyncIterator[BackendPoller]:
    made = BackendPoller()
    yield made
    made.close()


class KeptServers:
    """A server context whose routes ``/0``, ``/1``... go to one server each, with idle
    plain connections (socketpairs) parked in a poller on demand."""

    def __init__(self, *urls: str) -> None:
        self.config = make_config(*[(f"/{index}", url) for index, url in enumerate(urls)])
        self.server = ServerContext(self.config, Router(self.config.routes), trio.Event())
        self._pairs: list[tuple[socket.socket, socket.socket]] = []

    def park(self, route_index: int, poller: BackendPoller) -> socket.socket:
        """An idle connection to route ``route_index``'s server; returns the backend's end."""
        address = self.config.routes[route_index].backend.servers[0]
        ours, theirs = socket.socketpair()
        self._pairs.append((ours, theirs))
        connection = BackendConnection(
            address=address, stream=LeanSocketStream(ours), pool=self.server.pool
        )
        self.server.pool.release_now(connection, poller)
        return theirs

    def request(self, route_index: int) -> tuple[HttpRequest, RouteConfig]:
        """A GET for route ``route_index``, accepted as the HTTP/2 front end accepts it."""
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", f"/{route_index}".encode()),
            (b":authority", b"a"),
        ]
        head = parse_h2_request_head(fields)
        return accept_http(head, self.server.router, tls=False, ended=True)

    def close(self) -> None:
        for ours, theirs in self._pairs:
            ours.close()
            theirs.close()


def assert_nothing_received(backend: socket.socket) -> None:
    backend.setblocking(False)
    with pytest.raises(BlockingIOError):
        backend.recv(65536)


async def test_a_repeated_request_is_not_sent_to_a_server_checked_down_since(
    poller: BackendPoller,
) -> None:
    """The kept "plain" server is the balancer's: a server an active health check took
    down after the last request is not given again, so nothing is written to it."""
    kept = KeptServers("http://127.0.0.1:9")
    try:
        backend = kept.park(0, poller)
        request, route = kept.request(0)
        last = LastRequest()
        start = start_on_kept_connection(kept.server, route, request, None, lambda: poller, last)
        assert start is not None
        balancer, chosen, connection, _socket, _sent, _poller = start
        assert backend.recv(65536).startswith(b"GET /0 ")
        balancer.give_back(chosen)
        kept.server.pool.release_now(connection, poller)
        chosen.checked_up = False  # (what an active health check does)
        again = start_on_kept_connection(kept.server, route, request, None, lambda: poller, last)
        assert again is None
        assert_nothing_received(backend)
        assert chosen.active == 0
    finally:
        kept.close()


async def test_a_repeated_request_follows_a_reload_to_the_new_server(
    poller: BackendPoller,
) -> None:
    """LastRequest is kept by the identities of the route and the generation's balancers:
    after a reload that moved the route to another server, the new generation's balancer
    chooses, for a request routed before the reload as for one routed after it."""
    kept = KeptServers("http://127.0.0.1:9", "http://127.0.0.1:10")
    try:
        first = kept.park(0, poller)
        request, route = kept.request(0)
        last = LastRequest()
        start = start_on_kept_connection(kept.server, route, request, None, lambda: poller, last)
        assert start is not None
        assert first.recv(65536).startswith(b"GET /0 ")
        start[0].give_back(start[1])
        kept.server.pool.release_now(start[2], poller)
        new_config = make_config(("/0", "http://127.0.0.1:10"))
        kept.server.switch(kept.server.next_generation(new_config))
        # A request routed before the reload, started after it (the same request and
        # route): the balancer is the one the current generation gives for its group (the
        # old one, carried over for such requests), as the task path would take.
        start = start_on_kept_connection(kept.server, route, request, None, lambda: poller, last)
        assert start is not None
        assert start[0] is kept.server.balancers.of(route.backend)
        assert first.recv(65536).startswith(b"GET /0 ")
        start[0].give_back(start[1])
        kept.server.pool.release_now(start[2], poller)
        new_request, new_route = kept.request(0)
        assert new_route is not route
        second = kept.park(1, poller)
        start = start_on_kept_connection(
            kept.server, new_route, new_request, None, lambda: poller, last
        )
        assert start is not None
        assert start[1].address.port == 10
        assert second.recv(65536).startswith(b"GET /0 ")
        assert_nothing_received(first)
    finally:
        kept.close()


def complete_frames(received: bytes) -> list[w.Sent]:
    """The whole frames at the start of ``received`` (a last partial one left out)."""
    end = 0
    while len(received) - end >= 9:
        length = int.from_bytes(received[end : end + 3], "big")
        if len(received) - end < 9 + length:
            break
        end += 9 + length
    return w.parse(received[:end])


async def test_a_repeated_get_over_max_streams_is_refused_then_served(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The stream limit is judged for each request before the remembered one is taken: the
    same GET past max_concurrent_streams is REFUSED_STREAM, and served once the others end."""
    release = trio.Event()

    async def held(stream: trio.abc.HalfCloseableStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while (request := await read_request(stream, conn)) is not None:
            await release.wait()
            await answer(stream, conn, request.target)

    net = MemoryNet(nursery, held)
    config = make_config(("/", "http://127.0.0.1:9"), max_concurrent_streams=2)
    client = await open_memory_client(nursery, config, net)
    encoder = hpack.Encoder()
    fields = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/r"),
        (b":authority", b"proxy.test"),
    ]

    async def get(stream_id: int) -> None:
        flags = w.END_HEADERS | w.END_STREAM
        await client.send_all(frame(w.HEADERS, flags, stream_id, encoder.encode(fields)))

    received = b""

    async def until(done: Callable[[list[w.Sent]], bool]) -> list[w.Sent]:
        nonlocal received
        with trio.fail_after(30):
            while not done(frames := complete_frames(received)):
                received += bytes(await client.receive_some())
        return frames

    def ended(stream_ids: set[int]) -> Callable[[list[w.Sent]], bool]:
        def done(frames: list[w.Sent]) -> bool:
            ends = {
                f.stream_id
                for f in frames
                if f.kind in (w.DATA, w.HEADERS) and f.flags & w.END_STREAM
            }
            return stream_ids <= ends

        return done

    await client.send_all(PREFACE + frame(w.SETTINGS, 0, 0, b""))
    for stream_id in (1, 3, 5):
        await get(stream_id)
    frames = await until(lambda frames: any(f.kind == w.RST_STREAM for f in frames))
    assert [(f.stream_id, f.code) for f in frames if f.kind == w.RST_STREAM] == [
        (5, ErrorCode.REFUSED_STREAM)
    ]
    release.set()
    await until(ended({1, 3}))
    await get(7)
    frames = await until(ended({1, 3, 7}))
    body = b"".join(f.payload for f in frames if f.kind == w.DATA and f.stream_id == 7)
    assert body == b"/r", frames
    assert not any(f.kind == w.GOAWAY for f in frames)
