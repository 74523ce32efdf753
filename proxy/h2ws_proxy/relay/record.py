"""One record per WebSocket tunnel or ordinary request, one structured log line when it ends.

Both frontends fill a :class:`RelayRecord` as the request goes (status, counters, how it
ended) and call :meth:`RelayRecord.log` exactly once, also when it is cancelled, so every
tunnel and request leaves a line naming its front protocol (``h2``/``h1``), stream, host (as
routing compared it: lowercase, no port), path, route, backend, status, bytes each way,
duration and ending. Tunnels log ``tunnel.closed`` (or
``tunnel.refused`` when no tunnel opened), ordinary requests ``request.closed``. A
``tunnel.closed`` line also carries the WebSocket close code each side sent
(``close_code_client``, ``close_code_backend``; ``-`` for none), and a tunnel whose bytes
one way turned out not to be WebSocket frames says so once (``tunnel.untracked``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.config.hosts import authority_host
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats, Side

logger = logging.getLogger("h2ws_proxy.tunnel")


@dataclass(slots=True)
class RelayRecord:
    """What one tunnel or ordinary request did, from its request head to its end."""

    front: str
    connection_id: int
    stream_id: int | None
    path: bytes
    route: str
    backend: str
    started: float = field(default_factory=trio.current_time)
    #: The status the client got (200 or 101 opens a tunnel); None if it got none.
    status: int | None = None
    error: str | None = None
    #: True once the tunnel opened; ``stats`` is then meaningful.
    opened: bool = False
    stats: RelayStats = field(default_factory=RelayStats)
    #: ``"tunnel"`` for a WebSocket, ``"request"`` for an ordinary HTTP request.
    kind: str = "tunnel"
    method: bytes | None = None
    #: The server an open tunnel holds (its group's balancer counts it as active), given
    #: back when the record ends.
    _held: tuple[GroupBalancer, ServerState] | None = None
    #: The request's ``:authority`` or ``Host`` as sent (logged as routing saw its host).
    authority: bytes | None = None

    @classmethod
    def begin(
        cls,
        front: str,
        connection_id: int,
        path: bytes,
        *,
        stream_id: int | None = None,
        route: RouteConfig | None = None,
        method: bytes | None = None,
        authority: bytes | None = None,
    ) -> RelayRecord:
        """The record of a tunnel, or of an ordinary request when ``method`` is given; its
        route reads ``-`` until routing decides it, its backend until a server is taken
        (the balancer names the server)."""
        return cls(
            front=front,
            connection_id=connection_id,
            stream_id=stream_id,
            path=path,
            route=route.path if route is not None else "-",
            backend="-",
            kind="tunnel" if method is None else "request",
            method=method,
            authority=authority,
        )

    def ending(self) -> str:
        if self.opened:
            return self.stats.end.value
        if self.status is None:
            return "client_aborted" if self.stats.end is RelayEnd.CLIENT_ABORTED else "cancelled"
        return "refused"

    def hold_server(self, balancer: GroupBalancer, server: ServerState) -> None:
        """The tunnel holds ``server`` until the record ends (:meth:`log`)."""
        self._held = (balancer, server)

    def _host(self) -> str:
        if self.authority is None:
            return "-"
        return authority_host(self.authority.decode("ascii", "backslashreplace"))

    def log(self) -> None:
        """The end of the tunnel or request: give back its server, log its line."""
        if self._held is not None:
            balancer, server = self._held
            self._held = None
            balancer.give_back(server)
        if not logger.isEnabledFor(logging.INFO):
            return  # at level warning: build none of the line's fields (one per tunnel or request)
        if self.kind == "request":
            event = "request.closed"
        else:
            event = "tunnel.closed" if self.opened else "tunnel.refused"
        log_event(
            logger,
            logging.INFO,
            event,
            conn=self.connection_id,
            front=self.front,
            **({"method": self.method} if self.method is not None else {}),
            stream=self.stream_id if self.stream_id is not None else "-",
            host=self._host(),
            path=self.path,
            route=self.route,
            backend=self.backend,
            status=self.status if self.status is not None else "-",
            bytes_up=self.stats.bytes_up,
            bytes_down=self.stats.bytes_down,
            duration_s=round(trio.current_time() - self.started, 6),
            end=self.ending(),
            **(self._close_codes() if self.opened and self.kind == "tunnel" else {}),
            error=self.error,
        )

    def _close_codes(self) -> dict[str, object]:
        client, backend = self.stats.client_close, self.stats.backend_close
        return {
            "close_code_client": client if client is not None else "-",
            "close_code_backend": backend if backend is not None else "-",
        }

    def log_untracked(self, side: Side, reason: str) -> None:
        """One side's bytes are not WebSocket frames: they pass on, untracked (no close
        code, no Close on drain that way)."""
        log_event(
            logger,
            logging.INFO,
            "tunnel.untracked",
            conn=self.connection_id,
            front=self.front,
            stream=self.stream_id if self.stream_id is not None else "-",
            side=side.value,
            reason=reason,
        )
