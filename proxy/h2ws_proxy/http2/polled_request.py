"""An ordinary HTTP/2 request run without a task: the lean path of a plain GET.

A bodiless request for one plain HTTP/1.1 server with a kept-alive connection idle in the
pool (the common case) needs no task, nursery or cancel scope (bench/README.md, the lean
request path): the reader's turn writes it to the backend, the connection's ``BackendPoller``
calls back when the answer arrives, the answer goes out in that poller round's output batch,
and the idle timeout is one of the connection's ``ConnectionTimers``.

Rules:

* Taken only when nothing would have to wait (:meth:`LeanRequests.try_start`): any other
  request, or one whose head the kernel does not take at once, runs on a task as before
  (``StreamTasks.serve_exchange``), with the same behaviour; so is the one retry, on a new
  connection, of a request a kept connection failed before any byte of the answer.
* The answer is read by the same :class:`~h2ws_proxy.backend.h1_wire.H1BackendWire` and
  relayed with the same rules as ``relay/exchange.py`` (one that came whole, in one pass,
  here; one in parts, under the client's flow control, by :mod:`.polled_relay`'s base class):
  1xx as they come, the head, the body as the client's window and the connection's output
  bound allow (the backend is not read meanwhile: its watch is paused until the stream
  calls back), then the end.
* Failures as in the task path: before the answer's head, a 502 (a broken or invalid
  answer) or 504 (the idle timer) answered here; after it, the stream is reset. The
  stream's break (the client's reset, the connection's end) reaches us through the same
  callback as new credit, ``client_writable``.
* Exactly one end (:meth:`PolledRequest._stop`): the backend socket leaves the poller
  before it is closed, or goes back to the pool parked in it (after a clean cycle), the
  timer is disarmed, the server given back, and the stream finished as a task's would be
  (``StreamTasks.finish_exchange``: reset codes, credit, the access line), or, for an
  answer all of which went in one call, by its short way (:meth:`_relay_whole`).
* A record (``relay/record.py``) is begun at the request's first need of one (a head or
  body relayed in parts, a failure, any end but that short way: ``_the_record``); the short
  way needs none: ``log_answered`` counts the request and writes its line from its facts,
  the same as the record would.
"""

from __future__ import annotations

import math

from h2ws_proxy.backend.h1_wire import H1BackendWire, ResponseHead
from h2ws_proxy.backend.h1_wire_head import whole_answer
from h2ws_proxy.backend.upgrade import READ_SIZE
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import BackendProtocolError, BackendTimeout, BackendUnavailable, ProxyError
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.answer_heads import send_whole_answer
from h2ws_proxy.http2.lean_connection import LeanConnection
from h2ws_proxy.http2.polled_relay import CLIENT_GONE, PolledRelay
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.kept_start import KeptStart
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import log_answered
from h2ws_proxy.relay.request_facts import RequestFacts
from h2ws_proxy.transport.timers import ConnectionTimers

#: What ``finish`` is told of an exchange, with or without the answer's head sent: shared by
#: every lean request (``finish_exchange`` only reads it; the status is the record's).
_ANSWERED = ExchangeResult(head_sent=True, request_complete=True)
_UNANSWERED = ExchangeResult(request_complete=True)


class PolledRequest(PolledRelay):
    """One lean request, from its backend write to its end (see the module rules)."""

    #: What the wire is made of, when it is (``_wire`` is set only then: see
    #: :meth:`_make_wire`): the request as sent, and the bound on the answer's head.
    __slots__ = ("_max_head_bytes", "_sent")

    def __init__(
        self,
        lean: LeanConnection,
        stream: H2Stream,
        request: HttpRequest,
        route: RouteConfig,
        start: KeptStart,
        max_head_bytes: int,
        facts: RequestFacts,
        timers: ConnectionTimers,
        timeout: float,
        now: float,
    ) -> None:
        self._lean = lean
        self._stream = stream
        self._request = request
        self._route = route
        self._balancer, self._server, connection, socket, self._sent, poller = start
        self._connection = connection
        self._socket = socket
        self._fd = connection.fd  # (``socket``'s, read once when the connection was made)
        # No wire yet: an answer that comes whole in its first read needs none
        # (``whole_answer``); the first read that is not one makes it (``_make_wire``), and
        # nothing reads ``_wire`` before the answer's first byte (``_answer_started``).
        self._max_head_bytes = max_head_bytes
        # No record yet (``_the_record``): the usual answer needs none. Its start is ``now``.
        self._facts, self._started, self._record = facts, now, None
        # ``_head_sent``: the answer's head went to the client (its status is the record's);
        # ``_paused``: the backend's watch is paused, the client cannot take more now.
        self._head_sent = self._answer_started = self._done = self._paused = False
        #: Body bytes the client's window did not take yet.
        self._pending: memoryview | None = None
        self._poller = poller
        self._timers = timers
        self._timeout = timeout
        lean.server.stats.requests += 1
        stream.on_writable = self  # new credit, and the stream's break
        if timeout > 0:
            # ``timers.arm(self, timeout, now)`` (``now``: the read's reading, lean_requests.py)
            # in place behind the length's other timers: a new timer, a queue not empty, so
            # no wake-up (timers.py's rules); an empty or new queue takes ``arm`` itself.
            queue = timers.queues.get(timeout)
            if queue:
                self.deadline = now + timeout
                queue[self] = timeout
            else:
                timers.arm(self, timeout, now)
        else:
            self.deadline = math.inf
        # The poller's callbacks for the socket come through the connection, its watcher
        # there (``take_idle_now`` left it so): no ``register`` per request.
        connection.user = self

    # ---- the backend (the poller's callbacks, through the connection) ----

    def on_readable(self) -> None:
        if self._done:
            return
        # ``PollableSocket.receive_nowait``'s steps in place (once per answer), on the
        # socket's own ``recv``: nothing there yet, a wake-up for nothing; any other error,
        # the same failure and text. (The socket closes only at this request's end.)
        try:
            data = self._connection.receive_now(READ_SIZE)
        except BlockingIOError:
            return
        except OSError as error:
            self._backend_failed(f"backend connection broke: socket error: {error}")
            return
        if not data:
            self._backend_closed()
            return
        if not self._answer_started:  # the answer's first bytes: whole, or a wire made
            self._answer_started = True
            if (whole := whole_answer(data, is_head=self._sent.method == b"HEAD")) is not None:
                self._relay_whole(whole, data)
            else:
                self._make_wire().receive_data(data)
                self._relay()
        elif (whole := self._wire.receive_whole(data)) is not None:
            self._relay_whole(whole, None)
        else:
            self._relay()
        if not self._done:
            self._progress()  # a byte moved (a read that ended the answer needs no timer)

    def _make_wire(self) -> H1BackendWire:
        """The answer's wire, made on its first bytes that were not a whole answer (or for
        the rest of one that was); new, as a wire made at the request's start would be."""
        wire = self._wire = H1BackendWire(self._sent, max_head_bytes=self._max_head_bytes)
        return wire

    def _backend_closed(self) -> None:
        """The backend's EOF: before the answer's head, a failure; else the wire says."""
        if not self._answer_started or self._wire.awaiting_head:  # (no byte: no wire yet)
            self._backend_failed("backend closed the connection without answering")
            return
        wire = self._wire
        wire.receive_data(b"")
        self._relay()
        if not self._done:
            self._progress()

    def on_error(self) -> None:
        if not self._done:
            self._backend_failed("backend connection cannot be watched")

    def on_closed(self) -> None:
        if not self._done:  # the connection's end (its streams are usually ended before)
            self._abort(RelayEnd.CANCELLED, "the client connection closed")

    # ---- the timer ----

    def on_timer(self) -> None:
        if self._done:
            return
        reason = f"no byte moved either way for {self._timeout}s"
        if self._head_sent:
            self._abort(RelayEnd.IDLE_TIMEOUT, reason)
        else:
            target = self._connection.address
            self._refuse(BackendTimeout(f"backend {target} did not answer: {reason}"))

    def _relay_whole(self, whole: tuple[ResponseHead, bytes, bool], unwired: bytes | None) -> None:
        """The answer came whole (the common case; a final head): ``_relay``'s steps in one
        pass, the head with all of its body and END_STREAM in one session call. ``whole``:
        ``receive_whole``'s (head, body, the connection reusable after it); ``unwired``: the
        read it came in when no wire read it (``whole_answer``'s), else None."""
        head, body, reusable = whole
        stream = self._stream
        try:
            sent = send_whole_answer(stream, self._request, head, body)
        except CLIENT_GONE as error:
            self._abort(RelayEnd.CLIENT_ABORTED, f"client went away: {error}")
            return
        self._head_sent = True
        size = len(body)
        if size and (sent < size or stream.connection.backlogged()):
            record = self._the_record()  # (the first need of one: nothing came before the head)
            record.status = head.status
            record.stats.bytes_down += size
            if sent < size:
                # The stream asked to be woken by new credit (``client_writable``).
                self._pending = memoryview(body)[sent:]
                self._wire_after_whole(unwired)
                self._pause()
                return
            self._wire_after_whole(unwired)
            self._pause()  # the end waits for the drain, as in ``_relay``
            stream.call_when_drained(self._on_drained)
            return
        # All of it went at once: the clean end, ``_stop``'s steps in place (the end of most
        # requests), counted and logged without a record (``log_answered``), then the
        # stream's end. One clock reading per round of the poller's handlers (its first
        # answer's end takes it) serves every answer's release and line in the round: see
        # ``BackendPoller.round_time``.
        self._done = True
        self._timers.disarm(self, self._timeout)
        stream.on_writable = None
        connection = self._connection
        connection.user = None
        self._balancer.give_back(self._server)
        lean = self._lean
        server = lean.server
        poller = self._poller
        now = poller.round_time
        if now < 0.0:
            now = poller.round_time = poller.now()
        if reusable:  # parked in the poller: no epoll_ctl for the next request
            server.pool.release_now(connection, poller, self._socket, self._fd, now)
        else:
            poller.unregister(self._fd)
            self._socket.close_now()
        stats = server.stats
        stats.requests -= 1
        log_answered(
            stats.counters,
            self._facts,
            stream.stream_id,
            self._server.label,
            head.status,
            size,
            self._started,
            now,
        )
        # ``StreamTasks.finish_exchange``'s end, in its short way for this case: the
        # request's HEADERS ended the client's side (nothing to consume or credit), the
        # answer's END_STREAM went with all of its body (no window waited for), and nobody
        # waits on the stream: nothing to reset, return or wake. It is marked over
        # (``break_stream``'s, with no waiter) and forgotten.
        stream.broken_reason = "the exchange ended"
        lean.forget(stream)

    def _wire_after_whole(self, unwired: bytes | None) -> None:
        """A whole answer that waits for the client: the rest is ``_relay``'s, with a wire
        where ``receive_whole`` leaves it: made now and given ``unwired`` if there was none
        (it reads the same answer from it: ``whole_answer``'s rule)."""
        if unwired is not None:
            self._make_wire().receive_whole(unwired)

    # ---- endings ----

    def _backend_failed(self, reason: str) -> None:
        if self._head_sent:
            self._abort(RelayEnd.BACKEND_ABORTED, reason)
        elif self._connection.reused and not self._answer_started:
            self._hand_to_task()
        else:
            self._refuse(BackendUnavailable(reason))

    def _protocol_error(self, reason: str) -> None:
        if self._head_sent:
            self._abort(RelayEnd.BACKEND_ABORTED, reason)
        else:
            self._refuse(BackendProtocolError(reason))

    def _refuse(self, error: ProxyError) -> None:
        """Nothing of the answer went out: answer ``error`` ourselves."""
        self._the_record().refused(error)
        stream = self._stream
        if stream.broken_reason is None:
            self._lean.refuse(stream.stream_id, error)
            stream.mark_ended_locally()
        self._complete(keep=False)

    def _abort(self, end: RelayEnd, reason: str) -> None:
        record = self._the_record()
        record.error = reason
        record.stats.end = end
        self._complete(keep=False)

    def _hand_to_task(self) -> None:
        """A reused connection failed before answering: the task path takes the request
        on a new connection (no line for this attempt, as for ``forward_exchange``'s retry)."""
        self._stop(keep=False)
        self._lean.server.stats.requests -= 1
        self._lean.run_on_task(self._stream, self._request, self._route, True)

    def _complete(self, *, keep: bool) -> None:
        self._stop(keep=keep)
        lean, record = self._lean, self._the_record()
        lean.server.stats.requests -= 1
        record.opened = head_sent = self._head_sent
        lean.finish(self._stream, record, _ANSWERED if head_sent else _UNANSWERED)

    def _stop(self, *, keep: bool) -> None:
        """Leave the poller, the timers and the stream; the connection back or closed.
        (``_relay_whole`` takes these steps in place for a whole answer's clean end.)"""
        self._done = True
        poller = self._poller
        self._timers.disarm(self, self._timeout)
        self._stream.on_writable = None
        self._connection.user = None
        self._balancer.give_back(self._server)
        if keep:  # parked in the poller: no epoll_ctl for the next request
            # The round's reading if one was taken (-1.0 else: the release reads the clock):
            # one round's releases share one reading, so the idle order stays oldest-first.
            pool = self._lean.server.pool
            pool.release_now(self._connection, poller, self._socket, self._fd, poller.round_time)
            return
        poller.unregister(self._fd)
        self._socket.close_now()
