"""One HTTP/2 connection's poller and timers, started on first use: on the run loop's data
plane (transport/data_plane.py) for a connection over plain TCP, else on tasks of their own.

Rules:

* The poller serves the connection's tunnels' and requests' backend sockets and, on the
  data plane, its client socket too (polled_reads.py); it lives until the connection ends:
  :meth:`ConnectionReadiness.leave` then takes it off the plane and closes it, as the
  poller's own task does when the connection's nursery cancels it.
* A round that fails on the plane (a bug) ends the connection with its error
  (:attr:`ConnectionReadiness.round_error`), as the poller's own task would by raising it.
* A poller that cannot be made (out of descriptors or memory) is logged and is None: that
  tunnel runs on pump tasks instead, and the next one tries again.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.transport.data_plane import DataPlane
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.timers import ConnectionTimers

_POLLER_NAME = "h2ws_proxy.http2.frontend.backend_poller"
_TIMERS_NAME = "h2ws_proxy.http2.frontend.timers"


class ConnectionReadiness:
    """The connection's poller and timers (see the module rules)."""

    def __init__(self, writer: ClientWriter, log: Callable[..., None]) -> None:
        self._writer = writer
        self._log = log
        #: The run loop's data plane, for a connection over plain TCP; set at the start.
        self.plane: DataPlane | None = None
        #: The connection's nursery; set at the start.
        self.nursery: trio.Nursery | None = None
        self.poller: BackendPoller | None = None
        self._timers: ConnectionTimers | None = None
        #: What a round on the plane raised (the connection ends with it).
        self.round_error: BaseException | None = None
        #: The connection ended (:meth:`leave`): no poller is made any more.
        self._left = False

    def backend_poller(self) -> BackendPoller | None:
        """The connection's poller, started on first use."""
        if self.poller is None and not self._left and BackendPoller.available() and self.nursery:
            try:
                poller = BackendPoller(
                    on_round_start=self._writer.begin_batch,
                    on_round_end=self._writer.end_batch,
                    timers=self.timers(),
                    nursery=self.nursery,
                )
            except OSError as error:
                self._log("h2.backend_poller_unavailable", error=str(error))
                return None
            plane = self.plane
            if plane is not None:
                try:
                    plane.add(poller.fileno(), poller.round, self._round_failed)
                except OSError as error:
                    self._log("h2.backend_poller_unavailable", error=str(error))
                    poller.close()
                    return None
            else:
                self.nursery.start_soon(poller.run, name=_POLLER_NAME)
            self.poller = poller
        return self.poller

    def timers(self) -> ConnectionTimers:
        """The connection's timers, started on first use."""
        if self._timers is None:
            assert self.nursery is not None
            self._timers = ConnectionTimers()
            self.nursery.start_soon(self._timers.run, name=_TIMERS_NAME)
        return self._timers

    def leave(self) -> None:
        """The connection's end: a poller on the plane leaves it and closes."""
        self._left = True
        poller, plane = self.poller, self.plane
        if poller is not None and plane is not None:
            plane.remove(poller.fileno())
            poller.close()

    def _round_failed(self, error: BaseException) -> None:
        """The plane let the poller go: the connection ends with ``error``."""
        self.round_error = error
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
