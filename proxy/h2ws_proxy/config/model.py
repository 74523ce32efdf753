"""The configuration's model: frozen dataclasses, defaults on the fields. Pure.

Rules:

* Every value here was validated by :mod:`h2ws_proxy.config.parse` (or built by code that
  holds the same rules, as the tests do); nothing here checks again.
* Paths are absolute (resolved against the config file's directory at load).
* ``__str__`` of an address is how messages and logs write it: IPv6 literals in brackets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "AdminConfig",
    "BackendAddress",
    "BackendGroup",
    "BackendTLS",
    "Balance",
    "CertificateConfig",
    "HealthCheck",
    "Limits",
    "ListenerConfig",
    "ProxyConfig",
    "RouteConfig",
    "SocketAddress",
    "TLSConfig",
    "advertises_connect_protocol",
    "join_host_port",
]


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    host: str  #: "127.0.0.1", "::1" (no brackets) or a name such as "localhost"
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class CertificateConfig:
    """One certificate chain and its private key (PEM files, absolute paths)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """A TLS listener's certificates: ``cert``/``key`` (the first), then ``certificates``
    (``[[listener.tls.certificate]]``). The one whose names cover the client's SNI serves
    it; with none or no SNI, the first."""

    cert: Path | None = None  #: absolute
    key: Path | None = None  #: absolute
    certificates: tuple[CertificateConfig, ...] = ()

    def all_certificates(self) -> tuple[CertificateConfig, ...]:
        """Every certificate, the default (first) one first."""
        if self.cert is not None and self.key is not None:
            return (CertificateConfig(self.cert, self.key), *self.certificates)
        return self.certificates


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    bind: SocketAddress
    tls: TLSConfig | None = None
    #: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3): True, False, or "auto" (advertise
    #: only when a route can take WebSockets; see :func:`advertises_connect_protocol`).
    enable_connect_protocol: bool | Literal["auto"] = "auto"
    #: The protocols served, ALPN names in order of preference: with TLS, what ALPN offers;
    #: without, "h2" alone serves only HTTP/2 with prior knowledge (anything else is a
    #: connection error), "http/1.1" alone only HTTP/1.1, both: the preface decides.
    protocols: tuple[str, ...] = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True)
class BackendTLS:
    """How the proxy speaks TLS to an ``https://`` server (``[backend.tls]``)."""

    #: CA certificates (PEM) to verify the server with; None: the system's.
    ca: Path | None = None
    #: The name to send as SNI and to verify; None: the server's host.
    server_name: str | None = None
    #: A client certificate and key, for servers that require mutual TLS.
    client_cert: CertificateConfig | None = None
    #: False only when written: no verification at all (a warning at start).
    verify: bool = True


#: What the proxy speaks to a backend server (``BackendAddress.protocol``).
BackendProtocol = Literal["http/1.1", "h2", "auto"]


@dataclass(frozen=True, slots=True)
class BackendAddress:
    """One backend server."""

    scheme: Literal["http", "https", "unix"]
    host: str = ""
    port: int = 0
    unix_path: str = ""
    #: For ``https``: how to verify it (None: the system CAs, the host's name).
    tls: BackendTLS | None = None
    #: What to speak to it: HTTP/1.1; HTTP/2 (``h2c://`` by prior knowledge, or ``https``
    #: with ALPN ``h2``); ``auto``: ``https`` with ALPN offering both, the server choosing.
    protocol: BackendProtocol = "http/1.1"

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.unix_path}"
        scheme = "h2c" if self.protocol == "h2" and self.scheme == "http" else self.scheme
        return f"{scheme}://{join_host_port(self.host, self.port)}"

    @property
    def speaks_h2(self) -> bool:
        """HTTP/2 may be spoken to it (``h2``, or ``auto`` if ALPN picks it)."""
        return self.protocol != "http/1.1"

    def over_http11(self) -> BackendAddress:
        """The same server spoken to with HTTP/1.1 (an ``auto`` server that chose it)."""
        return dataclasses.replace(self, protocol="http/1.1")

    @property
    def host_header(self) -> str:
        """Host for the backend request when the client sent none (default port left out)."""
        if self.scheme == "unix":
            return "localhost"
        if self.port == (443 if self.scheme == "https" else 80):
            return f"[{self.host}]" if ":" in self.host else self.host
        return join_host_port(self.host, self.port)


Balance = Literal["round_robin", "least_connections", "client_ip", "cookie"]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """Active health checks of a group's servers (``[backend.health_check]``)."""

    path: str = "/"
    interval_s: float = 5.0
    timeout_s: float = 2.0
    #: Passes in a row that bring a server back; failures in a row that take it out.
    healthy: int = 2
    unhealthy: int = 3


@dataclass(frozen=True, slots=True)
class BackendGroup:
    """The servers a route's requests go to (a ``[[backend]]`` table, or a route's own
    ``backend`` URL or list of URLs: then ``name`` is empty)."""

    servers: tuple[BackendAddress, ...]
    name: str = ""
    balance: Balance = "round_robin"
    #: The cookie that pins a client to a server with ``balance = "cookie"``.
    sticky_cookie: str = ""
    #: Connections (tunnels and requests in progress) per server; beyond it a request waits
    #: up to ``queue_timeout_s``, then 503. 0: no limit.
    max_connections: int = 0
    queue_timeout_s: float = 5.0
    #: Passive health: refused or timed out this many times in a row, a server is left out
    #: for ``fail_timeout_s``. 0 disables.
    max_fails: int = 3
    fail_timeout_s: float = 10.0
    health_check: HealthCheck | None = None

    @classmethod
    def of(cls, *servers: BackendAddress) -> BackendGroup:
        """An unnamed group of ``servers`` with the defaults (a route's own URL or list)."""
        return cls(servers=servers)

    def __str__(self) -> str:
        if self.name:
            return self.name
        return ",".join(map(str, self.servers))


@dataclass(frozen=True, slots=True)
class RouteConfig:
    path: str
    backend: BackendGroup
    #: The client's forwarding fields toward the backend (``http/fields.py``): True, the
    #: proxy is the edge (they go, ours are added); "append", behind a trusted proxy (they
    #: stay, the peer is appended to X-Forwarded-For); False, untouched and none added.
    x_forwarded: bool | Literal["append"] = True
    websocket: bool = True  #: the backend takes WebSocket upgrades on this route
    #: False: the backend receives the client's request target byte for byte (the route is
    #: still chosen on the normalised path when there is one; ``http/paths.py``).
    normalize_path: bool = True
    #: Field names dropped from the client's request head and trailers toward this route's
    #: backend, whatever ``x_forwarded`` says (never the proxy's own fields): lowercase,
    #: ``-`` for ``_``, matched in either spelling.
    strip_fields: frozenset[bytes] = frozenset()
    #: Host names the route serves, canonical (``config/hosts.py``: lowercase, no port or
    #: trailing dot, IPv6 compressed in brackets): exact, or ``*.example.com`` for exactly
    #: one label more. Empty: any host (routing: ``relay/routing.py``).
    host: tuple[str, ...] = ()
    #: Origins a WebSocket request may come from, canonical (``https://app.example.com``,
    #: no default port; ``*.`` for one label); empty: any. Ordinary requests are not checked.
    allowed_origins: tuple[str, ...] = ()
    #: Refuse WebSocket requests that carry no ``Origin`` (non-browser clients send none).
    require_origin: bool = False


@dataclass(frozen=True, slots=True)
class AdminConfig:
    bind: SocketAddress


@dataclass(frozen=True, slots=True)
class Limits:
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 10.0
    client_handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0  #: 0 disables
    max_concurrent_streams: int = 128
    stream_window_bytes: int = 262144
    max_header_list_bytes: int = 65536
    max_rejection_body_bytes: int = 65536
    graceful_timeout_s: float = 10.0
    #: On shutdown, how long new connections are still accepted and told to go (HTTP/2:
    #: GOAWAY; HTTP/1.1: one answer with ``connection: close``) before the listening
    #: sockets close; 0 closes them at once (new clients are refused). Below
    #: ``graceful_timeout_s``.
    drain_accept_s: float = 0.0
    #: An HTTP/2 connection with no open stream for this long is closed; 0 disables.
    idle_connection_timeout_s: float = 300.0
    #: A client that takes none of our bytes for this long is disconnected.
    send_timeout_s: float = 60.0
    #: Client connections per listener. At the cap, a waiting client takes the place of the
    #: connection idle the longest; with none idle, clients wait in the kernel's backlog.
    max_connections: int = 10000
    #: Connections one client address (an IPv6 address: its /64) may hold, all listeners
    #: together; None: a tenth of ``max_connections`` (at least 1); 0: no limit.
    max_connections_per_client: int | None = None
    #: Tunnels one client address may have open at once, all its connections together;
    #: past it a new tunnel gets 429. None: a tenth of ``max_connections``; 0: no limit.
    max_tunnels_per_client: int | None = None
    #: Streams a client may cancel or have refused within ``stream_reset_window_s`` before
    #: its connection is closed with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    max_stream_resets: int = 200
    stream_reset_window_s: float = 10.0
    #: Empty DATA frames (no payload, no END_STREAM) a client may send in that window.
    max_empty_frames: int = 1000
    #: An ordinary HTTP request with no byte moving either way this long is ended (504
    #: before the backend's answer began, an abort after).
    http_idle_timeout_s: float = 60.0
    #: How long an idle keep-alive connection to a backend is kept for reuse; 0 disables
    #: reuse. Below Node's 5 s keep-alive default, so we close first, not the backend.
    backend_keepalive_s: float = 4.0
    #: Idle keep-alive connections kept per backend (0 disables reuse). Above the streams
    #: of a busy connection, so a burst of concurrent requests does not reconnect.
    backend_max_idle: int = 256
    #: After one side of a tunnel ended, how long the other may stay silent without ending
    #: too; 0 disables.
    half_closed_timeout_s: float = 10.0
    #: On drain, once a WebSocket got our Close 1001 (after ``graceful_timeout_s``), how long
    #: its peers get to answer with theirs and end before it is cut.
    close_wait_s: float = 2.0
    #: On drain, send WebSockets the Close 1001 at once instead of after
    #: ``graceful_timeout_s`` (ordinary requests still get that long).
    drain_close_websockets: bool = False

    def connections_per_client(self) -> int:
        """``max_connections_per_client`` in effect (0: no limit)."""
        if self.max_connections_per_client is None:
            return _share(self.max_connections)
        return self.max_connections_per_client

    def tunnels_per_client(self) -> int:
        """``max_tunnels_per_client`` in effect (0: no limit)."""
        if self.max_tunnels_per_client is None:
            return _share(self.max_connections)
        return self.max_tunnels_per_client


def _share(max_connections: int) -> int:
    """The default per-client cap: a small share of the listener, so no one address can
    hold every place."""
    return max(1, max_connections // 10)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listeners: tuple[ListenerConfig, ...]
    routes: tuple[RouteConfig, ...]
    admin: AdminConfig | None = None
    limits: Limits = field(default_factory=Limits)
    source: str = "<memory>"  #: the file name, for messages
    #: Worker processes sharing the listening sockets (``server/supervisor.py``); 1 = no supervisor.
    workers: int = 1
    #: The named groups (``[[backend]]`` tables); routes hold the groups they use.
    backends: tuple[BackendGroup, ...] = ()


def advertises_connect_protocol(config: ProxyConfig, listener: ListenerConfig) -> bool:
    """Whether ``listener`` sends SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.

    Browsers read the setting as "WebSocket over HTTP/2 works here" and do not fall back to
    HTTP/1.1 when the extended CONNECT then fails, so "auto" advertises it only when some
    route can take WebSockets.
    """
    if listener.enable_connect_protocol == "auto":
        return any(route.websocket for route in config.routes)
    return bool(listener.enable_connect_protocol)
