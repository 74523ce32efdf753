"""Forward one ordinary HTTP request to its backend and the answer back, streaming both ways.

The exchange knows nothing of the client's protocol: the frontend hands it a
:class:`ClientSide` (an HTTP/2 stream or an HTTP/1.1 connection) and an
:class:`~h2ws_proxy.http.message.HttpRequest`. The backend side is one HTTP/1.1
connection from the :class:`~h2ws_proxy.backend.pool.BackendPool`, driven by an
:class:`~h2ws_proxy.backend.h1_wire.H1BackendWire` per request.

Flow and rules:

1. Borrow a connection, send the request head. The request body is pumped by its own task
   (client → backend), chunk by chunk: the next chunk is read from the client only after the
   previous one was written to the backend, so the HTTP/2 window (whose credit goes back one
   read late) or the client's TCP window is the backpressure. Nothing is buffered whole.
2. This task reads the answer: 1xx go to the client as they come (100-continue works end to
   end), then the head, then the body chunk by chunk (a client that reads slowly slows the
   backend read, through the same rule), then the trailers.
3. Before the head went out, a failure is a :class:`ProxyError` (the frontend answers
   502/504 with a reason); after it, :class:`ExchangeAborted` (the frontend resets the
   stream or drops the connection, since a half-sent answer cannot be made whole).
4. A reused connection that fails before any byte of the answer (the backend closed it as
   we sent) is retried once on a new connection, if the request had no body to resend.
5. No byte either way for ``http_idle_timeout_s``: 504 before the head, an abort after.
6. The connection goes back to the pool only if both messages completed cleanly.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

from h2ws_proxy.backend.h1_wire import AnswerEnd, BodyData, Event, H1BackendWire, Need, ResponseHead
from h2ws_proxy.backend.kept_connection import BackendConnection
from h2ws_proxy.backend.pool import BackendPool
from h2ws_proxy.backend.upgrade import READ_SIZE
from h2ws_proxy.config import BackendAddress, Limits, RouteConfig
from h2ws_proxy.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ProxyError,
)
from h2ws_proxy.http.message import (
    BackendRequest,
    BodyFraming,
    HttpRequest,
    answer_has_body,
    build_backend_request,
    response_fields,
    trailer_fields,
)
from h2ws_proxy.relay.exchange_contract import (
    ClientSide,
    ExchangeAborted,
    ExchangeResult,
    watch_client_gone,
)
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats
from h2ws_proxy.transport.errors import STREAM_GONE

Header = tuple[bytes, bytes]


class _Retry(Exception):
    """A reused connection failed before any answer: try once more on a new one."""


async def forward_exchange(
    request: HttpRequest,
    route: RouteConfig,
    target: BackendAddress,
    client: ClientSide,
    pool: BackendPool,
    limits: Limits,
    client_address: str | None,
    stats: RelayStats,
    result: ExchangeResult,
    *,
    on_start: Callable[[trio.CancelScope], object] | None = None,
    fresh: bool = False,
) -> None:
    """Forward ``request`` to ``target`` (a server of ``route``'s group) and relay the
    answer; see the module rules for what it raises.

    ``on_start`` gets the exchange's cancel scope before anything runs: cancelling it ends
    the exchange with ``result.cancelled`` set and nothing raised, and spares the caller a
    scope of its own around the call. The idle timeout is that scope's deadline, armed
    while an attempt runs (dials keep ``connect_timeout_s``).
    """
    backend_request = build_backend_request(request, route, client_address)
    timeout = limits.http_idle_timeout_s
    # ``fresh``: a kept connection already failed this request (its one retry is a new one).
    connection = None if fresh else await pool.take_idle(target)
    # With a kept connection (no dial) the idle timer starts now, with the scope: moving
    # the deadline of an entered scope costs about as much as entering it.
    scope = trio.CancelScope(deadline=idle_deadline(timeout) if connection else math.inf)
    if on_start is not None:
        on_start(scope)
    try:
        with scope:
            if connection is None:
                connection = await pool.connect(target)
                scope.deadline = idle_deadline(timeout)
            try:
                await _exchange_once(
                    scope, connection, backend_request, request, client, limits, stats, result
                )
            except _Retry:
                await trio.aclose_forcefully(connection.stream)
                connection = None
                scope.deadline = math.inf
                connection = await pool.connect(target)
                scope.deadline = idle_deadline(timeout)
                try:
                    await _exchange_once(
                        scope, connection, backend_request, request, client, limits, stats, result
                    )
                except _Retry as error:
                    raise BackendUnavailable(str(error)) from None
    except BaseException:
        if connection is not None:
            await trio.aclose_forcefully(connection.stream)
        raise
    if scope.cancelled_caught:
        if connection is not None:  # None: cancelled while dialing
            await trio.aclose_forcefully(connection.stream)
        if trio.current_time() < scope.deadline:
            result.cancelled = True  # through ``on_start``'s scope: not a timeout
            return
        reason = f"no byte moved either way for {timeout}s"
        if result.head_sent:
            raise ExchangeAborted(RelayEnd.IDLE_TIMEOUT, reason)
        raise BackendTimeout(f"backend {target} did not answer: {reason}")
    assert connection is not None  # the scope ended normally: an attempt ran
    if result.request_complete and result.reusable:
        await pool.release(connection)
    else:
        await trio.aclose_forcefully(connection.stream)


@dataclass(slots=True)
class _Run:
    """The state one attempt's two tasks share."""

    connection: BackendConnection
    wire: H1BackendWire
    request: HttpRequest
    client: ClientSide
    limits: Limits
    stats: RelayStats
    result: ExchangeResult
    #: The exchange's scope: its deadline is the idle timer.
    idle: trio.CancelScope
    #: True once any byte of the answer arrived (a retry is no longer safe).
    answer_started: bool = False
    #: The first failure of either task; raised once both have stopped.
    failure: Exception | None = None
    #: From when on :meth:`progress` moves the deadline.
    push_at: float = 0.0
    #: The route's ``strip_fields``, kept out of the client's trailers.
    strip_fields: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        self._next_push()

    def progress(self) -> None:
        """Bytes moved: the idle deadline moves on (see :func:`idle_deadline`)."""
        if trio.current_time() >= self.push_at:
            self.idle.deadline = idle_deadline(self.limits.http_idle_timeout_s)
            self._next_push()

    def _next_push(self) -> None:
        self.push_at = self.idle.deadline - self.limits.http_idle_timeout_s


def idle_deadline(timeout: float) -> float:
    """The idle timer's deadline when a byte moves now: ``timeout`` plus a slack.

    Moving a trio deadline costs a heap update (about as much as entering a scope), and
    bytes move several times per request; so the deadline is set ``slack`` late (a tenth of
    the timeout, at most a second) and moved only once a byte moves ``slack`` or more after
    it was set (``_Run.progress``). Every byte in between came less than ``slack`` after, so
    the timer fires between ``timeout`` and ``timeout + slack`` after the last byte moved:
    never early, as with a tunnel's timers.
    """
    return trio.current_time() + timeout + min(1.0, timeout / 10)


async def _exchange_once(
    scope: trio.CancelScope,
    connection: BackendConnection,
    backend_request: BackendRequest,
    request: HttpRequest,
    client: ClientSide,
    limits: Limits,
    stats: RelayStats,
    result: ExchangeResult,
) -> None:
    """One attempt on ``connection``; the idle timer (``scope``'s deadline) was just armed."""
    wire = H1BackendWire(backend_request, max_head_bytes=limits.max_header_list_bytes)
    run = _Run(connection, wire, request, client, limits, stats, result, scope)
    run.strip_fields = backend_request.strip_fields
    if request.framing is BodyFraming.NONE and not client.watches_disconnect:
        # Nothing to run beside the answer (no upload, no watcher): no nursery, which
        # costs a cancel scope and two scheduler calls per request; failures just rise.
        await _send_and_relay(run, None)
    else:
        async with trio.open_nursery() as nursery:
            # Failures are kept in ``run.failure`` rather than raised inside the nursery,
            # so the caller sees one plain exception, not an exception group.
            await _guarded(run, nursery.cancel_scope, _send_and_relay(run, nursery))
        if run.failure is not None:
            raise run.failure
    result.reusable = wire.reusable()


async def _guarded(run: _Run, scope: trio.CancelScope, operation: Awaitable[None]) -> None:
    """Run one of the exchange's tasks; its failure ends the other one too."""
    try:
        await operation
    except (ProxyError, ExchangeAborted, _Retry) as error:
        if run.failure is None:
            run.failure = error
        scope.cancel()


async def _send_and_relay(run: _Run, nursery: trio.Nursery | None) -> None:
    """Send the request head, start the upload or the watcher (in ``nursery``, which is
    None only when there is neither), then relay the answer."""
    wire = run.wire
    if run.request.framing is BodyFraming.NONE:
        await _send(run, wire.request_head() + wire.end_request([]))
        run.result.request_complete = True
        if run.client.watches_disconnect:
            assert nursery is not None
            nursery.start_soon(
                _guarded, run, nursery.cancel_scope, watch_client_gone(run.client, run.result)
            )
    else:
        await _send(run, wire.request_head())
        assert nursery is not None
        nursery.start_soon(_guarded, run, nursery.cancel_scope, _pump_request_body(run))
    await _relay_answer(run)
    if nursery is not None:
        nursery.cancel_scope.cancel()  # the answer is complete: stop the upload if any


async def _send(run: _Run, data: bytes) -> None:
    """Write to the backend; a failure before any answer on a reused connection retries."""
    try:
        await run.connection.stream.send_all(data)
    except STREAM_GONE as error:
        raise _backend_failed(run, f"backend connection broke while sending: {error}") from error
    run.progress()


def _backend_failed(run: _Run, reason: str) -> Exception:
    if run.result.head_sent:
        return ExchangeAborted(RelayEnd.BACKEND_ABORTED, reason)
    if run.connection.reused and not run.answer_started and run.request.framing is BodyFraming.NONE:
        return _Retry(reason)
    return BackendUnavailable(reason)


async def _pump_request_body(run: _Run) -> None:
    """Client → backend, one chunk in flight; stops quietly if the backend stops taking it."""
    wire = run.wire
    while True:
        try:
            chunk = await run.client.receive_body()
        except STREAM_GONE as error:
            # The client broke off or broke its framing: nothing more can be done.
            raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, str(error)) from error
        if not chunk:
            break
        run.stats.bytes_up += len(chunk)
        try:
            data = wire.send_body(chunk)
        except h11.LocalProtocolError as error:  # more bytes than the declared length
            raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, f"request body: {error}") from error
        if not await _send_body_bytes(run, data):
            return
    try:
        data = wire.end_request(_request_trailers(run))
    except h11.LocalProtocolError as error:  # fewer bytes than the declared length
        raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, f"request body: {error}") from error
    if await _send_body_bytes(run, data):
        run.result.request_complete = True
        if run.client.watches_disconnect:
            await watch_client_gone(run.client, run.result)


def _request_trailers(run: _Run) -> list[Header]:
    if run.request.framing is not BodyFraming.CHUNKED:
        return []  # HTTP/1.1 carries trailers only in chunked bodies
    return trailer_fields(run.client.request_trailers(), run.strip_fields)


async def _send_body_bytes(run: _Run, data: bytes) -> bool:
    """False if the backend stopped taking the body (it may be answering early: keep reading)."""
    try:
        await run.connection.stream.send_all(data)
    except STREAM_GONE:
        return False
    run.progress()
    return True


async def _relay_answer(run: _Run) -> None:
    """The answer's events to the client, in order; each write to the client is progress.
    What one backend read brought goes to the client together (``client.hold``, flushed
    before the next read and at the end): a small answer is one write, no writer wake-up."""
    client, wire = run.client, run.wire
    try:
        while True:
            event = _next_event_nowait(run, wire)
            if event is Need.DATA:
                client.flush()
                await _receive(run, wire)
                client.hold()
                continue
            run.answer_started = True
            if isinstance(event, BodyData):
                run.stats.bytes_down += len(event.data)
                await client.send_body(event.data)
            elif isinstance(event, ResponseHead):
                if event.status == 101:
                    raise _protocol_error(run, "backend switched protocols on an ordinary request")
                if event.status < 200:
                    fields = response_fields(event.status, event.headers, for_h2=run.client.for_h2)
                    await client.send_informational(event.status, fields)
                else:
                    await _relay_head(run, event)
            elif isinstance(event, AnswerEnd):
                await client.end(trailer_fields(event.trailers) if event.trailers else [])
                run.progress()
                return
            else:  # BackendClosed
                raise _backend_failed(run, "backend closed the connection mid-answer")
            run.progress()
    except STREAM_GONE as error:
        # Only writes to the client raise these here (backend reads translate their own).
        raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, f"client went away: {error}") from error
    finally:
        client.flush()


async def _relay_head(run: _Run, response: ResponseHead) -> None:
    status = response.status
    has_body = answer_has_body(run.request, status, response.headers)
    fields = response_fields(status, response.headers, for_h2=run.client.for_h2)
    if run.result.answer_field is not None:
        fields.append(run.result.answer_field)
    run.result.status = status
    await run.client.send_head(status, fields, has_body=has_body)
    run.result.head_sent = True


def _next_event_nowait(run: _Run, wire: H1BackendWire) -> Event | Need:
    """The wire's next event, or Need.DATA; Need.SWITCHED and errors raised as ours."""
    try:
        event = wire.next_event()
    except h11.RemoteProtocolError as error:
        raise _protocol_error(run, f"backend's answer is not valid HTTP/1.1: {error}") from None
    if event is Need.SWITCHED:
        raise _protocol_error(run, "backend switched protocols on an ordinary request")
    return event


async def _receive(run: _Run, wire: H1BackendWire) -> None:
    """Read from the backend into the wire."""
    try:
        data = await run.connection.stream.receive_some(READ_SIZE)
    except STREAM_GONE as error:
        raise _backend_failed(run, f"backend connection broke: {error}") from error
    if not data and wire.awaiting_head:
        raise _backend_failed(run, "backend closed the connection without answering")
    if data:
        run.answer_started = True  # part of a head is an answer begun: no retry after it
    wire.receive_data(bytes(data))
    run.progress()


def _protocol_error(run: _Run, reason: str) -> Exception:
    if run.result.head_sent:
        return ExchangeAborted(RelayEnd.BACKEND_ABORTED, reason)
    return BackendProtocolError(reason)
