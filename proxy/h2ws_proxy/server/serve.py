"""Run the proxy: bind every listener and the admin port, serve, drain on shutdown.

``serve`` is what the CLI runs and what tests start with ``nursery.start``: it reports the
bound addresses through ``task_status`` (port 0 gets a real port) and serves until the
``shutdown`` event is set. Then it drains:

* the admin port stays up to the end, ``/healthz`` and ``/readyz`` answering 503;
* new connections are still accepted for ``drain_accept_s`` (0 by default) and told to go
  (HTTP/2: SETTINGS then GOAWAY(NO_ERROR) naming stream 0; HTTP/1.1: one answer with
  ``connection: close``, a WebSocket upgrade 503); then the listening sockets close, so a
  client connecting later is refused at once instead of waiting in a backlog nobody
  accepts from (nginx and HAProxy close them at once; Envoy's drain keeps accepting);
* frontends send GOAWAY to their clients and close idle HTTP/1.1 connections; open
  tunnels and requests get until ``graceful_timeout_s`` after the signal; then the
  WebSockets still open get a Close 1001 both ways (relay/going_away.py), and what is left
  is cancelled ``close_wait_s`` later.

Listeners are served through ``listeners.py`` and the server is attached to its
``Reloader`` once it listens: SIGHUP and ``POST /reload`` switch it to a re-read config
(``reload.py``).

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

from h2ws_proxy.backend.health import HealthChecks
from h2ws_proxy.backend.tls import prepare_backend_tls
from h2ws_proxy.backend.upgrade import ConnectBackend, open_backend_stream
from h2ws_proxy.config import ProxyConfig, SocketAddress, build_listener_contexts
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import flush_log_lines, log_event
from h2ws_proxy.relay.context import ServerContext, ServerStats
from h2ws_proxy.relay.going_away import close_websockets_on_drain, drain_deadline_s
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.accept import serve_admin
from h2ws_proxy.server.admin import handle_admin, not_ready
from h2ws_proxy.server.descriptors import raise_descriptor_limit
from h2ws_proxy.server.listeners import ListenerSet, listener_keys
from h2ws_proxy.server.reload import Reloader

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


async def bind_listener(address: SocketAddress) -> list[trio.SocketListener]:
    """Bind one listener (a reload adds it); raise ConfigError naming it."""
    return await _bind(address, "listener")


def bound_address(listeners: list[trio.SocketListener]) -> SocketAddress:
    """The address ``listeners`` (from one config entry) actually listen on."""
    host, port = listeners[0].socket.getsockname()[:2]
    return SocketAddress(host=host, port=port)


async def serve(
    config: ProxyConfig,
    *,
    shutdown: trio.Event | None = None,
    connect_backend: ConnectBackend = open_backend_stream,
    sockets: BoundSockets | None = None,
    stats: ServerStats | None = None,
    warn_unverified_backends: bool = True,
    reloader: Reloader | None = None,
    task_status: trio.TaskStatus[BoundAddresses] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``config`` until ``shutdown`` is set, then drain.

    ``sockets``: already bound sockets to serve on (a worker's inherited ones); by default
    ``serve`` binds them itself. ``stats``: the counters to keep (a worker reports them to
    its supervisor). ``warn_unverified_backends``: log a warning per backend group with
    ``verify = false`` (a worker leaves that to its supervisor). ``reloader``: what
    SIGHUP and ``POST /reload`` reload with (``reload.py``). Raises ConfigError when a
    listener cannot bind or a TLS file does not load.
    """
    server = ServerContext(
        config=config,
        router=Router(config.routes),
        shutdown=shutdown if shutdown is not None else trio.Event(),
        connect_backend=connect_backend,
        stats=stats if stats is not None else ServerStats(),
    )
    server.stats.not_ready = functools.partial(not_ready, server)
    contexts = build_listener_contexts(config)
    prepare_backend_tls(config, warn=warn_unverified_backends)
    if sockets is None:
        sockets = await bind_sockets(config)
        raise_descriptor_limit(config)  # once bound: a bind error stays the only line
    reloader = reloader if reloader is not None else Reloader()
    async with trio.open_nursery() as background:
        # Log lines are batched until the drain is over (log_lines.py): none is lost.
        background.start_soon(flush_log_lines)
        background.start_soon(server.pool.reap)
        await background.start(server.h2_backends.run)
        health = HealthChecks(server.connect_backend, server.h2_backends)
        health.start(background, server.balancers)
        await _serve_until_drained(server, sockets, contexts, (reloader, health), task_status)
        server.h2_backends.close()
        background.cancel_scope.cancel()
    await server.pool.aclose()
    log_event(logger, logging.INFO, "server.stopped")


async def _serve_until_drained(
    server: ServerContext,
    sockets: BoundSockets,
    contexts: list[ssl.SSLContext | None],
    reloading: tuple[Reloader, HealthChecks],
    task_status: trio.TaskStatus[BoundAddresses],
) -> None:
    config = server.config
    bound, admin = sockets.listeners, sockets.admin
    # The admin port outlives the drain: /healthz and /readyz answer 503 until the end.
    async with trio.open_nursery() as admin_nursery:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                served = ListenerSet(server, acceptors, connections)
                for key, listener_config, listeners, ssl_context in zip(
                    listener_keys(config), config.listeners, bound, contexts, strict=True
                ):
                    await served.open(key, listener_config, listeners, ssl_context)
                reloader, health = reloading
                reloader.attach(server, served, health, bind_listener)
                answer_admin = functools.partial(
                    handle_admin, server=server, reload=reloader.answer_admin
                )
                for admin_listener in admin or ():
                    admin_nursery.start_soon(
                        serve_admin, admin_listener, answer_admin, server, admin_nursery
                    )
                server.accepting.set()
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
                await _stop_accepting(server, connections)
                acceptors.cancel_scope.cancel()
            # Every listener serving now (a reload may have added or removed some).
            await _close_listeners(tuple(s.sockets for s in served.by_key.values()))
            log_event(logger, logging.INFO, "server.listeners_closed")
        admin_nursery.cancel_scope.cancel()
    await _close_listeners((admin or [],))


async def _stop_accepting(server: ServerContext, connections: trio.Nursery) -> None:
    """The drain's start: give connections until ``graceful_timeout_s``, and go on
    accepting for ``drain_accept_s`` (new clients are told to go: frontends see the
    shutdown) before the caller stops accepting."""
    limits = server.config.limits
    log_event(
        logger,
        logging.INFO,
        "server.draining",
        graceful_timeout_s=limits.graceful_timeout_s,
        drain_accept_s=limits.drain_accept_s,
    )
    # WebSockets still open after graceful_timeout_s get a Close 1001 and close_wait_s.
    connections.start_soon(close_websockets_on_drain, server.tunnels, limits)
    connections.cancel_scope.deadline = trio.current_time() + drain_deadline_s(limits)
    if limits.drain_accept_s:
        await trio.sleep(limits.drain_accept_s)


async def _close_listeners(bound: tuple[list[trio.SocketListener], ...]) -> None:
    """Close the listening sockets: a client connecting from now on is refused at once
    (in a worker, once every process holding the socket closed it) rather than left in
    the backlog."""
    for listeners in bound:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


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
