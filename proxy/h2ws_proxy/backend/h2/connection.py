"""One HTTP/2 connection to a backend server, shared by the streams of many clients.

:class:`H2BackendConnection` owns the socket and our sans-IO session in the client role;
its :meth:`~H2BackendConnection.run` task is the socket's only reader, its writer task the
only writer. Streams are :class:`~.channel.H2Channel` objects; the tasks that own them
call in synchronously (open, send, credit, close) and the output goes out with the next
write (STYLE R1: no lock, nothing interleaves with a synchronous call).

Rules:

* **SETTINGS first.** :attr:`settings_received` is set when the server's first SETTINGS
  arrived (or the connection ended first: :attr:`failure` says so); no stream is opened
  before (RFC 8441 §4: ``:protocol`` only once the server
  said SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, RFC 9113 §3.4). The pool waits for it.
* **Capacity.** :meth:`has_room` is false once the server's MAX_CONCURRENT_STREAMS streams
  are open, after its GOAWAY, or once the connection ended; the pool then picks or dials
  another connection.
* **GOAWAY** from the server: no new streams here; streams above its last stream id were
  never processed and break as ``refused`` (their openers retry elsewhere); the others
  finish, then the connection closes. Its SETTINGS turning ENABLE_CONNECT_PROTOCOL from 1
  to 0 is a connection error (RFC 8441 §3), as the session rules.
* **Liveness.** With streams open and nothing read for ``ping_interval_s``, a PING goes
  out; no answer within ``ping_timeout_s`` ends the connection (its streams break).
  With no stream open for ``idle_timeout_s``, the connection says GOAWAY and closes.
* **A failure ends only this connection:** each of its channels breaks with the reason;
  the owners map that as for any backend that broke (a tunnel's client stream is reset
  with CONNECT_ERROR).
* **Bounded output:** producers wait while more than ``HIGH_WATER`` bytes are queued;
  so does the reader, whose input makes output too (PING and SETTINGS answers).
* **The end is said, then the socket closes:** however the connection ends (a
  connection error, idle, no PING answer, :meth:`close`), reading stops, what is queued
  (the GOAWAY) is written for at most ``FINAL_WRITE_S``, and the socket is closed; a
  peer that never closes its side does not keep it open.
"""

from __future__ import annotations

import logging
import math
import os

import trio

from h2ws_proxy.backend.h2.channel import H2Channel
from h2ws_proxy.backend.h2.liveness import Due, Liveness
from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    H2Session,
    InformationalResponseReceived,
    LocalSettings,
    PingAcknowledged,
    RemoteSettingsChanged,
    ResponseReceived,
    Role,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2ws_proxy.log import log_event
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.wakeup import Wakeup

logger = logging.getLogger(__name__)

Header = tuple[bytes, bytes]
READ_SIZE = 65536
HIGH_WATER = 256 * 1024
#: How long the last output (a GOAWAY) may take to go out once the connection ended.
FINAL_WRITE_S = 1.0
_MAX_WINDOW = 2**31 - 1
#: A server's first bytes are an HTTP/1.x answer: it does not speak HTTP/2 at all.
_SPEAKS_HTTP1 = (
    "the backend answered in HTTP/1.x, not HTTP/2: write it as http://host:port, not "
    "h2c:// (or leave protocol out for https://); it said "
)
_BEFORE_SETTINGS = (
    " before its HTTP/2 SETTINGS: does it speak HTTP/2 (h2c by prior knowledge)? An "
    "HTTP/1.1 server is written http://host:port"
)
#: The events of one stream that its channel takes.
_CHANNEL_EVENTS = (
    DataReceived,
    ResponseReceived,
    InformationalResponseReceived,
    TrailersReceived,
)


class H2BackendConnection:
    """See the module's rules."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        label: str,
        *,
        stream_window: int,
        max_header_list_size: int,
        idle_timeout_s: float,
        ping_interval_s: float,
        ping_timeout_s: float,
    ) -> None:
        self._socket = stream
        self.label = label
        # The connection window is the maximum: a slow stream holds only its own credit,
        # never its neighbours' (see channel.py).
        self.session = H2Session(
            Role.CLIENT,
            LocalSettings(
                max_concurrent_streams=100,
                initial_window_size=stream_window,
                max_header_list_size=max_header_list_size,
                connection_window=_MAX_WINDOW,
            ),
        )
        self._channels: dict[int, H2Channel] = {}
        self._window_waiters: set[H2Channel] = set()
        self.settings_received = trio.Event()
        #: Set once the connection is over (the reader ended); ``failure`` says why.
        self.ended = trio.Event()
        self.failure: str | None = None
        self.going_away = False
        now = trio.current_time()
        self._liveness = Liveness(idle_timeout_s, ping_interval_s, ping_timeout_s, now, now)
        self._timer: trio.CancelScope | None = None
        self._reading: trio.CancelScope | None = None
        self._written = trio.Event()  # the writer returned
        self._output = Wakeup()
        self._in_flight = 0
        self._drained = trio.Event()

    # ---- for the pool ----

    def has_room(self) -> bool:
        """A new stream may open here now."""
        if self.failure is not None or self.going_away or not self.settings_received.is_set():
            return False
        limit = self.session.peer_settings.max_concurrent_streams
        return limit is None or self.session.open_stream_count < limit

    @property
    def extended_connect(self) -> bool:
        """The server allows ``:protocol`` (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1)."""
        return self.session.peer_settings.enable_connect_protocol

    @property
    def open_channels(self) -> int:
        return len(self._channels)

    def open_channel(self, headers: list[Header], *, end_stream: bool = False) -> H2Channel:
        """Open a stream with ``headers``; raises the session's ``SessionUsageError``s
        (``TooManyStreams``, ``ProtocolNotNegotiated``, ``StreamUnusable``)."""
        session = self.session
        stream_id = session.next_stream_id()
        session.send_headers(stream_id, headers, end_stream=end_stream)
        channel = H2Channel(self, stream_id)
        channel.local_ended = end_stream
        self._channels[stream_id] = channel
        self.flush()
        self._reschedule()
        return channel

    def close(self, reason: str = "closed") -> None:
        """GOAWAY(NO_ERROR) and end: the proxy is done with this connection."""
        if self.failure is None:
            self.session.close(ErrorCode.NO_ERROR, reason)
            self._end(f"backend connection {reason}")

    # ---- for the channels ----

    def flush(self) -> None:
        """Output was queued: wake the writer."""
        if self.session.outbound:
            self._output.set()

    def backlogged(self) -> bool:
        return len(self.session.outbound) + self._in_flight > HIGH_WATER

    async def wait_drained(self) -> None:
        while self.backlogged() and self.failure is None:
            await self._drained.wait()

    def wait_for_window(self, channel: H2Channel) -> None:
        self._window_waiters.add(channel)

    def credit(self, stream_id: int, size: int) -> None:
        """``size`` bytes of the stream were taken on: give the backend its credit back."""
        if self.failure is None:
            self.session.acknowledge_received_data(stream_id, size)
            self.flush()

    def stream_ended(self, channel: H2Channel) -> None:
        """Our side of ``channel`` ended: forget it once both are done."""
        if channel.finished:
            self._forget(channel)

    def channel_closed(self, channel: H2Channel, unused: int) -> None:
        """The owner closed ``channel``: reset it if still open, credit what it left."""
        if self.failure is None:
            if not channel.finished and self._channels.get(channel.stream_id) is channel:
                self.session.reset_stream(channel.stream_id, channel.reset_code_on_close)
            if unused:
                self.session.acknowledge_received_data(channel.stream_id, unused)
            self.flush()
        self._forget(channel)

    def stream_over(self, channel: H2Channel) -> None:
        if self.failure is None and self._channels.get(channel.stream_id) is channel:
            self.session.reset_stream(channel.stream_id, ErrorCode.NO_ERROR)
            self.flush()
        self._forget(channel)

    def _forget(self, channel: H2Channel) -> None:
        if self._channels.pop(channel.stream_id, None) is None:
            return
        self._window_waiters.discard(channel)
        if not self._channels:
            self._liveness.idle_since = trio.current_time()
            if self.going_away:
                self.close("drained after the backend's GOAWAY")
        self._reschedule()

    # ---- the tasks ----

    async def run(self) -> None:
        """Read, write and time the connection until it ends; closes the socket."""
        self.session.initiate()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write)
                nursery.start_soon(self._keep_time)
                with trio.CancelScope() as self._reading:
                    if self.failure is None:
                        await self._read()
                # Ended: the writer returns once the GOAWAY is out (module rules).
                self._end(self.failure or "backend connection closed")
                with trio.move_on_after(FINAL_WRITE_S):
                    await self._written.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._end(self.failure or "backend connection closed")
            await trio.aclose_forcefully(self._socket)

    async def _read(self) -> None:
        while self.failure is None:
            await self.wait_drained()
            try:
                data = await self._socket.receive_some(READ_SIZE)
            except STREAM_GONE as error:
                self._end(f"backend connection broke: {error}")
                return
            if not data:
                before = "" if self.settings_received.is_set() else _BEFORE_SETTINGS
                self._end("backend closed the connection" + before)
                return
            self._liveness.last_read = trio.current_time()
            if not self.settings_received.is_set() and data.startswith(b"HTTP/"):
                self._end(_SPEAKS_HTTP1 + repr(bytes(data[:40]))[1:])
                return
            for event in self.session.receive_data(data):
                self._dispatch(event)
            self.flush()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, _CHANNEL_EVENTS):
            channel = self._channels.get(event.stream_id)
            if channel is not None:
                channel.on_event(event)
                if channel.finished:
                    self._forget(channel)
            elif isinstance(event, DataReceived) and self.failure is None:
                # A stream we closed: its bytes go nowhere, their credit back at once.
                self.session.acknowledge_received_data(event.stream_id, len(event.data))
        elif isinstance(event, WindowUpdated):
            self._window_opened(event.stream_id)
        elif isinstance(event, StreamReset):
            self._stream_reset(event)
        elif isinstance(event, RemoteSettingsChanged):
            self.settings_received.set()
            self._window_opened(0)
        elif isinstance(event, GoAwayReceived):
            self.going_away = True
            log_event(
                logger,
                logging.INFO,
                "backend.h2_goaway",
                backend=self.label,
                code=_code_name(event.error_code),
                last_stream=event.last_stream_id,
            )
            if not self._channels:
                self.close("closed after the backend's GOAWAY")
        elif isinstance(event, PingAcknowledged):
            self._liveness.ping_sent_at = None
            self._reschedule()
        elif isinstance(event, ConnectionFailed):
            self._end(f"HTTP/2 connection error with the backend: {event.reason}")

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            channel = self._channels.get(stream_id)
            if channel is not None:
                self._window_waiters.discard(channel)
                channel.window_opened()
            return
        waiters, self._window_waiters = self._window_waiters, set()
        for channel in waiters:
            channel.window_opened()

    def _stream_reset(self, event: StreamReset) -> None:
        channel = self._channels.get(event.stream_id)
        if channel is None:
            return
        code = _code_name(event.error_code)
        refused = event.remote and event.error_code == ErrorCode.REFUSED_STREAM
        who = "the backend reset the stream" if event.remote else "the backend broke a stream rule"
        channel.break_off(f"{who} ({code})", refused=refused, code=event.error_code)
        self._forget(channel)

    def _end(self, reason: str) -> None:
        """The connection is over: every channel breaks with ``reason``."""
        if self.failure is not None:
            return
        self.failure = reason
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            # Streams above a GOAWAY's last id, or all of them before SETTINGS, were
            # never processed; the others may have been.
            channel.break_off(reason, refused=not self.settings_received.is_set())
        self._output.set()
        self._drained.set()
        self.settings_received.set()  # whoever waits for them learns of the end
        self.ended.set()
        if self._timer is not None:
            self._timer.deadline = -math.inf
        if self._reading is not None:
            self._reading.cancel()  # also when ended by the timer, a close or the writer

    async def _write(self) -> None:
        try:
            await self._write_until_ended()
        finally:
            self._written.set()

    async def _write_until_ended(self) -> None:
        session = self.session
        while True:
            if not session.outbound:
                if self.failure is not None:
                    return
                await self._output.wait()
                continue
            data = session.take_outbound()
            self._in_flight = len(data)
            try:
                await self._socket.send_all(data)
            except STREAM_GONE as error:
                self._end(f"backend connection broke: {error}")
                return
            finally:
                self._in_flight = 0
            if not self.backlogged():
                self._drained.set()
                self._drained = trio.Event()

    async def _keep_time(self) -> None:
        """PING when quiet, GOAWAY when idle (see the module's rules and liveness.py)."""
        liveness = self._liveness
        while self.failure is None:
            deadline = liveness.next_check(bool(self._channels))
            with trio.CancelScope(deadline=deadline) as self._timer:
                await trio.sleep_forever()
            self._timer = None
            if self.failure is not None:
                return
            due = liveness.due(trio.current_time(), bool(self._channels))
            if due is Due.PING_TIMED_OUT:
                self.session.close(ErrorCode.NO_ERROR, "no answer to PING")
                self._end(f"backend did not answer a PING within {liveness.ping_timeout_s:g}s")
            elif due is Due.IDLE:
                self.close("idle")
            elif due is Due.PING:
                self.session.ping(os.urandom(8))
                self.flush()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.deadline = self._liveness.next_check(bool(self._channels))


def _code_name(code: ErrorCode | int) -> str:
    return code.name if isinstance(code, ErrorCode) else str(code)
