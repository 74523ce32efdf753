"""Reach a backend and do the HTTP/1.1 WebSocket upgrade with it.

This is the one place where backend-side OS, trio and h11 exceptions become
:mod:`h2ws_proxy.errors` (httpcore's ``map_exceptions`` idea):

* connect refused, unreachable, reset, a failed TLS handshake (``tls.py`` says why) →
  :class:`BackendUnavailable` (502, at once: no retry loop, since a browser waiting on a
  socket is worse off than one told "no");
* no connection or no complete answer within the limit → :class:`BackendTimeout` (504);
* an answer that is not HTTP, or a ``101`` that fails verification →
  :class:`BackendProtocolError` (502);
* any other final answer → :class:`BackendRejected`, carrying it to go back as it came.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import h11
import trio

from h2ws_proxy.backend.head_start import HeadStart, is_ip_literal_cached
from h2ws_proxy.backend.known_101 import known_101, remember_101
from h2ws_proxy.backend.tls import start_backend_tls
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.counters import Histogram
from h2ws_proxy.errors import (
    BackendConnectFailed,
    BackendConnectTimeout,
    BackendProtocolError,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
)
from h2ws_proxy.http.backend_handshake import check_backend_101, check_backend_accept
from h2ws_proxy.http.fields import end_to_end_response_headers
from h2ws_proxy.http.handshake import BackendAccepted, WebSocketRequest
from h2ws_proxy.http.upgrade_wire import InterimHead, UpgradeRequest, read_interim_head
from h2ws_proxy.transport.capabilities import lean_backend
from h2ws_proxy.transport.socket_stream import open_tcp_to_ip

#: How much to ask the kernel for per read on a backend socket.
READ_SIZE = 65536

ConnectBackend = Callable[[BackendAddress], Awaitable[trio.abc.HalfCloseableStream]]


def open_backend_stream(
    address: BackendAddress,
    *,
    before_wait: Callable[[], object] | None = None,
    begun: tuple[socket.socket, int] | None = None,
) -> Awaitable[trio.abc.HalfCloseableStream]:
    """Open a TCP, TLS (``https``) or unix stream to ``address``; OS errors and failed TLS
    handshakes become BackendUnavailable.

    ``before_wait`` is called before anything that may wait; a connect to an IP address
    that completes at once (loopback, a near backend) calls it not at all, a TLS one always
    (its handshake waits for the server): the caller's connect timeout covers the handshake.
    ``begun``: a TCP connect to an IP address begun already (``HeadStart.begun``).

    Sync, returning the dial's own coroutine: no frame of its own per new tunnel.
    """
    if address.scheme == "https":
        return _open_tls(address, before_wait)
    return _open_socket(address, before_wait, begun)


async def _open_tls(
    address: BackendAddress, before_wait: Callable[[], object] | None
) -> trio.abc.HalfCloseableStream:
    if before_wait is not None:
        before_wait()
    return await start_backend_tls(await _open_socket(address, None), address)


async def _open_socket(
    address: BackendAddress,
    before_wait: Callable[[], object] | None,
    begun: tuple[socket.socket, int] | None = None,
) -> trio.abc.HalfCloseableStream:
    try:
        if address.scheme != "unix" and is_ip_literal_cached(address.host):
            return await open_tcp_to_ip(
                address.host, address.port, before_wait=before_wait, begun=begun
            )
        if before_wait is not None:
            before_wait()
        if address.scheme == "unix":
            return await trio.open_unix_socket(address.unix_path)
        return await trio.open_tcp_stream(address.host, address.port)
    except OSError as error:
        raise BackendConnectFailed(
            f"cannot connect to backend {address}: {error.strerror or error}"
        ) from error


@dataclass(frozen=True, slots=True)
class BackendUpgraded:
    """A backend that switched to WebSocket, ready to be tunnelled."""

    stream: trio.abc.HalfCloseableStream
    accepted: BackendAccepted
    #: Bytes the backend sent right behind its 101 (h11's trailing data): they go to the
    #: client before anything else (h2o#1272 lost them).
    leftover: bytes
    #: Called once the WebSocket's close handshake has passed the tunnel, where the
    #: backend's stream must hear of it (``H2Channel.close_handshake_done``).
    on_close_handshake: Callable[[], None] | None = None


def connect_and_upgrade(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    limits: Limits,
    connect: ConnectBackend = open_backend_stream,
    *,
    scope: trio.CancelScope | None = None,
    connect_times: Histogram | None = None,
    head_start: HeadStart | None = None,
) -> Awaitable[BackendUpgraded]:
    """Connect to ``address`` and upgrade; the caller owns the returned stream.

    Raises BackendUnavailable, BackendTimeout, BackendProtocolError or BackendRejected;
    on any of them the backend stream is already closed.

    ``scope``: the caller's active cancel scope, with no deadline of its own, that this
    call may hold its deadlines on instead of opening a scope of its own (a cancel scope
    per tunnel cost as much as the dial's own Python code). After a timeout that scope
    stays cancelled, as trio cancels for good: the caller answers without awaiting in it.
    After a failure its deadline is back where it was; after success it still holds the
    upgrade's, which the caller replaces (a tunnel's timers) at once: each deadline move
    is a trip through trio's deadline heap.

    ``connect_times``: observes how long each connect that succeeded took.

    ``head_start``: how far the dial got before its first wait (``head_start.py``): this
    goes on from there, with the same deadlines (counted from its ``started`` and
    ``connected``) and the same errors as a dial of its own.

    Sync, returning the upgrade's own coroutine (awaited at once, as an async function
    would be): no frame of its own per new tunnel.
    """
    if scope is not None:
        return _connect_and_upgrade(
            address, upgrade, key, request, limits, connect, scope, connect_times, head_start
        )
    return _in_own_scope(address, upgrade, key, request, limits, connect, connect_times, head_start)


async def _in_own_scope(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    limits: Limits,
    connect: ConnectBackend,
    connect_times: Histogram | None,
    head_start: HeadStart | None,
) -> BackendUpgraded:
    with trio.CancelScope() as own_scope:
        return await _connect_and_upgrade(
            address, upgrade, key, request, limits, connect, own_scope, connect_times, head_start
        )
    # Only the scope's own deadline cancels it, and that ends in BackendTimeout.
    raise AssertionError("connect_and_upgrade's scope swallowed its result")  # pragma: no cover


async def _connect_and_upgrade(
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    limits: Limits,
    connect: ConnectBackend,
    scope: trio.CancelScope,
    connect_times: Histogram | None,
    head: HeadStart | None,
) -> BackendUpgraded:
    """:func:`connect_and_upgrade` with both limits on ``scope``'s deadline, in turn."""
    previous_deadline = scope.deadline
    started = trio.current_time() if head is None else head.started
    deadline = started + limits.connect_timeout_s
    connect_deadline = deadline

    def hold_to_connect_timeout() -> None:
        scope.deadline = connect_deadline

    stream: trio.abc.HalfCloseableStream | None = None
    try:
        if head is not None and head.stream is not None:
            stream, connected = head.stream, head.connected  # (its connect time observed)
        else:
            if connect is open_backend_stream:
                # A deadline only matters if the connect waits, and a loopback one never
                # does: each deadline set is a trip through trio's deadline heap.
                stream = await open_backend_stream(
                    address,
                    before_wait=hold_to_connect_timeout,
                    begun=head.begun if head is not None else None,
                )
            else:
                hold_to_connect_timeout()
                stream = await connect(address)
            stream = lean_backend(stream)
            connected = trio.current_time()
            if connect_times is not None:
                connect_times.observe(connected - started)
        deadline = scope.deadline = connected + limits.handshake_timeout_s
        try:
            accepted, leftover = await _upgrade(
                stream, address, upgrade, key, request, limits, head
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return BackendUpgraded(stream=stream, accepted=accepted, leftover=leftover)
    except BaseException as error:
        scope.deadline = previous_deadline
        # Only our own deadline becomes a timeout; any other cancellation (a client reset,
        # a shutdown) goes on to the scope that was cancelled.
        if not (_only_cancelled(error) and trio.current_time() >= deadline):
            raise
    if stream is None:
        what = "accept and complete the TLS handshake" if address.scheme == "https" else "accept"
        raise BackendConnectTimeout(
            f"backend {address} did not {what} within {limits.connect_timeout_s}s"
        )
    raise BackendTimeout(
        f"backend {address} did not answer the upgrade within {limits.handshake_timeout_s}s"
    )


def _only_cancelled(error: BaseException) -> bool:
    """``trio.Cancelled``, or a group of nothing else (a nursery's, as a cancel scope sees it)."""
    if isinstance(error, trio.Cancelled):
        return True
    return isinstance(error, BaseExceptionGroup) and error.split(trio.Cancelled)[1] is None


async def _upgrade(
    stream: trio.abc.HalfCloseableStream,
    address: BackendAddress,
    upgrade: UpgradeRequest,
    key: bytes,
    request: WebSocketRequest,
    limits: Limits,
    head_start: HeadStart | None = None,
) -> tuple[BackendAccepted, bytes]:
    """Send the upgrade, read the answer; a plain ``101`` (after any other ``1xx``) is read
    here, everything else by h11 (see upgrade_wire.py). With ``head_start``, only what it
    did not send is sent, and what it read is read first (its error met first)."""
    try:
        if head_start is None:
            await stream.send_all(upgrade.data)
            buffer = bytearray()
        else:
            if head_start.error is not None:
                raise head_start.error
            if head_start.unsent:
                await stream.send_all(head_start.unsent)
            buffer = bytearray(head_start.received)
        searched = 0  # how far the buffer holds no head's end (a slow sender costs O(n))
        known = known_101(address)
        first = True  # no head read yet
        while True:
            if known is not None and first and (answer := known.match(buffer, key, request)):
                return answer
            head = read_interim_head(buffer, limits.max_header_list_bytes, searched)
            if head is None:
                searched = max(0, len(buffer) - 2)
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    raise BackendUnavailable("backend closed the connection without answering")
                buffer += data
                continue
            if isinstance(head, InterimHead):
                if head.status == 101:
                    accepted = check_backend_101(head.headers, key, request)
                    if first:
                        remember_101(address, bytes(buffer[: head.size]), key, request, accepted)
                    return accepted, bytes(buffer[head.size :])
                del buffer[: head.size]
                searched = 0
                first = False
                continue  # other 1xx (100, 103) are informational only
            return await _upgrade_with_h11(stream, upgrade, bytes(buffer), key, request, limits)
    except (trio.BrokenResourceError, OSError) as error:
        raise BackendUnavailable(f"backend connection broke during the upgrade: {error}") from error


async def _upgrade_with_h11(
    stream: trio.abc.HalfCloseableStream,
    upgrade: UpgradeRequest,
    received: bytes,
    key: bytes,
    request: WebSocketRequest,
    limits: Limits,
) -> tuple[BackendAccepted, bytes]:
    """Let h11 read the answer from ``received`` on: a rejection, or a head it must judge."""
    connection = h11.Connection(h11.CLIENT, max_incomplete_event_size=limits.max_header_list_bytes)
    try:
        # The request went out already; h11 needs to have "sent" it to expect the answer.
        connection.send(
            h11.Request(method=b"GET", target=upgrade.target, headers=list(upgrade.headers))
        )
        connection.send(h11.EndOfMessage())
        connection.receive_data(received)
        while True:
            event = await _next_event(connection, stream)
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                accepted = check_backend_accept(event, key, request)
                leftover, _closed = connection.trailing_data
                return accepted, bytes(leftover)
            if isinstance(event, h11.Response):
                await _raise_rejection(connection, stream, event, limits)
            # Other 1xx (100, 103) are informational only: keep reading.
    except h11.ProtocolError as error:
        raise BackendProtocolError(f"backend's answer is not valid HTTP/1.1: {error}") from error


async def _next_event(connection: h11.Connection, stream: trio.abc.ReceiveStream) -> h11.Event:
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(READ_SIZE)
            if not data and connection.their_state is h11.SEND_RESPONSE:
                raise BackendUnavailable("backend closed the connection without answering")
            connection.receive_data(bytes(data))
            continue
        if event is h11.PAUSED:
            raise BackendProtocolError("backend switched protocols without a valid 101")
        assert not isinstance(event, type)
        return event


async def _raise_rejection(
    connection: h11.Connection,
    stream: trio.abc.ReceiveStream,
    response: h11.Response,
    limits: Limits,
) -> None:
    """Read the body of a non-101 answer (bounded) and raise it as BackendRejected."""
    body = bytearray()
    while True:
        event = await _next_event(connection, stream)
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limits.max_rejection_body_bytes:
                raise BackendProtocolError(
                    f"backend's {response.status_code} answer has a body over "
                    f"max_rejection_body_bytes={limits.max_rejection_body_bytes}"
                )
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if 200 <= response.status_code < 300:
        # A 2xx to an extended CONNECT means "tunnel open" (RFC 9113 §8.5): relaying the
        # backend's page as one would feed HTML to the client as WebSocket frames.
        raise BackendProtocolError(
            f"backend answered {response.status_code} without switching to WebSocket"
        )
    headers = [(name.lower(), value) for name, value in response.headers]
    raise BackendRejected(
        response.status_code,
        list(end_to_end_response_headers(headers, drop=frozenset({b"content-length"}))),
        bytes(body),
    )
