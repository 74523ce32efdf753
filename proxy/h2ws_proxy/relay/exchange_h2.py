"""Forward one ordinary request to an HTTP/2 backend, on a stream of a shared connection.

:func:`forward_h2_exchange` is :func:`~h2ws_proxy.relay.exchange.forward_exchange` for a
server that speaks HTTP/2: the same client side, result and errors, so the front ends and
the request relay treat both alike. The backend side is an
:class:`~h2ws_proxy.backend.h2.channel.H2Channel`, whose credit goes back only as the
client takes the answer, and whose sends wait for the backend's windows: both directions
are streamed with backpressure, nothing buffered whole.

Rules:

1. The request head opens the stream (END_STREAM on it when there is no body); a body is
   pumped by its own task, one chunk in flight, then the client's trailers or END_STREAM.
2. 1xx answers go to the client as they come; ``101`` on an ordinary request is a protocol
   error; the final head is checked (:func:`parse_h2_response_head`), then the body chunk
   by chunk, then trailers.
3. Before the head went out, a failure is a :class:`ProxyError` (502/504); after it,
   :class:`ExchangeAborted` (the front end resets or drops, as for HTTP/1.1 backends).
4. A stream the server refused unprocessed (REFUSED_STREAM, above its GOAWAY) is sent again
   on another connection if the request had no body; nothing else is retried.
5. No byte either way for ``http_idle_timeout_s``: 504 before the head, an abort after.
6. A stream not ended cleanly both ways is reset (CANCEL) when the exchange ends: the
   backend stops working on a request nobody waits for.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from h2ws_proxy.backend.h2.channel import H2Channel
from h2ws_proxy.backend.h2.pool import H2Backends
from h2ws_proxy.config import BackendAddress, Limits, RouteConfig
from h2ws_proxy.errors import (
    BackendProtocolError,
    BackendTimeout,
    BackendUnavailable,
    ProxyError,
)
from h2ws_proxy.h2session import ErrorCode, ResponseReceived, SessionUsageError
from h2ws_proxy.http.h2_request import build_h2_backend_request
from h2ws_proxy.http.h2_response import parse_h2_response_head
from h2ws_proxy.http.message import (
    NO_BODY_STATUSES,
    BodyFraming,
    HttpRequest,
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
ATTEMPTS = 3


class _Refused(Exception):
    """The server refused the stream unprocessed: it may go to another connection."""


@dataclass(slots=True)
class _Run:
    channel: H2Channel
    request: HttpRequest
    client: ClientSide
    stats: RelayStats
    result: ExchangeResult
    idle: trio.CancelScope
    timeout: float
    strip_fields: frozenset[bytes]
    failure: Exception | None = None

    def progress(self) -> None:
        self.idle.deadline = trio.current_time() + self.timeout


async def forward_h2_exchange(
    request: HttpRequest,
    route: RouteConfig,
    target: BackendAddress,
    client: ClientSide,
    backends: H2Backends,
    limits: Limits,
    client_address: str | None,
    stats: RelayStats,
    result: ExchangeResult,
    *,
    on_start: Callable[[trio.CancelScope], object] | None = None,
) -> None:
    """Forward ``request`` to ``target`` and relay the answer (see the module's rules).
    Raises what ``forward_exchange`` raises, or ``SpeaksHttp11`` before anything was sent."""
    headers = build_h2_backend_request(request, route, target, client_address)
    has_body = request.framing is not BodyFraming.NONE
    timeout = limits.http_idle_timeout_s
    scope = trio.CancelScope()
    if on_start is not None:
        on_start(scope)
    with scope:
        for _ in range(ATTEMPTS):
            connection = await backends.connection(target)
            scope.deadline = trio.current_time() + timeout
            try:
                channel = connection.open_channel(headers, end_stream=not has_body)
            except SessionUsageError:
                continue  # full or going away since the pool picked it
            run = _Run(channel, request, client, stats, result, scope, timeout, route.strip_fields)
            try:
                await _exchange(run)
            except _Refused:
                continue
            finally:
                channel.close_now()
            break
        else:
            raise BackendUnavailable(f"backend {target} refused the stream {ATTEMPTS} times")
    if scope.cancelled_caught:
        if trio.current_time() < scope.deadline:
            result.cancelled = True  # through ``on_start``'s scope: not a timeout
            return
        reason = f"no byte moved either way for {timeout}s"
        if result.head_sent:
            raise ExchangeAborted(RelayEnd.IDLE_TIMEOUT, reason)
        raise BackendTimeout(f"backend {target} did not answer: {reason}")


async def _exchange(run: _Run) -> None:
    if run.request.framing is BodyFraming.NONE and not run.client.watches_disconnect:
        run.result.request_complete = True
        await _relay_answer(run)
        return
    async with trio.open_nursery() as nursery:
        if run.request.framing is BodyFraming.NONE:
            run.result.request_complete = True
            nursery.start_soon(
                _guarded, run, nursery.cancel_scope, watch_client_gone(run.client, run.result)
            )
        else:
            nursery.start_soon(_guarded, run, nursery.cancel_scope, _pump_request_body(run))
        await _guarded(run, nursery.cancel_scope, _relay_answer(run))
        nursery.cancel_scope.cancel()  # the answer is complete: stop the upload if any
    if run.failure is not None:
        raise run.failure


async def _guarded(run: _Run, scope: trio.CancelScope, operation: Awaitable[None]) -> None:
    """Run one of the exchange's tasks; its failure ends the other one too."""
    try:
        await operation
    except (ProxyError, ExchangeAborted, _Refused) as error:
        if run.failure is None:
            run.failure = error
        scope.cancel()


async def _pump_request_body(run: _Run) -> None:
    """Client → backend, one chunk in flight; stops quietly if the backend stops taking it
    (it may be answering early: the answer decides)."""
    channel = run.channel
    while True:
        try:
            chunk = await run.client.receive_body()
        except STREAM_GONE as error:
            raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, str(error)) from error
        if not chunk:
            break
        run.stats.bytes_up += len(chunk)
        try:
            await channel.send_all(chunk)
        except STREAM_GONE:
            return
        run.progress()
    trailers = trailer_fields(run.client.request_trailers(), run.strip_fields)
    try:
        await channel.send_trailers(trailers)
    except STREAM_GONE:
        return
    run.result.request_complete = True
    if run.client.watches_disconnect:
        await watch_client_gone(run.client, run.result)


async def _relay_answer(run: _Run) -> None:
    try:
        head, status, fields = await _final_head(run)
        await _relay_head(run, head, status, fields)
        await _relay_body(run)
    except STREAM_GONE as error:
        # Only writes to the client raise these here (backend reads translate their own).
        raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, f"client went away: {error}") from error


async def _final_head(run: _Run) -> tuple[ResponseReceived, int, list[Header]]:
    """1xx heads go to the client as they come; the final head is returned, checked."""
    while True:
        try:
            head = await run.channel.next_head()
        except trio.BrokenResourceError as error:
            raise _backend_failed(run, error) from None
        run.progress()
        try:
            status, fields = parse_h2_response_head(head.headers)
        except ProxyError:
            run.channel.reset(ErrorCode.PROTOCOL_ERROR)
            raise
        if isinstance(head, ResponseReceived):
            return head, status, fields
        if status == 101:
            run.channel.reset(ErrorCode.PROTOCOL_ERROR)
            raise BackendProtocolError("backend switched protocols on an ordinary request")
        await run.client.send_informational(status, fields)


async def _relay_head(run: _Run, head: ResponseReceived, status: int, fields: list[Header]) -> None:
    has_body = not (head.end_stream or run.request.is_head or status in NO_BODY_STATUSES)
    relayed = response_fields(status, fields, for_h2=run.client.for_h2)
    if run.result.answer_field is not None:
        relayed.append(run.result.answer_field)
    run.result.status = status
    await run.client.send_head(status, relayed, has_body=has_body)
    run.result.head_sent = True


async def _relay_body(run: _Run) -> None:
    channel, client = run.channel, run.client
    while True:
        try:
            chunk = await channel.receive_some()
        except trio.BrokenResourceError as error:
            raise _backend_failed(run, error) from None
        if not chunk:
            break
        run.stats.bytes_down += len(chunk)
        await client.send_body(chunk)
        run.progress()
    await client.end(trailer_fields(channel.trailers) if channel.trailers else [])


def _backend_failed(run: _Run, error: trio.BrokenResourceError) -> Exception:
    reason = f"backend stream broke: {error}"
    if run.result.head_sent:
        return ExchangeAborted(RelayEnd.BACKEND_ABORTED, reason)
    if run.channel.refused and run.request.framing is BodyFraming.NONE:
        return _Refused(reason)
    return BackendUnavailable(reason)
