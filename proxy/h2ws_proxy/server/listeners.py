"""The listeners a running server accepts on, as reloads open, change and close them.

Rules:

* A listener is known by its ``bind`` as written (:func:`listener_keys`; the second
  ``127.0.0.1:0`` is another than the first): ``127.0.0.1:0`` stays one listener across
  reloads, on the port it got at start. A reload that keeps a bind keeps its
  sockets and swaps in the listener's new settings and TLS context (a renewed
  certificate) for the connections accepted next; connections already open keep theirs.
* Each listener's connections see the server through a view whose ``shutdown`` is the
  listener's own: set when the server drains, or when a reload removed the listener.
* A removed listener drains as the server does on shutdown: it stops accepting, its
  sockets close, its connections are told to go (HTTP/2 GOAWAY; HTTP/1.1 closes after the
  answer in progress), and what is left after ``graceful_timeout_s`` is cancelled.
* A listener's ``max_connections`` capacity lives as long as the listener: a reload that
  changes the cap applies it to new accepts.
"""

from __future__ import annotations

import ssl

import trio

from h2ws_proxy.config import ListenerConfig, ProxyConfig, SocketAddress
from h2ws_proxy.log import next_connection_id
from h2ws_proxy.relay.client_limits import ConnectionSlot, ListenerCapacity
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.server.accept import AcceptLoop
from h2ws_proxy.server.connection import handle_client
from h2ws_proxy.transport.capabilities import peer_address

#: A listener's identity across reloads: its bind as written, and how many listeners
#: before it in the config have the same (port 0 may repeat).
ListenerKey = tuple[SocketAddress, int]


def listener_keys(config: ProxyConfig) -> list[ListenerKey]:
    """Each of ``config.listeners``' keys, in order."""
    seen: dict[SocketAddress, int] = {}
    keys = []
    for listener in config.listeners:
        count = seen.get(listener.bind, 0)
        seen[listener.bind] = count + 1
        keys.append((listener.bind, count))
    return keys


def key_name(key: ListenerKey) -> str:
    """A key for a log line: ``127.0.0.1:0``, then ``127.0.0.1:0#2`` for the second."""
    bind, index = key
    return f"{bind}#{index + 1}" if index else str(bind)


class ServedListener:
    """One configured listener: its sockets, current settings, capacity and connections."""

    def __init__(
        self,
        server: ServerContext,
        config: ListenerConfig,
        sockets: list[trio.SocketListener],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        #: What connections accepted from now on are served with (a reload swaps them).
        self.config = config
        self.ssl_context = ssl_context
        self.sockets = sockets
        # One cap per listener, shared by its sockets (IPv4 and IPv6 of one name).
        self.capacity = ListenerCapacity(server.config.limits.max_connections)
        #: Set when the listener drains: the server drains, or a reload removed it.
        self.draining = trio.Event()
        self._server = server
        self._view = server.with_shutdown(self.draining)
        self._accept_scope = trio.CancelScope()
        #: Set once the listener stopped accepting (or never will).
        self.accepting_done = trio.Event()
        self._connections_scope: trio.CancelScope | None = None

    async def _handle(self, stream: trio.SocketStream, slot: ConnectionSlot) -> None:
        ssl_context = self.ssl_context  # read at accept: a reload affects new connections
        peer = peer_address(stream)
        info = ClientInfo(
            connection_id=next_connection_id(),
            listener=self.config,
            address=peer[0] if peer is not None else None,
            tls=ssl_context is not None,
            slot=slot,
            peer=str(SocketAddress(*peer)) if peer is not None else "-",
        )
        await handle_client(stream, self._view, info, ssl_context=ssl_context)

    async def host_connections(
        self, *, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the listener's connections (in the server's connection nursery) until it
        stopped accepting and they ended."""
        async with trio.open_nursery() as connections:
            self._connections_scope = connections.cancel_scope
            task_status.started(connections)
            async with trio.open_nursery() as watch:
                watch.start_soon(_set_when, self._server.shutdown, self.draining)
                await self.accepting_done.wait()
                watch.cancel_scope.cancel()
            self.draining.set()

    async def accept(self, connections: trio.Nursery) -> None:
        """Accept on every socket of the listener until cancelled (the server drains) or
        removed; its connections go to ``connections``."""
        try:
            with self._accept_scope:
                async with trio.open_nursery() as loops:
                    for listener in self.sockets:
                        loop = AcceptLoop(listener, self._handle, self._view, self.capacity)
                        loops.start_soon(loop.run, connections)
        finally:
            self.accepting_done.set()

    async def remove(self, graceful_timeout_s: float) -> None:
        """Stop accepting, close the sockets, and drain the connections (a reload)."""
        self._accept_scope.cancel()
        await self.accepting_done.wait()
        for listener in self.sockets:
            await listener.aclose()
        self.draining.set()
        if self._connections_scope is not None:
            self._connections_scope.deadline = trio.current_time() + graceful_timeout_s


async def _set_when(happened: trio.Event, then: trio.Event) -> None:
    await happened.wait()
    then.set()


class ListenerSet:
    """Every listener the server accepts on, by :data:`ListenerKey`."""

    def __init__(
        self, server: ServerContext, acceptors: trio.Nursery, connections: trio.Nursery
    ) -> None:
        self.by_key: dict[ListenerKey, ServedListener] = {}
        self._server = server
        self._acceptors = acceptors
        self._connections = connections

    async def open(
        self,
        key: ListenerKey,
        config: ListenerConfig,
        sockets: list[trio.SocketListener],
        ssl_context: ssl.SSLContext | None,
    ) -> ServedListener:
        """Start accepting on ``sockets`` (bound and listening) as ``config`` says."""
        served = ServedListener(self._server, config, sockets, ssl_context)
        self.by_key[key] = served
        nursery = await self._connections.start(served.host_connections)
        if self._server.shutdown.is_set():
            # The server began to drain meanwhile (a reload racing a SIGTERM): the acceptors'
            # nursery may be closed already, and nothing should be accepted anyway.
            served.accepting_done.set()
            for listener in sockets:
                await listener.aclose()
            return served
        self._acceptors.start_soon(served.accept, nursery)
        return served

    async def close(self, key: ListenerKey, graceful_timeout_s: float) -> None:
        """Stop serving the listener of ``key`` (a reload removed it); its connections
        drain in the background."""
        await self.by_key.pop(key).remove(graceful_timeout_s)
