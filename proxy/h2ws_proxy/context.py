"""What every connection handler needs, passed as one object instead of many arguments."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from h2ws_proxy.backend import ConnectBackend, open_backend_stream
from h2ws_proxy.config import ListenerConfig, ProxyConfig
from h2ws_proxy.routing import Router


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Shared by all connections of one running server."""

    config: ProxyConfig
    router: Router
    #: Set when the server starts draining: frontends stop taking new requests.
    shutdown: trio.Event
    #: How to reach a backend; tests inject an in-memory one.
    connect_backend: ConnectBackend = open_backend_stream


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One accepted client connection."""

    connection_id: int
    listener: ListenerConfig
    #: The client's IP address (for X-Forwarded-For), None when unknown (in-memory tests).
    address: str | None
    #: True when the client reached us over TLS.
    tls: bool
