"""What every connection handler needs, passed as one object instead of many arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import trio

from h2ws_proxy.backend.balancer import Balancers
from h2ws_proxy.backend.h2.pool import H2Backends
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.backend.upgrade import ConnectBackend, open_backend_stream
from h2ws_proxy.config import (
    BackendGroup,
    CertificateNames,
    Limits,
    ListenerConfig,
    ProxyConfig,
)
from h2ws_proxy.counters import ProxyCounters
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
    #: Per HTTP/2 backend server: (server, connections, open streams), once serving.
    h2_backends: Callable[[], list[tuple[str, int, int]]] | None = None
    #: Why the server is not ready for new clients (``/readyz``), None when it is; set
    #: once serving.
    not_ready: Callable[[], str | None] | None = None
    #: What ``/metrics`` reports (relay/record.py counts each tunnel and request into it).
    counters: ProxyCounters = field(default_factory=ProxyCounters)

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
class Generation:
    """What one loaded config serves: built whole before it is switched in
    (``server/reload.py``), then read at connection accept and at stream admission. A
    tunnel or request keeps the route (and through it the balancer) it was admitted with."""

    config: ProxyConfig
    router: Router
    balancers: Balancers
    #: 1 for the config the server started with, one more per reload.
    number: int = 1


class ServerContext:
    """Shared by all connections of one running server.

    ``config``, ``router`` and ``balancers`` are those of the :attr:`current` generation,
    which a reload replaces in one assignment (:meth:`switch`); the rest lives as long as
    the server.
    """

    __slots__ = (
        "_current",
        "accepting",
        "clients",
        "connect_backend",
        "h2_backends",
        "pool",
        "shutdown",
        "stats",
        "tunnels",
    )

    def __init__(
        self,
        config: ProxyConfig,
        router: Router,
        shutdown: trio.Event,
        connect_backend: ConnectBackend = open_backend_stream,
        stats: ServerStats | None = None,
    ) -> None:
        #: Set when the server starts draining: frontends stop taking new requests.
        self.shutdown = shutdown
        #: How to reach a backend; tests inject an in-memory one.
        self.connect_backend = connect_backend
        self.stats = stats if stats is not None else ServerStats()
        #: Keep-alive connections for ordinary requests (tunnels always dial their own).
        connect_times = self.stats.counters.backend_connect_seconds
        self.pool = BackendPool(config.limits, connect_backend, connect_times)
        #: Shared HTTP/2 connections to the servers that speak it (``h2c://``, ``protocol``).
        self.h2_backends = H2Backends(config.limits, connect_backend)
        self.stats.h2_backends = self.h2_backends.describe
        #: Set once every listener accepts (``/readyz``).
        self.accepting = trio.Event()
        #: The tunnels running, for the drain's WebSocket Close (relay/going_away.py).
        self.tunnels = OpenTunnels()
        #: Connections and tunnels per client address.
        self.clients = ClientTable(config.limits)
        self._current = CurrentGeneration(Generation(config, router, Balancers(_groups(config))))
        self.stats.backend_servers = self._current.generation.balancers.describe

    @property
    def current(self) -> Generation:
        return self._current.generation

    @property
    def current_cell(self) -> CurrentGeneration:
        """The cell whose ``generation`` is :attr:`current`, the same for the server's life
        (a reload assigns into it): for a reader per request, one attribute read."""
        return self._current

    @property
    def config(self) -> ProxyConfig:
        return self._current.generation.config

    @property
    def router(self) -> Router:
        """The current routes: read once per request, so a new stream on an old
        connection is routed with the routes of the latest reload."""
        return self._current.generation.router

    @property
    def balancers(self) -> Balancers:
        """Which server of a route's backend group takes the next tunnel or request."""
        return self._current.generation.balancers

    def next_generation(self, config: ProxyConfig) -> Generation:
        """``config``'s generation, its balancers carrying the state of the servers that
        stay (``Balancers``); nothing is switched yet. Raises nothing config-related: the
        config was validated."""
        current = self.current
        balancers = Balancers(_groups(config), previous=current.balancers)
        return Generation(config, Router(config.routes), balancers, current.number + 1)

    def switch(self, generation: Generation) -> None:
        """Serve ``generation`` from now on: new connections and new streams see it."""
        self._current.generation = generation
        self.clients.apply_limits(generation.config.limits)
        self.pool.apply_limits(generation.config.limits)
        self.h2_backends.apply_limits(generation.config.limits)
        self.stats.backend_servers = generation.balancers.describe

    def with_shutdown(self, shutdown: trio.Event) -> ServerContext:
        """The same server as seen by one listener's connections, draining on
        ``shutdown`` (set when the server drains, or when a reload removed the listener)."""
        view = ServerContext.__new__(ServerContext)
        view.shutdown = shutdown
        view.connect_backend = self.connect_backend
        view.stats, view.pool, view.clients = self.stats, self.pool, self.clients
        view.h2_backends = self.h2_backends
        view.accepting = self.accepting
        view.tunnels = self.tunnels
        view._current = self._current
        return view


class CurrentGeneration:
    """The one mutable cell every view of a server shares."""

    __slots__ = ("generation",)

    def __init__(self, generation: Generation) -> None:
        self.generation = generation


def _groups(config: ProxyConfig) -> list[BackendGroup]:
    return [*config.backends, *(route.backend for route in config.routes)]


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
    #: The client's address and port for log lines (``1.2.3.4:5678``, ``[::1]:5678``), "-"
    #: when unknown.
    peer: str = "-"
