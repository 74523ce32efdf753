"""When an HTTP/2 client connection goes: its timers, its idleness, and being told to go.

Rules:

* The client has ``client_handshake_timeout_s`` to send its preface's SETTINGS, and then as
  long again to send its first complete request (HEADERS of a stream): a connection that
  only says hello holds a place for nothing. No SETTINGS: the connection is dropped (the
  client never spoke HTTP/2); no request: GOAWAY(NO_ERROR), as for an idle connection.
* A connection with no stream is idle. Idle for ``idle_connection_timeout_s``, it gets
  GOAWAY(NO_ERROR); idle at its listener's cap, it may be told to go the same way to make
  room for a new client (:class:`~h2ws_proxy.relay.client_limits.ConnectionSlot`).
* After a GOAWAY either way (ours: drain, idleness, eviction; or the client's), no new
  stream is taken, and the connection ends with its last stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.relay.client_limits import ConnectionSlot


class ConnectionLifetime:
    """The reader's helper for one connection's end; its timers run in the connection's
    nursery. ``end_reading`` ends the connection (the reader stops; streams are cut)."""

    def __init__(
        self,
        session: ProxySession,
        limits: Limits,
        slot: ConnectionSlot,
        streams: Sized,
        *,
        end_reading: Callable[[], None],
        count_abuse: Callable[[str], None],
        log: Callable[..., None],
    ) -> None:
        self._session = session
        self._limits = limits
        self._slot = slot
        self._streams = streams
        self._end_reading = end_reading
        #: Counts a kind of client misbehaviour (``h2ws_abuse_total{kind}``).
        self._count_abuse = count_abuse
        self._log = log
        #: No new streams: a GOAWAY was sent or received.
        self.closing = False
        #: Since when the connection has had no stream (None while it has some). Read by the
        #: intake, which calls :meth:`stream_opened` only while it is set (one call per
        #: request saved); set only here.
        self.idle_since: float | None = trio.current_time()
        self._became_idle = trio.Event()
        self.settings_received = trio.Event()
        self.request_received = trio.Event()
        slot.on_evict = self._evicted

    def stream_opened(self) -> None:
        """A stream was accepted: the connection is busy."""
        if self.idle_since is not None:
            self.idle_since = None
            self._slot.busy()

    def end_if_idle(self) -> None:
        """A stream ended (or a GOAWAY went either way): with none left, the connection is
        idle, and after a GOAWAY it ends."""
        if len(self._streams):
            return
        if self.idle_since is None:
            self.idle_since = trio.current_time()
            # Set, not renewed: ``close_when_idle`` makes a fresh one before it waits, and a
            # client that sends one request at a time makes this turn per request.
            self._became_idle.set()
            self._slot.idle()
        if self.closing:
            self._end_reading()

    def go_away(self, event: str, **fields: object) -> None:
        """Our GOAWAY(NO_ERROR): open streams finish, then the connection ends."""
        if event:
            self._log(event, **fields)
        self._session.send_goaway()
        self.closing = True
        self.end_if_idle()

    def _evicted(self) -> None:
        self.go_away("h2.evicted_idle", reason="the listener is at max_connections")

    # ---- timers (tasks in the connection's nursery) ----

    async def drain_on_shutdown(self, shutdown: trio.Event) -> None:
        """On server shutdown: GOAWAY(NO_ERROR), refuse new streams, let open ones finish."""
        await shutdown.wait()
        self.go_away("")

    async def require_settings_then_request(self) -> None:
        """The client's SETTINGS, then its first request, each within the handshake timeout."""
        timeout_s = self._limits.client_handshake_timeout_s
        with trio.move_on_after(timeout_s) as settings_wait:
            await self.settings_received.wait()
        if settings_wait.cancelled_caught:
            # Without this, a client that completes TLS and then sends nothing (slowloris on
            # the preface) would hold the connection until the idle timeout.
            self._log("h2.preface_timeout", client_handshake_timeout_s=timeout_s)
            self._count_abuse("client_handshake_timeout")
            self._end_reading()
            return
        with trio.move_on_after(timeout_s):
            await self.request_received.wait()
            return
        if not self.closing:
            self._count_abuse("client_handshake_timeout")
            self.go_away("h2.first_request_timeout", client_handshake_timeout_s=timeout_s)

    async def close_when_idle(self) -> None:
        """A connection with no stream for ``idle_connection_timeout_s`` gets GOAWAY."""
        timeout_s = self._limits.idle_connection_timeout_s
        while True:
            idle_since = self.idle_since
            if idle_since is None:
                # (No checkpoint since ``idle_since`` was read: the set cannot be missed.)
                self._became_idle = trio.Event()
                await self._became_idle.wait()
                continue
            await trio.sleep_until(idle_since + timeout_s)
            if self.idle_since == idle_since:
                if not self.closing:
                    self.go_away("h2.idle_connection_closed", idle_connection_timeout_s=timeout_s)
                return
