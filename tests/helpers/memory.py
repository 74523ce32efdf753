"""Run one proxied client connection entirely in memory (no sockets), for MockClock tests.

The client side is one end of a ``memory_stream_pair``; ``handle_client`` serves the other.
Backends are reached through an injected ``connect_backend`` that hands the proxy one end
of another pair and runs ``behaviour`` on the other end, so a test can script a backend
that stalls, rejects or echoes, and time can be jumped with ``autojump_clock``.

With ``backend_sockets`` (or :data:`SOCKET_BACKENDS` set by a test module's fixture) the
backend pair is a real unix socketpair instead: the proxy then gets the
``LeanSocketStream`` it gets for a real backend, and HTTP/2 tunnels run their downward
direction on the connection's backend poller, as in production.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from h2ws_proxy.config import BackendAddress, ProxyConfig
from h2ws_proxy.relay.context import ClientInfo, ServerContext, ServerStats
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.connection import handle_client
from h2ws_proxy.transport.socket_stream import LeanSocketStream
from tests.helpers.backends import BackendConnection

#: The default for ``MemoryNet.backend_sockets`` (a fixture may flip it for a module).
SOCKET_BACKENDS = False

MemoryBackend = Callable[[trio.abc.HalfCloseableStream], Awaitable[None]]

#: A valid RFC 8441 extended CONNECT for "/", as a browser sends it.
CONNECT_HEADERS = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"https"),
    (b":path", b"/"),
    (b":authority", b"proxy.test"),
    (b"sec-websocket-version", b"13"),
]


async def echo_backend(stream: trio.abc.HalfCloseableStream) -> None:
    """Accepts the upgrade, then echoes raw bytes (not frames) until EOF."""
    conn = BackendConnection(stream)
    await conn.accept(await conn.read_upgrade())
    await conn.echo_until_eof()


@dataclass
class MemoryNet:
    """The in-memory world of one test: its backends and what happened to them."""

    nursery: trio.Nursery
    behaviour: MemoryBackend
    #: Seconds ``connect`` takes before it answers (None: it never answers).
    connect_delay_s: float | None = 0.0
    #: Backend streams with no buffering at all (a backend that does not read blocks the
    #: proxy's writes), instead of trio's unbounded in-memory buffer.
    lockstep: bool = False
    #: A socketpair per backend instead of in-memory streams (ignored with ``lockstep``).
    backend_sockets: bool | None = None
    dials: int = 0
    dials_cancelled: int = 0
    backend_closed: list[trio.Event] = field(default_factory=list)

    async def connect(self, address: BackendAddress) -> trio.abc.HalfCloseableStream:
        self.dials += 1
        try:
            if self.connect_delay_s is None:
                await trio.sleep_forever()
            await trio.sleep(self.connect_delay_s)
        except trio.Cancelled:
            self.dials_cancelled += 1
            raise
        sockets = SOCKET_BACKENDS if self.backend_sockets is None else self.backend_sockets
        proxy_side: trio.abc.HalfCloseableStream
        backend_side: trio.abc.HalfCloseableStream
        if sockets and not self.lockstep:
            ours, theirs = socket.socketpair()
            proxy_side = LeanSocketStream(ours)
            backend_side = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
        else:
            pair = (
                trio.testing.lockstep_stream_pair
                if self.lockstep
                else trio.testing.memory_stream_pair
            )
            proxy_side, backend_side = pair()
        closed = trio.Event()
        self.backend_closed.append(closed)
        self.nursery.start_soon(self._run_backend, backend_side, closed)
        return proxy_side

    async def _run_backend(self, stream: trio.abc.HalfCloseableStream, closed: trio.Event) -> None:
        try:
            await self.behaviour(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            closed.set()
            await trio.aclose_forcefully(stream)


async def open_memory_client(
    nursery: trio.Nursery,
    config: ProxyConfig,
    net: MemoryNet,
    *,
    shutdown: trio.Event | None = None,
    lockstep: bool = False,
    stats: ServerStats | None = None,
) -> trio.abc.HalfCloseableStream:
    """Start serving one in-memory client connection; returns the client's end.

    ``stats``: the server's counters, for the test to read (a fresh set by default).

    With ``lockstep`` the client's end has no buffer at all: the proxy's writes complete
    only as the test reads (a client that does not read blocks them).
    """
    server = ServerContext(
        config=config,
        router=Router(config.routes),
        shutdown=shutdown if shutdown is not None else trio.Event(),
        connect_backend=net.connect,
        stats=stats if stats is not None else ServerStats(),
    )
    pair = trio.testing.lockstep_stream_pair if lockstep else trio.testing.memory_stream_pair
    client_side, proxy_side = pair()
    info = ClientInfo(connection_id=1, listener=config.listeners[0], address="127.0.0.1", tls=False)
    nursery.start_soon(handle_client, proxy_side, server, info)
    return client_side
