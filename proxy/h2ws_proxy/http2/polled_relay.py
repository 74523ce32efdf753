"""A lean request's answer relayed in parts, under the client's flow control.

:class:`PolledRelay` holds a lean request's state (:mod:`~h2ws_proxy.http2.polled_request`,
whose rules hold here) and relays an answer that did not come whole in one read, or whose
body the client's window did not take at once, with the same rules as ``relay/exchange.py``:
1xx as they come, the head, the body as the client's window and the connection's output
bound allow (the backend is not read meanwhile: its watch is paused until the stream calls
back, ``client_writable``), then the end (trailers, if any fit to relay). How a request
ends is the subclass's (``_abort``, ``_protocol_error``, ``_backend_failed``, ``_complete``).
"""

from __future__ import annotations

import h11
import trio

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState
from h2ws_proxy.backend.h1_wire import AnswerEnd, BodyData, H1BackendWire, Need, ResponseHead
from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.config import RouteConfig
from h2ws_proxy.h2session import StreamUnusable
from h2ws_proxy.http.message import HttpRequest, trailer_fields
from h2ws_proxy.http2.answer_heads import send_answer_head
from h2ws_proxy.http2.lean_connection import LeanConnection
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.request_facts import RequestFacts
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.timers import ConnectionTimers

#: A write to the client's stream failed: the stream broke, or the session refuses it.
CLIENT_GONE = (*STREAM_GONE, StreamUnusable)


class PolledRelay:
    """A lean request's state, and its answer relayed in parts (see the module rules)."""

    __slots__ = (
        "_answer_started",
        "_balancer",
        "_connection",
        "_done",
        "_facts",
        "_fd",
        "_head_sent",
        "_lean",
        "_paused",
        "_pending",
        "_poller",
        "_record",
        "_request",
        "_route",
        "_server",
        "_socket",
        "_started",
        "_stream",
        "_timeout",
        "_timers",
        "_wire",
        "deadline",
    )

    _answer_started: bool
    _balancer: GroupBalancer
    _connection: BackendConnection
    _done: bool
    #: What the record is begun from when first needed (:meth:`_the_record`): the request's
    #: facts, and its start (the clock's reading of the client read that brought it).
    _facts: RequestFacts
    _started: float
    _fd: int
    #: The answer's head went to the client (its status is the record's).
    _head_sent: bool
    _lean: LeanConnection
    #: The backend's watch is paused: the client cannot take more now.
    _paused: bool
    #: Body bytes the client's window did not take yet.
    _pending: memoryview | None
    _poller: BackendPoller
    #: None until something needs it (:meth:`_the_record`).
    _record: RelayRecord | None
    _request: HttpRequest
    _route: RouteConfig
    _server: ServerState
    _socket: PollableSocket
    _stream: H2Stream
    _timeout: float
    _timers: ConnectionTimers
    _wire: H1BackendWire
    #: The idle timer's (``ConnectionTimers``): when it fires, and whether it is armed.
    deadline: float

    def _the_record(self) -> RelayRecord:
        """The request's record, begun from its facts at its first need (a head relayed in
        parts, a body that waits, a failure): an answer that goes whole at once with its end
        is counted and logged without one (``relay/record.py``'s ``log_answered``)."""
        record = self._record
        if record is None:
            record = self._record = RelayRecord.of_facts(
                self._facts, self._stream.stream_id, self._server.label, self._started
            )
        return record

    # ---- the client (the stream's callbacks) ----

    def client_writable(self) -> None:
        """The stream's window may have grown, or the stream broke."""
        if self._done:
            return
        stream = self._stream
        if stream.broken_reason is not None:
            end = RelayEnd.CLIENT_ABORTED if stream.reset_by_peer else RelayEnd.CANCELLED
            self._abort(end, f"client went away: {stream.broken_reason}")
            return
        if self._pending is not None and self._send_pending():
            self._resume()

    def _on_drained(self) -> None:
        if not self._done and self._pending is None:
            self._resume()

    def _progress(self) -> None:
        if self._timeout > 0:
            timers = self._timers
            timers.arm(self, self._timeout, timers.now())

    # ---- relaying the answer ----

    def _relay(self) -> None:
        """Hand on the answer's events the wire has, until it needs bytes, the client
        cannot take more, or the answer ended."""
        wire = self._wire
        while not self._done and not self._paused:
            try:
                event = wire.next_event()
            except h11.RemoteProtocolError as error:
                self._protocol_error(f"backend's answer is not valid HTTP/1.1: {error}")
                return
            kind = type(event)
            try:
                if kind is BodyData:
                    assert isinstance(event, BodyData)
                    self._the_record().stats.bytes_down += len(event.data)
                    self._send_body(event.data, wire.body_ends_here())
                elif event is Need.DATA:
                    return
                elif kind is ResponseHead:
                    assert isinstance(event, ResponseHead)
                    if not self._relay_head(event):
                        return
                elif kind is AnswerEnd:
                    assert isinstance(event, AnswerEnd)
                    self._end_answer(event)
                    return
                elif event is Need.SWITCHED:
                    self._protocol_error("backend switched protocols on an ordinary request")
                    return
                else:  # BackendClosed
                    self._backend_failed("backend closed the connection mid-answer")
                    return
            except CLIENT_GONE as error:
                self._abort(RelayEnd.CLIENT_ABORTED, f"client went away: {error}")
                return

    def _relay_head(self, response: ResponseHead) -> bool:
        """Send the answer's head (or a 1xx); False when the relay stops here."""
        if self._stream.broken_reason is not None:
            raise trio.BrokenResourceError(self._stream.broken_reason)
        if response.status == 101:
            self._protocol_error("backend switched protocols on an ordinary request")
            return False
        send_answer_head(self._stream, self._request, response)
        if response.status >= 200:
            self._the_record().status = response.status
            self._head_sent = True
        return True

    def _send_body(self, data: bytes, last: bool) -> None:  # (last: the body ends here)
        stream = self._stream
        view = memoryview(data)
        sent = stream.send_now(view, last)
        if sent < len(view):
            # The stream asked to be woken by new credit (``client_writable``).
            self._pending = view[sent:]
            self._pause()
        elif stream.backlogged():
            self._pause()
            stream.call_when_drained(self._on_drained)

    def _send_pending(self) -> bool:
        """Send what waited for credit; True once all of it went."""
        pending = self._pending
        assert pending is not None
        try:
            sent = self._stream.send_now(pending, self._wire.body_ends_here())
        except STREAM_GONE as error:
            self._abort(RelayEnd.CLIENT_ABORTED, f"client went away: {error}")
            return False
        if sent:
            self._progress()  # a byte moved: new credit alone is not activity
        if sent < len(pending):
            self._pending = pending[sent:]
            return False
        self._pending = None
        if self._stream.backlogged():
            self._stream.call_when_drained(self._on_drained)
            return False
        return True

    def _end_answer(self, event: AnswerEnd) -> None:
        stream = self._stream
        if not stream.local_ended and event.trailers:
            trailers = trailer_fields(event.trailers)
            if trailers:  # (else: none fit to relay)
                if stream.broken_reason is not None:
                    raise trio.BrokenResourceError(stream.broken_reason)
                self._lean.session.send_headers(stream.stream_id, trailers, end_stream=True)
                stream.mark_ended_locally()
        self._answered()

    def _answered(self) -> None:
        """The answer is over (its trailers, if any, sent): the stream's end, the clean end."""
        if not self._stream.local_ended:
            self._stream.end_now()  # no trailers, or none fit to relay
        self._the_record().stats.end = RelayEnd.CLEAN
        self._complete(keep=self._wire.reusable())

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._poller.pause(self._fd)

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._relay()  # events the wire already holds go first
            if not self._done and not self._paused:
                self._poller.resume(self._fd)

    # ---- the timer and the endings (the subclass's) ----

    def on_timer(self) -> None:
        raise NotImplementedError

    def _backend_failed(self, reason: str) -> None:
        raise NotImplementedError

    def _protocol_error(self, reason: str) -> None:
        raise NotImplementedError

    def _abort(self, end: RelayEnd, reason: str) -> None:
        raise NotImplementedError

    def _complete(self, *, keep: bool) -> None:
        raise NotImplementedError
