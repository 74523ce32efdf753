"""What every connection handler needs, passed as one object instead of many arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from h2ws_proxy.backend.balancer import Balancers
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.backend.upgrade import ConnectBackend, open_backend_stream
from h2ws_proxy.config import CertificateNames, Limits, ListenerConfig, ProxyConfig
from h2ws_proxy.relay.client_limits import ClientTable, ConnectionSlot, unlimited_slot
from h2ws_proxy.relay.going_away import OpenTunnels
from h2ws_proxy.relay.routing import Router


@dataclass(slots=True)
class ServerStats:
    """Live counters of one server, for the admin endpoint, soak runs and tests."""

    connections: int = 0
    tunnels: int = 0
    #: Ordinary HTTP requests in progress.
    requests: int = 0
    #: Bugs caught at a connection boundary (logged with a traceback). Should stay 0.
    unexpected_errors: int = 0
    #: Connections closed at once because their client was at max_connections_per_client.
    refused_per_client: int = 0
    #: Idle connections told to go to make room at a listener's max_connections.
    evicted_idle: int = 0
    #: Times accept failed for want of descriptors or memory (EMFILE, ENFILE...).
    accept_failures: int = 0
    #: Each backend server's state (up or down, why, work in progress), once serving.
    backend_servers: Callable[[], list[dict[str, object]]] | None = None

    @contextlib.contextmanager
    def count_connection(self) -> Iterator[None]:
        self.connections += 1
        try:
            yield
        finally:
            self.connections -= 1

    def count_tunnel(self) -> _InProgress:
        return _InProgress(self, tunnel=True)

    def count_request(self) -> _InProgress:
        """Ordinary requests in progress (see :class:`_InProgress`)."""
        return _InProgress(self, tunnel=False)


class _InProgress:
    """``with stats.count_tunnel():`` (or ``count_request``) counts the block in a counter.

    Not a generator-based context manager: every open tunnel's frame would hold one, and
    creating and driving one per request shows in the GET profile (bench/README.md).
    """

    __slots__ = ("_stats", "_tunnel")

    def __init__(self, stats: ServerStats, *, tunnel: bool) -> None:
        self._stats = stats
        self._tunnel = tunnel

    def __enter__(self) -> None:
        if self._tunnel:
            self._stats.tunnels += 1
        else:
            self._stats.requests += 1

    def __exit__(self, *exc_info: object) -> None:
        if self._tunnel:
            self._stats.tunnels -= 1
        else:
            self._stats.requests -= 1


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Shared by all connections of one running server."""

    config: ProxyConfig
    router: Router
    #: Set when the server starts draining: frontends stop taking new requests.
    shutdown: trio.Event
    #: How to reach a backend; tests inject an in-memory one.
    connect_backend: ConnectBackend = open_backend_stream
    stats: ServerStats = field(default_factory=ServerStats)
    #: Keep-alive connections for ordinary requests (tunnels always dial their own).
    pool: BackendPool = field(init=False)
    #: Connections and tunnels per client address.
    clients: ClientTable = field(init=False)
    #: Which server of a route's backend group takes the next tunnel or request.
    balancers: Balancers = field(init=False)
    #: The tunnels running, for the drain's WebSocket Close (relay/going_away.py).
    tunnels: OpenTunnels = field(default_factory=OpenTunnels)

    def __post_init__(self) -> None:
        config = self.config
        object.__setattr__(self, "pool", BackendPool(config.limits, self.connect_backend))
        object.__setattr__(self, "clients", ClientTable(config.limits))
        groups = [*config.backends, *(route.backend for route in config.routes)]
        object.__setattr__(self, "balancers", Balancers(groups))
        self.stats.backend_servers = self.balancers.describe


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One accepted client connection."""

    connection_id: int
    listener: ListenerConfig
    #: The client's IP address (for X-Forwarded-For), None when unknown (in-memory tests).
    address: str | None
    #: True when the client reached us over TLS.
    tls: bool
    #: Its place in the per-client and per-listener accounting (client_limits.py).
    slot: ConnectionSlot = field(default_factory=lambda: unlimited_slot(Limits()))
    #: The names of the certificate the connection was served with, known once its TLS
    #: handshake is done (None before, and without TLS): a request for another host gets
    #: 421 over HTTP/2 (RFC 9110 §15.5.20).
    certificate: CertificateNames | None = None
