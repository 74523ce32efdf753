"""HTTP/2 connections to backend servers, shared by this process's tunnels and requests.

:class:`H2Backends` keeps, per server, the connections it dialled (usually one): a stream
goes on the first with room; a new connection is dialled only when every one is full (the
server's MAX_CONCURRENT_STREAMS), going away, or gone. Callers that need a connection
while one is being dialled wait for that dial instead of dialling their own, so a burst of
tunnels to a fresh server opens one connection, not one each.

Rules:

* A connection is usable once the server's first SETTINGS arrived (``connect_timeout_s``
  covers the dial, the TLS handshake and the SETTINGS: a server that never sends them is a
  :class:`BackendTimeout`, 504).
* ``https`` servers: ALPN must pick ``h2`` for ``protocol = "h2"``; with ``"auto"``, a
  server that picks ``http/1.1`` is remembered for ``HTTP11_MEMORY_S`` and
  :class:`SpeaksHttp11` tells the caller to use HTTP/1.1 (a new connection offering only
  that); after that time the next stream asks again.
* Connections run in the pool's nursery (:meth:`run`, for the server's life); one that
  ends leaves the pool; :meth:`close` ends them all with GOAWAY at the server's stop.
"""

from __future__ import annotations

import trio

from h2ws_proxy.backend.h2.connection import H2BackendConnection
from h2ws_proxy.backend.upgrade import ConnectBackend
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.errors import (
    BackendConnectTimeout,
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
)
from h2ws_proxy.transport.capabilities import tls_of

#: How long a server of ``protocol = "auto"`` that chose HTTP/1.1 is not asked again.
HTTP11_MEMORY_S = 60.0
#: With streams open and nothing read for this long, the connection is PINGed.
PING_INTERVAL_S = 30.0


class SpeaksHttp11(Exception):
    """An ``auto`` server chose HTTP/1.1: speak that to it (with an ALPN of ``http/1.1``)."""


class H2Backends:
    """See the module's rules."""

    def __init__(self, limits: Limits, connect: ConnectBackend) -> None:
        self._limits = limits
        self._connect = connect
        self._connections: dict[BackendAddress, list[H2BackendConnection]] = {}
        self._dialing: dict[BackendAddress, trio.Event] = {}
        self._http11_until: dict[BackendAddress, float] = {}
        self._nursery: trio.Nursery | None = None

    def apply_limits(self, limits: Limits) -> None:
        """New connections use ``limits`` (a reload); open ones keep theirs."""
        self._limits = limits

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the connections until cancelled (the server's background nursery); start
        it with ``nursery.start``: connections can be dialled once it returns."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self.close()

    def close(self) -> None:
        """End every connection with GOAWAY (the server stops)."""
        for connections in list(self._connections.values()):
            for connection in list(connections):
                connection.close("closed: the proxy stops")

    def speaks_http11(self, address: BackendAddress) -> bool:
        """An ``auto`` server that chose HTTP/1.1 lately: go there directly."""
        until = self._http11_until.get(address)
        return until is not None and trio.current_time() < until

    def describe(self) -> list[tuple[str, int, int]]:
        """Per server with connections: (server, connections, streams open on them)."""
        return [
            (str(address), len(connections), sum(c.open_channels for c in connections))
            for address, connections in self._connections.items()
        ]

    async def connection(self, address: BackendAddress) -> H2BackendConnection:
        """A connection to ``address`` with room for a stream (dialled if need be).

        Raises BackendUnavailable (and its BackendConnectFailed), BackendConnectTimeout,
        BackendTimeout (no SETTINGS), BackendProtocolError (ALPN), SpeaksHttp11.
        """
        while True:
            for connection in self._connections.get(address, ()):
                if connection.has_room():
                    return connection
            dialing = self._dialing.get(address)
            if dialing is None:
                return await self._dial(address)
            await dialing.wait()

    async def _dial(self, address: BackendAddress) -> H2BackendConnection:
        if self._nursery is None:
            raise BackendUnavailable("HTTP/2 backends are reached only while the server runs")
        limits = self._limits
        done = self._dialing[address] = trio.Event()
        try:
            with trio.move_on_after(limits.connect_timeout_s) as timer:
                stream = await self._connect(address)
            if timer.cancelled_caught:
                raise BackendConnectTimeout(
                    f"backend {address} did not accept within {limits.connect_timeout_s:g}s"
                )
            await self._check_alpn(address, stream)
            connection = H2BackendConnection(
                stream,
                str(address),
                stream_window=limits.stream_window_bytes,
                max_header_list_size=limits.max_header_list_bytes,
                idle_timeout_s=limits.backend_keepalive_s,
                ping_interval_s=PING_INTERVAL_S,
                ping_timeout_s=limits.connect_timeout_s,
            )
            self._nursery.start_soon(self._run, address, connection)
            with trio.move_on_after(limits.connect_timeout_s):
                await connection.settings_received.wait()
            if not connection.settings_received.is_set():
                connection.close("without SETTINGS")
                raise BackendTimeout(
                    f"backend {address} did not send its HTTP/2 SETTINGS within "
                    f"{limits.connect_timeout_s:g}s"
                )
            if connection.failure is not None:
                raise BackendUnavailable(connection.failure)
            return connection
        finally:
            del self._dialing[address]
            done.set()

    async def _check_alpn(self, address: BackendAddress, stream: trio.abc.Stream) -> None:
        tls = tls_of(stream)
        if tls is None:
            return  # h2c: prior knowledge
        chosen = tls.selected_alpn_protocol()
        if chosen == "h2":
            return
        await trio.aclose_forcefully(stream)
        if address.protocol == "auto" and chosen in (None, "http/1.1"):
            self._http11_until[address] = trio.current_time() + HTTP11_MEMORY_S
            raise SpeaksHttp11()
        raise BackendProtocolError(
            f"backend {address} did not agree to HTTP/2 in ALPN (it chose "
            f'{chosen or "nothing"}); serve h2 there or set protocol = "auto"',
            outcome="bad_alpn",
        )

    async def _run(self, address: BackendAddress, connection: H2BackendConnection) -> None:
        connections = self._connections.setdefault(address, [])
        connections.append(connection)
        try:
            await connection.run()
        finally:
            connections.remove(connection)
            if not connections and self._connections.get(address) is connections:
                del self._connections[address]
