"""The HTTP/2 frontend: one client connection, its reader, its timers and its streams.

The frontend owns the connection's lifetime and its stream registry, and turns the
session's events into stream work; a new request stream's admission and start are
:class:`~h2ws_proxy.http2.request_intake.RequestIntake`'s. Output is
:class:`~h2ws_proxy.http2.client_writer.ClientWriter`'s; the work of each accepted stream
(tunnel or request) is :class:`~h2ws_proxy.http2.stream_tasks.StreamTasks`'; streams talk
to the session and to the writer, never to the frontend.

Concurrency rules (STYLE §2.4):

* R1. Only the reader feeds the session (``H2Session.receive``): the read loop, or over
  plain TCP on the run loop's data plane the poller's rounds that read the client
  (polled_reads.py). Only the writer writes to the client socket (see client_writer.py for
  its one synchronous exception: a batch's end).
* R2. Every mutation of the session is synchronous and flushes into the outbound buffer
  (which wakes the writer) before the next ``await``: each is atomic on trio's one thread.
* R3. The reader never awaits a stream's consumer: it appends to per-stream buffers and
  sets events, so one slow tunnel cannot hold up the others.
* R4. Events with several waiters are replaced by the *setter* (``set`` then a new
  ``Event``); a single waiter (the writer, a stream's reader or sender) waits on a
  reusable :class:`~h2ws_proxy.transport.wakeup.Wakeup` and re-checks its condition after it.
* R5. Tunnel tasks live in this connection's nursery; what cancels a stream's work is
  ``H2Stream.scope`` (the opening, the dial's scope, then the running tunnel), so a client
  reset cancels any at once. An opening that goes well (http2/tunnel_opening.py) and an
  idle polled tunnel (relay/tunnel_polled.py) hold no task.

Memory bounds: inbound, each stream holds at most the window we advertise, and credit for
bytes a stream never consumed goes back when it ends (else the connection window would
leak away). Outbound, producers wait above ``PRODUCER_HIGH_WATER`` queued bytes, and the
reader stops reading above ``READER_HIGH_WATER`` (a PING flood whose ACKs go unread).

Ending: the connection ends when the client closes it, on a connection error (the session
queues the GOAWAY; the writer flushes it, then the socket closes, RFC 9113 §5.4.1), or,
after a GOAWAY either way (our drain, or the client's goodbye), once its last stream ended.
"""

from __future__ import annotations

import logging

import trio

from h2ws_proxy.config import RouteConfig, advertises_connect_protocol
from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    ErrorCode,
    Event,
    GoAwayReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.budget import SlidingWindowBudget
from h2ws_proxy.http2.client_writer import READER_HIGH_WATER, ClientWriter
from h2ws_proxy.http2.connection_readiness import ConnectionReadiness
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.lifetime import ConnectionLifetime
from h2ws_proxy.http2.polled_reads import PolledClientReads
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_intake import RequestIntake
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.http2.stream_registry import StreamRegistry
from h2ws_proxy.http2.stream_tasks import StreamTasks
from h2ws_proxy.http2.tunnel_opening import start_tunnel
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.transport.capabilities import as_client_stream, as_pollable
from h2ws_proxy.transport.data_plane import current_data_plane
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.lingering import linger_before_close
from h2ws_proxy.transport.poller import BackendPoller

logger = logging.getLogger(__name__)

_READ_SIZE = 65536
#: How long the writer may take to flush a final GOAWAY to a client that stopped reading.
_FINAL_FLUSH_S = 5.0
#: A constant task name: trio would otherwise format one from the bound method per stream.
_EXCHANGE_TASK_NAME = "h2ws_proxy.http2.frontend.exchange"


class H2Frontend:
    """Serve one HTTP/2 client connection until it ends."""

    def __init__(
        self,
        client: trio.abc.Stream,
        server: ServerContext,
        info: ClientInfo,
        initial_data: bytes = b"",
    ) -> None:
        self._client = as_client_stream(client)
        #: A plain TCP connection's socket, which the run loop's data plane can watch.
        self._pollable = as_pollable(client)
        self._server = server
        self._info = info
        self._limits = server.config.limits
        self._initial_data = initial_data
        self.session = ProxySession(
            self._limits,
            connect_protocol_enabled=advertises_connect_protocol(server.config, info.listener),
        )
        self._read_scope = trio.CancelScope()
        self._writer = ClientWriter(
            self._client,
            self.session,
            self._limits.send_timeout_s,
            on_client_gone=self._read_scope.cancel,
            count_abuse=server.stats.counters.count_abuse,
            log=self._log,
        )
        self._streams: dict[int, H2Stream] = {}
        #: The poller and timers, started on first use (connection_readiness.py).
        self._ready = ConnectionReadiness(self._writer, self._log)
        self._life = ConnectionLifetime(
            self.session,
            self._limits,
            info.slot,
            self._streams,
            end_reading=self._read_scope.cancel,
            count_abuse=server.stats.counters.count_abuse,
            log=self._log,
        )
        self._registry = StreamRegistry(
            self.session,
            self._writer,
            count_reset=self._count_reset,
            count_empty_frame=self._count_empty_frame,
            on_emptied=self._life.end_if_idle,
            log=self._log,
            streams=self._streams,
        )
        self._tasks = StreamTasks(
            self.session,
            self._writer,
            server,
            info,
            refuse=self._registry.refuse,
            backend_poller=self._ready.backend_poller,
            on_done=self._registry.forget,
        )
        self._lean = LeanRequests(
            self.session,
            server,
            info,
            poller=self._ready.backend_poller,
            refuse=self._registry.refuse,
            finish=self._tasks.finish_exchange,
            forget=self._registry.forget,
            run_on_task=self._exchange_on_task,
        )
        self._intake = RequestIntake(
            self.session,
            self._writer,
            server,
            info,
            self._life,
            self._streams,
            self._lean,
            count_reset=self._count_reset,
            refuse=self._registry.refuse,
            refuse_tunnel=self._tasks.refuse_tunnel,
            start_tunnel=self._start_tunnel,
            run_on_task=self._exchange_on_task,
        )
        self._nursery: trio.Nursery | None = None
        limits = self._limits
        self._resets = SlidingWindowBudget(limits.max_stream_resets, limits.stream_reset_window_s)
        self._empty_frames = SlidingWindowBudget(
            limits.max_empty_frames, limits.stream_reset_window_s
        )
        #: Closed with ENHANCE_YOUR_CALM: nothing more from this client is acted on.
        self._calmed = False

    # ---- lifetime ----

    async def run(self) -> None:
        """Serve until the connection ends; then every tunnel of this connection ends."""
        self.session.start()
        ready = self._ready
        if BackendPoller.available() and self._pollable is not None:
            ready.plane = current_data_plane()
        async with trio.open_nursery() as nursery:
            self._nursery = ready.nursery = nursery
            try:
                await self._serve(nursery)
            finally:
                ready.leave()
        if ready.round_error is not None:
            raise ready.round_error

    async def _serve(self, nursery: trio.Nursery) -> None:
        life = self._life
        nursery.start_soon(self._writer.run)
        if self._server.shutdown.is_set():
            # Accepted while draining (limits.drain_accept_s): our SETTINGS, then
            # GOAWAY(NO_ERROR) naming stream 0, before any request is read.
            life.go_away("")
        else:
            nursery.start_soon(life.drain_on_shutdown, self._server.shutdown)
        nursery.start_soon(life.require_settings_then_request)
        if self._limits.idle_connection_timeout_s > 0:
            nursery.start_soon(life.close_when_idle)
        from_outside = True  # unless the read ends here: then the client or we ended it
        try:
            with self._read_scope:
                await self._read_loop(self._initial_data)
            from_outside = False
        finally:  # also when cancelled from outside: a request without a task ends here
            self._writer.reader_done = True
            for stream in list(self._streams.values()):
                if from_outside:
                    stream.scope.cancel()  # first: its work ends as cancelled, not broken
                ours = (stream.local_ended and stream.remote_ended) or from_outside  # no abort
                stream.break_stream("client connection closed", by_peer=not ours)
                stream.scope.cancel()
        writer = self._writer
        # Let the writer flush what is queued (a GOAWAY), then end: bounded, since a
        # client that stopped reading may never take it.
        writer.wake()
        with trio.move_on_after(_FINAL_FLUSH_S):
            await writer.done.wait()
            if not writer.client_gone:
                # Don't let a reset eat our GOAWAY (see lingering.py).
                # Our side ends first (FIN), so a client that is told to go (a GOAWAY
                # for a connection error, RFC 9113 §5.4.1) sees the close at once.
                await linger_before_close(self._client, half_close=True)
        nursery.cancel_scope.cancel()

    async def _read_loop(self, data: bytes) -> None:
        """Read and act on the client's bytes until the connection is over; ``data``: what
        was read before (the sniffed preface), first. One call per read, the rest inline:
        a tunnel's every message is a read (bench/README.md, "A tunnel's round trip")."""
        writer, client = self._writer, self._client
        if data and not self._act(data):
            return
        poller = self._ready.backend_poller() if self._ready.plane is not None else None
        pollable = self._pollable
        if poller is not None and pollable is not None and self._nursery is not None:
            # Served by the poller's rounds, on the data plane (polled_reads.py).
            scope, nursery = self._read_scope, self._nursery
            reads = PolledClientReads(
                pollable, self._act, poller=poller, writer=writer, scope=scope, nursery=nursery
            )
            await reads.run()
            return
        session = self.session
        while True:
            # ``outbound_bytes`` inline (no call per read), and no coroutine unless it waits.
            if len(session.outbound) + writer.in_flight > READER_HIGH_WATER:
                await writer.wait_outbound_below(READER_HIGH_WATER)
            try:
                read = await client.receive_some(_READ_SIZE)
            except STREAM_GONE:
                return
            if not read or not self._act(read if type(read) is bytes else bytes(read)):
                return

    def _act(self, data: bytes) -> bool:
        """One read's bytes acted on; False once the connection is over."""
        writer, session = self._writer, self.session
        try:
            if not self._calmed:
                # The DATA frames that open the read (usually all of it) straight to their
                # open tunnels: no events, no dispatch, and no output batch of their own
                # around them: their bytes go to backends, and the only output they queue
                # is the read's credit (now and then), which wakes the writer
                # (``ProxySession._release_held_credit``) unless a poller's round is on.
                taken = session.receive_data_frames(data, self._registry.fed_to_open_tunnel)
                if taken:
                    data = data[taken:]
            if data:  # the rest takes the events, in one output batch
                own = writer.begin_own_batch()
                try:
                    if not self._receive_events(data):
                        return False
                finally:
                    if own:
                        writer.end_batch()
        finally:
            poller = self._ready.poller
            if poller is not None:
                poller.read_time = -1.0  # the next read's tunnels read the clock anew
        return True

    def _receive_events(self, data: bytes) -> bool:
        """Client bytes to the session, its events acted on (inside the read's output
        batch); False once the connection is over."""
        self._lean.read_time = -1.0  # a new read: its requests' clock is read anew
        for event in self.session.receive(data):
            if self._calmed:
                return False  # the connection is being closed: the rest is not ours
            if type(event) is DataReceived:  # most events: no dispatch chain for them
                self._registry.on_data(event)
            elif type(event) is RequestReceived:  # and the next most
                self._intake.on_request(event)
            elif not self._handle_event(event):
                return False
        return True

    def _count_reset(self) -> None:
        """A stream cancelled by the client, refused, or reset as malformed: the budget.

        Past ``max_stream_resets`` within ``stream_reset_window_s`` the connection is
        closed with ENHANCE_YOUR_CALM (CVE-2023-44487): each such stream costs us work
        (and possibly a backend dial) while costing the client almost nothing.
        """
        if self._resets.spend(trio.current_time()):
            self._calm_down("h2.rapid_reset", resets=len(self._resets))

    def _count_empty_frame(self) -> None:
        """An empty DATA frame that ends nothing: it costs us work and carries nothing."""
        if self._empty_frames.spend(trio.current_time()):
            self._calm_down("h2.empty_frame_flood", frames=len(self._empty_frames))

    def _calm_down(self, event: str, **fields: object) -> None:
        if self._calmed:
            return
        self._calmed = True
        self._log(event, **fields)
        # "h2.rapid_reset" -> "rapid_reset": h2ws_abuse_total{kind}
        self._server.stats.counters.count_abuse(event.removeprefix("h2."))
        self.session.close_connection(ErrorCode.ENHANCE_YOUR_CALM)
        self._read_scope.cancel()

    def _exchange_on_task(
        self, stream: H2Stream, request: HttpRequest, route: RouteConfig, fresh: bool = False
    ) -> None:
        assert self._nursery is not None
        serve = self._tasks.serve_exchange
        self._nursery.start_soon(serve, stream, request, route, fresh, name=_EXCHANGE_TASK_NAME)

    def _start_tunnel(
        self, stream: H2Stream, request: WebSocketRequest, route: RouteConfig
    ) -> None:
        assert self._nursery is not None
        start_tunnel(self._tasks, self._nursery, stream, request, route)

    # ---- session events (reader only) ----

    def _handle_event(self, event: Event) -> bool:
        """Act on one event other than DATA; False once the connection is over."""
        registry = self._registry
        if isinstance(event, RequestReceived):
            self._intake.on_request(event)
        elif isinstance(event, StreamReset):
            registry.on_reset(event)
        elif isinstance(event, WindowUpdated):
            registry.on_window_change(event.stream_id)
        elif isinstance(event, RemoteSettingsChanged):
            self._life.settings_received.set()
            registry.on_window_change(0)  # a new initial window changes every stream's
        elif isinstance(event, TrailersReceived):
            registry.on_trailers(event)
        elif isinstance(event, GoAwayReceived):
            self._on_goaway(event)
        elif isinstance(event, ConnectionFailed):
            # The session queued its GOAWAY; the writer flushes it, then the socket closes
            # (RFC 9113 §5.4.1).
            self._log("h2.connection_error", code=_code_name(event.error_code))
            return False
        return True

    def _on_goaway(self, event: GoAwayReceived) -> None:
        self._log(
            "h2.goaway_received",
            code=_code_name(event.error_code),
            last_stream=event.last_stream_id,
        )
        self._life.closing = True
        code = event.error_code
        if isinstance(code, ErrorCode) and code is not ErrorCode.NO_ERROR:
            self._read_scope.cancel()  # the client is aborting: end everything now
        else:
            # NO_ERROR, or a code we do not know, which must not trigger anything special
            # (RFC 9113 §7): open streams finish, then the connection closes.
            self._life.end_if_idle()

    def _log(self, event: str, **fields: object) -> None:
        log_event(logger, logging.INFO, event, conn=self._info.connection_id, **fields)


def _code_name(code: ErrorCode | int) -> str:
    """An error code for a log line: its RFC 9113 name, or the number of an unknown one."""
    return code.name if isinstance(code, ErrorCode) else str(code)
