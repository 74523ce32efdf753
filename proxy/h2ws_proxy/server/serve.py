"""Run the proxy: bind every listener and the admin port, serve, drain on shutdown.

``serve`` is what the CLI runs and what tests start with ``nursery.start``: it reports the
bound addresses through ``task_status`` (port 0 gets a real port), serves until the
``shutdown`` event is set, then stops accepting, lets frontends send GOAWAY and finish
their tunnels, sends the WebSockets still open a Close 1001 after ``graceful_timeout_s``
(relay/going_away.py), and cancels what is left ``close_wait_s`` later.

With ``workers > 1`` the supervisor binds once (:func:`bind_sockets`) and each worker
process passes the inherited sockets to ``serve`` (``supervisor.py``, ``worker.py``).
"""

from __future__ import annotations

import functools
import logging
import signal
import ssl
from dataclasses import dataclass

import trio

from h2ws_proxy.backend.health import run_health_checks
from h2ws_proxy.backend.upgrade import ConnectBackend, open_backend_stream
from h2ws_proxy.config import ListenerConfig, ProxyConfig, SocketAddress, build_listener_contexts
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import log_event, next_connection_id
from h2ws_proxy.relay.client_limits import ConnectionSlot, ListenerCapacity
from h2ws_proxy.relay.context import ClientInfo, ServerContext, ServerStats
from h2ws_proxy.relay.going_away import close_websockets_on_drain, drain_deadline_s
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.accept import AcceptLoop, serve_admin
from h2ws_proxy.server.admin import handle_admin
from h2ws_proxy.server.connection import handle_client
from h2ws_proxy.server.descriptors import raise_descriptor_limit
from h2ws_proxy.transport.capabilities import peer_host

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BoundAddresses:
    """Where the running server actually listens (ports resolved)."""

    listeners: tuple[SocketAddress, ...]
    admin: SocketAddress | None


@dataclass(frozen=True, slots=True)
class BoundSockets:
    """Listening sockets, bound and listening: one list per ``config.listeners`` entry (a
    host name can give an IPv4 and an IPv6 socket), and the admin server's."""

    listeners: tuple[list[trio.SocketListener], ...]
    admin: list[trio.SocketListener] | None


async def bind_sockets(config: ProxyConfig) -> BoundSockets:
    """Bind every listener and the admin port; raise ConfigError naming the one that fails."""
    listeners = tuple([await _bind(lc.bind, "listener") for lc in config.listeners])
    admin = await _bind(config.admin.bind, "admin") if config.admin else None
    return BoundSockets(listeners, admin)


async def _bind(address: SocketAddress, what: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as error:
        raise ConfigError(f"{what} {address}: cannot listen: {error.strerror or error}") from error


def bound_address(listeners: list[trio.SocketListener]) -> SocketAddress:
    """The address ``listeners`` (from one config entry) actually listen on."""
    host, port = listeners[0].socket.getsockname()[:2]
    return SocketAddress(host=host, port=port)


async def _serve_client(
    stream: trio.abc.Stream,
    slot: ConnectionSlot,
    *,
    server: ServerContext,
    listener: ListenerConfig,
    ssl_context: ssl.SSLContext | None,
) -> None:
    info = ClientInfo(
        connection_id=next_connection_id(),
        listener=listener,
        address=peer_host(stream),
        tls=ssl_context is not None,
        slot=slot,
    )
    await handle_client(stream, server, info, ssl_context=ssl_context)


async def serve(
    config: ProxyConfig,
    *,
    shutdown: trio.Event | None = None,
    connect_backend: ConnectBackend = open_backend_stream,
    sockets: BoundSockets | None = None,
    stats: ServerStats | None = None,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``config`` until ``shutdown`` is set, then drain.

    ``sockets``: already bound sockets to serve on (a worker's inherited ones); by default
    ``serve`` binds them itself. ``stats``: the counters to keep (a worker reports them to
    its supervisor). Raises ConfigError when a listener cannot bind.
    """
    server = ServerContext(
        config=config,
        router=Router(config.routes),
        shutdown=shutdown if shutdown is not None else trio.Event(),
        connect_backend=connect_backend,
        stats=stats if stats is not None else ServerStats(),
    )
    contexts = build_listener_contexts(config)
    if sockets is None:
        sockets = await bind_sockets(config)
        raise_descriptor_limit(config)  # once bound: a bind error stays the only line
    async with trio.open_nursery() as background:
        background.start_soon(server.pool.reap)
        background.start_soon(run_health_checks, server.balancers, server.connect_backend)
        await _serve_until_drained(server, sockets, contexts, task_status)
        background.cancel_scope.cancel()
    await server.pool.aclose()
    log_event(logger, logging.INFO, "server.stopped")


async def _serve_until_drained(
    server: ServerContext,
    sockets: BoundSockets,
    contexts: list[ssl.SSLContext | None],
    task_status: trio.TaskStatus[BoundAddresses],
) -> None:
    config = server.config
    bound, admin = sockets.listeners, sockets.admin
    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as acceptors:
            for listener_config, listeners, ssl_context in zip(
                config.listeners, bound, contexts, strict=True
            ):
                handler = functools.partial(
                    _serve_client, server=server, listener=listener_config, ssl_context=ssl_context
                )
                # One cap per listener, shared by its sockets (IPv4 and IPv6 of one name).
                capacity = ListenerCapacity(config.limits.max_connections)
                for listener in listeners:
                    loop = AcceptLoop(listener, handler, server, capacity)
                    acceptors.start_soon(loop.run, connections)
            answer_admin = functools.partial(handle_admin, server=server)
            for admin_listener in admin or ():
                acceptors.start_soon(serve_admin, admin_listener, answer_admin, server, connections)
            addresses = BoundAddresses(
                listeners=tuple(bound_address(listeners) for listeners in bound),
                admin=bound_address(admin) if admin else None,
            )
            log_event(
                logger,
                logging.INFO,
                "server.listening",
                listeners=",".join(map(str, addresses.listeners)),
                admin=addresses.admin,
            )
            task_status.started(addresses)
            await server.shutdown.wait()
            log_event(
                logger,
                logging.INFO,
                "server.draining",
                graceful_timeout_s=config.limits.graceful_timeout_s,
            )
            acceptors.cancel_scope.cancel()
        # WebSockets still open after graceful_timeout_s get a Close 1001 and close_wait_s.
        connections.start_soon(close_websockets_on_drain, server.tunnels, config.limits)
        connections.cancel_scope.deadline = trio.current_time() + drain_deadline_s(config.limits)


async def drain_on_signals(shutdown: trio.Event, scope: trio.CancelScope) -> None:
    """First SIGTERM/SIGINT: set ``shutdown`` (drain). Second: cancel ``scope`` (stop now)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if shutdown.is_set():
                logger.warning("second %s: stopping now", signal.Signals(signum).name)
                scope.cancel()
                return
            logger.info("%s: draining (send it again to stop at once)", signal.Signals(signum).name)
            shutdown.set()
