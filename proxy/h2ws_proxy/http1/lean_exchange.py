"""An ordinary HTTP/1.1 request forwarded in its connection's own task: the lean path.

The task path (``relay/request_relay.py`` → ``relay/exchange.py``) opens a nursery per
request and spawns a watcher for a client that leaves before the answer. A bodiless request
for one plain HTTP/1.1 server with a kept-alive connection idle in the pool (the common
case) needs none of that (bench/README.md, HTTP/1.1 requests): the connection keeps an
``epoll`` of its own (a :class:`~h2ws_proxy.transport.poller.BackendPoller` it waits on
itself) holding the client's socket and the backend's; the task waits on that one
descriptor, in one cancel scope whose deadline is the idle timer, and handles what is ready.

Rules:

* Taken only when nothing would wait (:func:`start_lean`): no body to upload, one server
  spoken to over HTTP/1.1 in cleartext, no sticky cookie, a client socket the poller can
  watch, an idle kept-alive connection the pool gives at once, and a request head the
  kernel takes whole. Anything else runs on the task path, with the same behaviour; so
  does the one retry, on a new connection, of a request a kept connection failed before
  any byte of the answer (:attr:`LeanExchange.retry`).
* The answer is read by the same :class:`~h2ws_proxy.backend.h1_wire.H1BackendWire` and
  relayed with the same rules as the task path: 1xx as they come, the head, the body,
  the end. What one backend read brought goes to the client in one write (head, body and
  end together for a small answer); while a write waits, the backend is not read.
* The client, while the answer is awaited (as ``H1ClientSide.wait_gone``): an EOF before
  the answer's head cancels the backend request; bytes are a pipelined next request, kept
  in h11 for the next cycle, at most ``max_header_list_bytes`` in all (then the client is
  not read until a cycle takes some).
* Failures and their reasons as in the task path: before the head, a refusal (502, 504
  from the idle timer); after it, an abort (the frontend drops the connection).
* Exactly one end: the backend socket goes back to the pool parked in the poller (a
  clean, reusable cycle) or leaves the poller and closes; the server is given back.
"""

from __future__ import annotations

from collections.abc import Callable

import h11

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.backend.h1_wire import AnswerEnd, BodyData, H1BackendWire, Need, ResponseHead
from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.backend.upgrade import READ_SIZE
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import BackendProtocolError, BackendUnavailable, ProxyError
from h2ws_proxy.http.message import (
    BodyFraming,
    HttpRequest,
    response_fields,
    trailer_fields,
)
from h2ws_proxy.http1.client_side import H1ClientSide
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.kept_start import LastRequest, start_on_kept_connection
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller


class ClientWatch:
    """The client's socket in the connection's poller: one per connection, handing its
    readiness to the exchange under way (a :class:`~h2ws_proxy.transport.poller.Watcher`)."""

    __slots__ = ("exchange", "watched")

    def __init__(self) -> None:
        self.watched = False
        self.exchange: LeanExchange | None = None

    def on_readable(self) -> None:
        if self.exchange is not None:
            self.exchange.client_readable()

    def on_error(self) -> None:
        if self.exchange is not None:
            self.exchange.client_left()

    def on_closed(self) -> None:
        pass


class LeanExchange:
    """One lean request, from its backend write to its end (see the module rules).

    The poller's handlers only note what happened and queue the client's bytes
    (:attr:`out`); the connection's task writes those and reads :attr:`ended`."""

    __slots__ = (
        "_balancer",
        "_budget",
        "_client",
        "_client_fd",
        "_fd",
        "_front",
        "_poller",
        "_request",
        "_server",
        "_socket",
        "_stats",
        "_wire",
        "answer_started",
        "connection",
        "ended",
        "error",
        "moved",
        "out",
        "result",
        "retry",
    )

    def __init__(
        self,
        front: H1ClientSide,
        client: PollableSocket,
        request: HttpRequest,
        balancer: GroupBalancer,
        server: ServerState,
        connection: BackendConnection,
        socket: PollableSocket,
        wire: H1BackendWire,
        poller: BackendPoller,
        stats: RelayStats,
        budget: int,
    ) -> None:
        self._front = front
        self._client = client
        self._client_fd = client.fileno()
        self._request = request
        self._balancer = balancer
        self._server = server
        self.connection = connection
        self._socket = socket
        self._fd = socket.fileno()
        self._wire = wire
        self._poller = poller
        self._stats = stats
        #: Pipelined bytes still taken from the client during this exchange.
        self._budget = budget
        self.result = ExchangeResult(request_complete=True)
        self.answer_started = False
        #: Bytes for the client, written by the connection's task after each round.
        self.out = bytearray()
        #: The answer's end was queued (clean once :attr:`out` is written).
        self.ended = False
        #: How it failed, once it did: a refusal, or an abort (the reason's end).
        self.error: ProxyError | tuple[RelayEnd, str] | None = None
        #: A kept connection failed before any byte of the answer: the task path retries.
        self.retry = False
        #: The backend was read since the driver last looked (the idle timer's progress).
        self.moved = False

    @property
    def done(self) -> bool:
        return self.ended or self.error is not None or self.retry

    # ---- the backend (the poller's callbacks) ----

    def on_readable(self) -> None:
        if self.done:
            return
        try:
            data = self._socket.receive_nowait(READ_SIZE)
        except STREAM_GONE as error:
            self._backend_failed(f"backend connection broke: {error}")
            return
        if data is None:
            return
        self.moved = True
        wire = self._wire
        if not data and wire.awaiting_head:
            self._backend_failed("backend closed the connection without answering")
            return
        if data:
            self.answer_started = True  # part of a head is an answer begun: no retry
        wire.receive_data(bytes(data))
        self._relay()

    def on_error(self) -> None:
        if not self.done:
            self._backend_failed("backend connection cannot be watched")

    def on_closed(self) -> None:
        if not self.done:
            self.error = (RelayEnd.CANCELLED, "the client connection closed")

    # ---- the client, while the answer is awaited ----

    def client_readable(self) -> None:
        if self._budget <= 0:
            self._poller.pause(self._client_fd)  # h11 holds all it may: read next cycle
            return
        try:
            data = self._client.receive_nowait(min(READ_SIZE, self._budget))
        except STREAM_GONE:
            data = b""
        if data is None:
            return
        if not data:
            self.client_left()
            return
        self._front.take_pipelined(data)
        self._budget -= len(data)
        if self._budget <= 0:
            self._poller.pause(self._client_fd)  # the rest waits for the next cycle

    def client_left(self) -> None:
        """EOF: before the answer's head, the backend request is cancelled; after it, the
        writes decide (a client that read the whole answer and left is no abort)."""
        self._poller.pause(self._client_fd)
        if not self.done and not self.result.head_sent:
            reason = "the client went away before the answer began"
            self.error = (RelayEnd.CLIENT_ABORTED, reason)

    # ---- relaying the answer ----

    def _relay(self) -> None:
        """Queue the answer's events the wire holds, until it needs bytes or it ended."""
        wire, front = self._wire, self._front
        while not self.done:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as error:
                self._protocol_error(f"backend's answer is not valid HTTP/1.1: {error}")
                return
            try:
                if isinstance(event, BodyData):
                    self._stats.bytes_down += len(event.data)
                    self.out += front.body_bytes(event.data)
                elif event is Need.DATA:
                    return
                elif isinstance(event, ResponseHead):
                    self._relay_head(event)
                elif isinstance(event, AnswerEnd):
                    trailers = trailer_fields(event.trailers) if event.trailers else []
                    self.out += front.end_bytes(trailers)
                    self.result.reusable = wire.reusable()
                    self.ended = True
                elif event is Need.SWITCHED:
                    self._protocol_error("backend switched protocols on an ordinary request")
                else:  # BackendClosed
                    self._backend_failed("backend closed the connection mid-answer")
            except STREAM_GONE as error:  # an answer h11 cannot express to this client
                self.error = (RelayEnd.CLIENT_ABORTED, f"client went away: {error}")

    def _relay_head(self, response: ResponseHead) -> None:
        status = response.status
        if status == 101:
            self._protocol_error("backend switched protocols on an ordinary request")
        elif status < 200:
            fields = response_fields(status, response.headers, for_h2=False)
            self.out += self._front.informational_bytes(status, fields)
        else:
            result = self.result
            result.status = status
            fields = response_fields(status, response.headers, for_h2=False)
            self.out += self._front.head_bytes(status, fields)
            result.head_sent = True

    # ---- endings ----

    def _backend_failed(self, reason: str) -> None:
        if self.result.head_sent:
            self.error = (RelayEnd.BACKEND_ABORTED, reason)
        elif self.connection.reused and not self.answer_started:
            self.retry = True
        else:
            self.error = BackendUnavailable(reason)

    def _protocol_error(self, reason: str) -> None:
        if self.result.head_sent:
            self.error = (RelayEnd.BACKEND_ABORTED, reason)
        else:
            self.error = BackendProtocolError(reason)

    def stop(self, pool: BackendPool, *, keep: bool) -> None:
        """Leave the poller; the connection back to the pool (parked here) or closed."""
        self.connection.user = None
        self._balancer.give_back(self._server)
        poller = self._poller
        if keep:
            pool.release_now(self.connection, poller)
            return
        poller.unregister(self._fd)
        self._socket.close_now()


def start_lean(
    front: H1ClientSide,
    client: PollableSocket,
    request: HttpRequest,
    route: RouteConfig,
    server: ServerContext,
    poller_of_connection: Callable[[], BackendPoller],
    client_address: str | None,
    record: RelayRecord,
    last: LastRequest,
) -> LeanExchange | None:
    """Send ``request`` (routed, bodiless) to a kept connection if nothing would wait, and
    return its exchange, the connection's user (``BackendConnection.user``) in the client
    connection's poller (made by the first call of ``poller_of_connection``, only once a
    kept connection is there to take); None: the caller runs the task path. ``last``: the
    client connection's memory of its last lean request (a repeated request, the same
    object, skips its translation)."""
    if request.framing is not BodyFraming.NONE:
        return None
    start = start_on_kept_connection(
        server, route, request, client_address, poller_of_connection, last
    )
    if start is None:
        return None
    balancer, chosen, connection, socket, backend_request, poller = start
    limits = server.config.limits
    wire = H1BackendWire(backend_request, max_head_bytes=limits.max_header_list_bytes)
    exchange = LeanExchange(
        front,
        client,
        request,
        balancer,
        chosen,
        connection,
        socket,
        wire,
        poller,
        record.stats,
        front.pipelined_room(),
    )
    record.backend = chosen.label
    connection.user = exchange  # its socket's callbacks, through its watcher (the connection)
    return exchange
