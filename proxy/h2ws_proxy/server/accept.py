"""Accepting client connections: within the listener's capacity and the clients' caps
(relay/client_limits.py), and through a shortage of descriptors.

Rules:

* A listener accepts only with a place free (``max_connections``); at the cap, a waiting
  client takes the place of the connection idle the longest, else waits in the kernel's
  backlog.
* A client at ``max_connections_per_client`` has its new connection closed at once.
* When accept fails for want of descriptors or memory (EMFILE, ENFILE...), accepting
  pauses briefly and retries; existing connections go on, and the waiting clients are
  served once descriptors free up. The admin port is accepted the same way.
* What a client can repeat at will (refusals, evictions, accept failures) is logged at
  most once a second, with a count of the lines held back.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable

import trio

from h2ws_proxy.log import LogThrottle, log_event
from h2ws_proxy.relay.client_limits import ConnectionSlot, ListenerCapacity
from h2ws_proxy.relay.context import ServerContext, ServerStats
from h2ws_proxy.transport.capabilities import peer_host

logger = logging.getLogger(__name__)

ClientHandler = Callable[[trio.SocketStream, ConnectionSlot], Awaitable[None]]

#: errno values that mean "out of descriptors or memory for now", not a broken listener.
_ACCEPT_RETRY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: How long accepting pauses after such a failure; existing connections go on meanwhile.
_ACCEPT_RETRY_S = 0.1
#: One for the process, every listening socket's failures together: a shortage of
#: descriptors is the process's, not a socket's.
_FAILURE_LOG = LogThrottle()


class _Acceptor:
    """``accept`` that backs off on a shortage of descriptors instead of failing."""

    def __init__(self, listener: trio.SocketListener, stats: ServerStats) -> None:
        self.listener = listener
        self._stats = stats

    async def accept(self) -> trio.SocketStream | None:
        """The next connection, or None after a failure and its pause."""
        try:
            return await self.listener.accept()
        except OSError as error:
            if error.errno not in _ACCEPT_RETRY_ERRNOS:
                raise
            stats = self._stats
            stats.accept_failures += 1
            held_back = _FAILURE_LOG.allow(trio.current_time())
            if held_back is not None:
                log_event(
                    logger,
                    logging.WARNING,
                    "server.accept_failed",
                    error=str(error),
                    failures=stats.accept_failures,
                    hint="raise the descriptor limit (ulimit -n) or lower max_connections",
                    held_back=held_back,
                )
        await trio.sleep(_ACCEPT_RETRY_S)
        return None


async def serve_admin(
    listener: trio.SocketListener,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    server: ServerContext,
    connections: trio.Nursery,
) -> None:
    """Accept on the admin port (no capacity or per-client caps: it is the operator's)."""
    acceptor = _Acceptor(listener, server.stats)
    while True:
        stream = await acceptor.accept()
        if stream is not None:
            connections.start_soon(handler, stream)


class AcceptLoop:
    """Accept on one listening socket within its listener's capacity and the clients'
    caps (relay/client_limits.py). What a client can repeat at will (refusals, evictions,
    accept failures) is logged at most once a second, with a count."""

    def __init__(
        self,
        listener: trio.SocketListener,
        handler: ClientHandler,
        server: ServerContext,
        capacity: ListenerCapacity,
    ) -> None:
        self._acceptor = _Acceptor(listener, server.stats)
        self._handler = handler
        self._server = server
        self._capacity = capacity
        self._refusal_log = LogThrottle()
        self._full_log = LogThrottle()

    async def _client_waiting(self) -> None:
        await trio.lowlevel.wait_readable(self._acceptor.listener.socket)

    async def run(self, connections: trio.Nursery) -> None:
        capacity, stats = self._capacity, self._server.stats
        while True:
            evictions = capacity.evictions
            await capacity.reserve(self._client_waiting)
            if capacity.evictions > evictions:
                stats.evicted_idle += capacity.evictions - evictions
                self._log_throttled(
                    self._full_log,
                    "listener.full",
                    max_connections=capacity.capacity,
                    evicted_idle=stats.evicted_idle,
                )
            try:
                stream = await self._acceptor.accept()
            except BaseException:
                capacity.unreserve()
                raise
            if stream is None:
                capacity.unreserve()
                continue
            slot = self._server.clients.admit(peer_host(stream), capacity)
            if slot is None:
                capacity.unreserve()
                await self._refuse(stream)
                continue
            connections.start_soon(_run_and_release, self._handler, stream, slot)

    async def _refuse(self, stream: trio.SocketStream) -> None:
        """Close a connection from a client at max_connections_per_client at once."""
        stats = self._server.stats
        stats.refused_per_client += 1
        self._log_throttled(
            self._refusal_log,
            "client.over_connection_limit",
            client=peer_host(stream),
            max_connections_per_client=self._server.clients.max_connections,
            refused=stats.refused_per_client,
        )
        await trio.aclose_forcefully(stream)

    def _log_throttled(
        self, throttle: LogThrottle, event: str, level: int = logging.INFO, **fields: object
    ) -> None:
        held_back = throttle.allow(trio.current_time())
        if held_back is not None:
            log_event(logger, level, event, **fields, held_back=held_back)


async def _run_and_release(
    handler: ClientHandler, stream: trio.SocketStream, slot: ConnectionSlot
) -> None:
    """Serve one connection in a scope its eviction can cancel (the front end may set a
    politer way); its place goes back when it ends."""
    try:
        with trio.CancelScope() as scope:
            slot.on_evict = scope.cancel
            await handler(stream, slot)
    finally:
        slot.release()
