"""The work of one HTTP/2 stream once accepted: a tunnel or an ordinary request.

Rules:

* What cancels a stream's work is ``H2Stream.scope``, so a client reset cancels it at once:
  the opening that waits for the backend's answer without a task (``tunnel_opening.py``),
  a trio cancel scope around the backend dial (and a request), then the running tunnel
  itself, which the stream adopts (``run_tunnel``); once the work is over, nothing.
* The relays (:mod:`~h2ws_proxy.relay.websocket_relay`, :mod:`~h2ws_proxy.relay.request_relay`)
  decide what the client sees; :class:`~h2ws_proxy.http2.tunnel_front.H2TunnelFront` and
  :class:`~h2ws_proxy.http2.client_side.H2ClientSide` say it in HTTP/2: the backend's 101
  becomes our 200 HEADERS, any other answer goes back as it came (status, headers, body),
  and a proxy-side failure becomes the registry's short answer.
* How a stream ends decides whether it is reset: never after a tunnel that ended cleanly
  both ways (browsers stop using WebSocket over HTTP/2 for the origin after such resets);
  CANCEL, CONNECT_ERROR or INTERNAL_ERROR after one cut short; NO_ERROR once our side is
  complete and the client's is not (RFC 9113 §8.1).
* At the end the stream's unconsumed credit goes back, every reference to it is dropped,
  and its record is logged; then the frontend forgets it (``on_done``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from h2ws_proxy.backend.head_start import HeadStart
from h2ws_proxy.backend.upgrade import BackendUpgraded
from h2ws_proxy.config import Limits, RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.h2session import ErrorCode
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http.request_head import H2RequestHead
from h2ws_proxy.http2.client_side import H2ClientSide
from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.http2.tunnel_front import H2TunnelFront
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord, tunnel_opened
from h2ws_proxy.relay.request_relay import relay_request
from h2ws_proxy.relay.websocket_relay import begin_opened_tunnel, open_tunnel, opened_tunnel
from h2ws_proxy.transport.capabilities import as_pollable
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller


class _WorkOver:
    """A stream's scope once its work is over: there is nothing left to cancel."""

    __slots__ = ()
    cancel_called = False

    def cancel(self) -> None:
        pass


_WORK_OVER = _WorkOver()


class _TunnelEnd:
    """The end of a tunnel whose run went on without the task that opened it."""

    __slots__ = ("_record", "_stream", "_tasks")

    def __init__(self, tasks: StreamTasks, stream: H2Stream, record: RelayRecord) -> None:
        self._tasks, self._stream, self._record = tasks, stream, record

    def tunnel_ended(self) -> None:
        self._tasks.tunnel_ended(self._stream, self._record)


class StreamTasks:
    """Runs the tunnels and requests of one connection's streams."""

    def __init__(
        self,
        session: ProxySession,
        writer: ClientWriter,
        server: ServerContext,
        info: ClientInfo,
        *,
        refuse: Callable[[int, ProxyError], None],
        backend_poller: Callable[[], BackendPoller | None],
        on_done: Callable[[H2Stream], None],
    ) -> None:
        self.session = session
        self._writer = writer
        self._server = self.server = server
        self._info = info
        self.client_address = info.address
        self.limits: Limits = server.config.limits
        #: Answers a stream with a ProxyError's status (the registry's refusal).
        self.refuse = refuse
        #: The connection's backend poller, once it has one.
        self.backend_poller = backend_poller
        self._on_done = on_done

    # ---- one tunnel ----

    def refuse_tunnel(self, stream_id: int, head: H2RequestHead, error: ProxyError) -> None:
        """Refuse an extended CONNECT at admission (no route, no origin, over a cap...):
        the registry's answer, and the ``tunnel.refused`` line a refused HTTP/1.1 upgrade
        leaves too."""
        self.refuse(stream_id, error)
        record = RelayRecord.begin(
            "h2",
            self._info.connection_id,
            head.path or b"-",
            stream_id=stream_id,
            authority=head.authority,
            client=self._info.peer,
            headers=head.headers,
        )
        record.refused(error)
        record.log(self._server.stats.counters)

    def tunnel_record(
        self, stream: H2Stream, request: WebSocketRequest, route: RouteConfig
    ) -> RelayRecord:
        return RelayRecord.begin(
            "h2",
            self._info.connection_id,
            request.path,
            stream_id=stream.stream_id,
            route=route,
            authority=request.authority,
            client=self._info.peer,
            headers=request.headers,
        )

    async def serve_tunnel(
        self,
        stream: H2Stream,
        request: WebSocketRequest,
        route: RouteConfig,
        record: RelayRecord | None = None,
        head_start: HeadStart | None = None,
    ) -> None:
        """``record`` and ``head_start``: an opening begun outside this task
        (``tunnel_opening.py``)."""
        if record is None:
            record = self.tunnel_record(stream, request, route)
        front = H2TunnelFront(self, stream)
        try:
            # The stream's scope holds the dial's deadlines, and is left once the backend
            # answered: the tunnel's run is cancelled through the stream's ``scope`` it
            # adopts (``run_tunnel``), so an idle tunnel's task sits in no scope of its own
            # (idle memory, bench/README.md).
            upgraded, left = None, False
            with front.scope:
                upgraded = await open_tunnel(
                    front,
                    request,
                    route,
                    record,
                    self._server,
                    self._info.address,
                    self._writer,
                    head_start,
                )
            if upgraded is None:
                return
            # This frame may live as long as the tunnel: keep no handshake objects alive in
            # it (nor the front: the run holds what it needs).
            tunnel = opened_tunnel(front, upgraded, record, self._server)
            del upgraded, request, front, head_start
            # ``count_tunnel()`` by hand: no context manager and its bound ``__exit__``
            # held in this frame for the tunnel's life (idle memory, bench/README.md).
            self._server.stats.tunnels += 1
            # A polled tunnel's run may go on without this task: it takes ``tunnel_end``
            # then, and reports its end there (``tunnel_polled.py``).
            stream.tunnel_end = _TunnelEnd(self, stream, record)
            try:
                await tunnel
            finally:
                if stream.tunnel_end is None:
                    left = True
                else:
                    stream.tunnel_end = None
                    self._server.stats.tunnels -= 1
        finally:
            if not left:
                self._finish_tunnel(stream, record)

    def begin_opened(
        self, stream: H2Stream, record: RelayRecord, upgraded: BackendUpgraded
    ) -> None:
        """A tunnel opened outside a task (``tunnel_opening.py``): ``open_tunnel``'s answer
        and ``serve_tunnel``'s start, its run begun without a task (``begin_now``)."""
        front = H2TunnelFront(self, stream)
        batch = self._writer.begin_own_batch()
        try:
            answer = front.answer_upgrade(upgraded.accepted, record)
        finally:
            if batch:
                self._writer.end_batch()
        if answer is None:  # the client left while the backend was answering
            backend = as_pollable(upgraded.stream)
            assert backend is not None  # (a socket of ours: ``tunnel_opening.py``)
            poller = self.backend_poller()
            if poller is not None:  # the opening's watch, handed on to no tunnel
                poller.unregister(backend.fileno())
            backend.close_now()
            self._finish_tunnel(stream, record)
            return
        record.status, record.opened = front.open_status, True
        tunnel_opened(record, self._server.stats.counters)
        self._server.stats.tunnels += 1
        stream.tunnel_end = _TunnelEnd(self, stream, record)
        begin_opened_tunnel(front, upgraded, record, self._server)  # (a polled run)

    def tunnel_ended(self, stream: H2Stream, record: RelayRecord) -> None:
        """A tunnel whose run went on without its task ended (``_TunnelEnd``)."""
        self._server.stats.tunnels -= 1
        self._finish_tunnel(stream, record)

    def _finish_tunnel(self, stream: H2Stream, record: RelayRecord) -> None:
        """Reset the stream unless it ended cleanly, return its credit, forget it, log it."""
        self._info.slot.end_tunnel()
        if stream.reset_by_peer:
            record.stats.end = RelayEnd.CLIENT_ABORTED
        elif (
            record.stats.end is RelayEnd.CANCELLED
            and stream.local_ended
            and stream.remote_ended
            and not stream.buffered_bytes
        ):
            # Cancelled (the connection closed) after both sides had ended and every byte
            # had moved on: that tunnel had finished.
            record.stats.end = RelayEnd.CLEAN
        if record.stats.end is RelayEnd.HALF_CLOSED_TIMEOUT and stream.local_ended:
            # Our side is complete; RFC 9113 §8.1: NO_ERROR tells the client to stop.
            self.session.reset(stream.stream_id, ErrorCode.NO_ERROR)
            stream.break_stream("half-closed timeout", by_peer=False)
        elif record.opened and record.stats.end is not RelayEnd.CLEAN:
            if record.stats.end is RelayEnd.DRAINED:
                self._end_drained(stream)
            else:
                stream.reset(cancel=record.stats.end is not RelayEnd.BACKEND_ABORTED)
        elif not record.opened and not stream.local_ended:
            stream.reset(cancel=True)  # cancelled, or an answer cut short: say so
        # The stream's scope is the tunnel's relay, which holds the stream: without this
        # cycle the tunnel's objects go with their last reference, not in a garbage
        # collection (bench/README.md, new tunnels).
        stream.scope = _WORK_OVER
        self._forget(stream, record)

    def _end_drained(self, stream: H2Stream) -> None:
        """The drain closed the WebSocket both ways (both Close frames seen): end the
        stream rather than reset it; NO_ERROR only if the client's side is still open."""
        if stream.broken_reason is None:
            if not stream.local_ended:
                with contextlib.suppress(*STREAM_GONE):
                    stream.end_now()
            if stream.local_ended and not stream.remote_ended:
                self.session.reset(stream.stream_id, ErrorCode.NO_ERROR)  # RFC 9113 §8.1
        stream.break_stream("drained", by_peer=False)

    # ---- one ordinary request ----

    async def serve_exchange(
        self, stream: H2Stream, request: HttpRequest, route: RouteConfig, fresh: bool = False
    ) -> None:
        """``fresh``: on a new backend connection (a kept one just failed the request)."""
        record = RelayRecord.begin(
            "h2",
            self._info.connection_id,
            request.target,
            stream_id=stream.stream_id,
            route=route,
            method=request.method,
            authority=request.authority,
            client=self._info.peer,
            headers=request.headers,
        )
        result = ExchangeResult()
        try:
            with self._server.stats.count_request():
                await relay_request(
                    H2ClientSide(stream, self._writer, self.refuse),
                    request,
                    route,
                    record,
                    result,
                    self._server,
                    self._info.address,
                    fresh=fresh,
                )
        finally:
            self.finish_exchange(stream, record, result)

    def finish_exchange(
        self, stream: H2Stream, record: RelayRecord, result: ExchangeResult
    ) -> None:
        """Reset what did not end cleanly, return credit, forget the stream, log it."""
        if stream.reset_by_peer:
            record.stats.end = RelayEnd.CLIENT_ABORTED
        elif record.stats.end is RelayEnd.CANCELLED and result.head_sent and stream.local_ended:
            # Cancelled (the connection closed) after the whole answer was queued: done.
            record.stats.end = RelayEnd.CLEAN
        if stream.broken_reason is None:
            if not stream.local_ended:
                # An answer cut short: the client must not take it for a whole one.
                code = (
                    ErrorCode.INTERNAL_ERROR
                    if record.stats.end is RelayEnd.BACKEND_ABORTED
                    else ErrorCode.CANCEL
                )
                self.session.reset(stream.stream_id, code)
            elif not stream.remote_ended:
                # RFC 9113 §8.1: the answer is complete; the client may stop sending.
                self.session.reset(stream.stream_id, ErrorCode.NO_ERROR)
            stream.break_stream("the exchange ended", by_peer=False)
        self._forget(stream, record)

    def _forget(self, stream: H2Stream, record: RelayRecord) -> None:
        """The stream's work is over: return its credit, drop every reference, log it."""
        # Bytes nobody consumed still hold connection window: give it back.
        self.session.acknowledge(stream.stream_id, stream.release_unconsumed())
        self._writer.forget_window_waiter(stream)
        record.log(self._server.stats.counters)
        self._on_done(stream)
