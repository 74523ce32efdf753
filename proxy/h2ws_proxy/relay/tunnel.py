"""Move bytes both ways between a client stream and a backend stream, unchanged.

The tunnel knows nothing of HTTP/2, HTTP/1.1 or WebSocket: both ends are
``trio.abc.HalfCloseableStream``. The HTTP/2 side is an :class:`H2TunnelStream`, whose
``receive_some`` returns flow-control credit only when the tunnel comes back for more, that
is after the previous chunk was written to the backend; so memory per tunnel is bounded by
the stream window plus one read, whatever the peers do.

Flow:

1. Bytes the backend sent behind its 101 go to the client first, and bytes the client sent
   behind its request go to the backend first (classic lost-bytes bugs).
2. Two pumps run: ``receive_some`` → ``send_all`` until EOF, then ``send_eof`` on the other
   side (half-close is carried: END_STREAM ↔ TCP FIN).
3. The tunnel ends when both pumps finished (clean: no reset follows the END_STREAMs), or
   when one side breaks: the other side is then aborted at once (client reset → backend
   socket closed; backend reset → the client stream is reset with CONNECT_ERROR).
4. With an idle timeout, a tunnel that moved no byte either way for that long is aborted.
5. Once one side has ended, the other gets ``half_closed_timeout_s`` of silence to end too
   (HAProxy's ``timeout client-fin``/``server-fin``): a WebSocket is over once its closing
   handshake is done and the backend closed, but some clients never end their side.

A failed write to the backend does not end the tunnel by itself: the backend may have
closed after sending its last bytes (its WebSocket Close), which are still on their way to
a slow client. The upward pump then only drains the client, and the downward pump decides:
the backend's EOF ends the tunnel cleanly, a reset aborts it. Resetting the client after a
clean close would also make browsers stop using WebSocket over HTTP/2 for the origin
(aspnetcore#42328).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from h2ws_proxy.transport.capabilities import PollableSocket, as_pollable
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.wakeup import Wakeup

#: Largest read from either side. 64 KiB matches the common socket buffer and h2's window.
READ_SIZE = 65536
#: How late the idle and half-closed timeouts may fire (see ``_Relay``): the price of not
#: moving a trio deadline on every message.
TIMER_SLACK_S = 0.5
#: After a failed write to the backend, how long the tunnel waits for the backend's end
#: (its EOF, after its last bytes reach a slow client) before calling it a failure.
BACKEND_GONE_LINGER_S = 10.0
#: The downward pump task's name (trio's task tree, py-spy).
_PUMP_DOWN_NAME = "h2ws_proxy.relay.tunnel.pump_down"


class TunnelEnd(enum.Enum):
    """How a tunnel ended, for its log line and metrics."""

    #: Both sides ended their stream; nothing was reset.
    CLEAN = "clean"
    #: The client reset its stream or its connection went away.
    CLIENT_ABORTED = "client_aborted"
    #: The backend reset or failed mid-tunnel.
    BACKEND_ABORTED = "backend_aborted"
    #: No bytes either way for the idle timeout.
    IDLE_TIMEOUT = "idle_timeout"
    #: One side had ended; the other sent nothing more and did not end within the
    #: half-closed timeout (Firefox leaves its CONNECT stream open after a WebSocket close).
    HALF_CLOSED_TIMEOUT = "half_closed_timeout"
    #: The proxy cancelled it (shutdown, connection error).
    CANCELLED = "cancelled"


@dataclass(slots=True)
class TunnelStats:
    """Counters a tunnel keeps while it runs."""

    bytes_up: int = 0  # client → backend
    bytes_down: int = 0  # backend → client
    end: TunnelEnd = TunnelEnd.CANCELLED
    last_activity: float = 0.0


class _SideBroke(Exception):
    """One side of the tunnel failed; ``side`` is ``"client"`` or ``"backend"``."""

    def __init__(self, side: str) -> None:
        super().__init__(side)
        self.side = side


@dataclass(slots=True)
class _Relay:
    """The state both pumps share: one cancel scope for the whole tunnel.

    The idle and half-closed timeouts are that scope's deadline, moved on as bytes flow,
    rather than watcher tasks: a task and its frames cost more memory per idle tunnel than
    anything else here. Moving a trio deadline is a heap operation, though, and doing it per
    message cost a quarter of the proxy's CPU per message (bench/cpu_per_message.py); so the
    deadline moves only once the last activity is ``slack`` past the last move, and is set
    ``slack`` late. A timer thus fires between its timeout and timeout + slack after the
    last byte moved: never early, at most ``TIMER_SLACK_S`` late.
    """

    client: trio.abc.HalfCloseableStream
    backend: trio.abc.HalfCloseableStream
    stats: TunnelStats
    scope: trio.CancelScope
    #: The client stream as one that takes bytes synchronously, if it is one.
    pushable: PushableClient | None = None
    #: The backend stream as a socket that never waits, if it is one.
    backend_socket: PollableSocket | None = None
    idle_timeout_s: float = 0.0
    half_closed_timeout_s: float = 0.0
    #: The backend ended its side cleanly (EOF) and everything it sent was delivered.
    backend_done: bool = False
    #: Since when one direction has ended (None while both are open).
    half_closed_since: float | None = None
    #: How the tunnel ends if the scope's deadline is what stops it.
    timer_end: TunnelEnd = TunnelEnd.IDLE_TIMEOUT
    #: ``stats.last_activity`` when the deadline was last set.
    armed_at: float = -math.inf

    def activity(self) -> None:
        """Bytes moved: both timers start over (the deadline follows within the slack)."""
        now = self.stats.last_activity = trio.current_time()
        if now - self.armed_at >= TIMER_SLACK_S:
            self._arm()

    def half_closed(self) -> None:
        """One direction ended cleanly: from now on the other one is on a timer."""
        if self.half_closed_since is None:
            self.half_closed_since = trio.current_time()
            self._arm()

    def _arm(self) -> None:
        self.armed_at = self.stats.last_activity
        deadline, end = math.inf, TunnelEnd.IDLE_TIMEOUT
        if self.idle_timeout_s > 0:
            deadline = self.stats.last_activity + self.idle_timeout_s
        if self.half_closed_since is not None and self.half_closed_timeout_s > 0:
            since = max(self.half_closed_since, self.stats.last_activity)
            if since + self.half_closed_timeout_s < deadline:
                deadline, end = since + self.half_closed_timeout_s, TunnelEnd.HALF_CLOSED_TIMEOUT
        self.scope.deadline, self.timer_end = deadline + TIMER_SLACK_S, end

    def settle_end(self, *, cancelled: bool) -> None:
        """Once the tunnel has stopped (``cancelled``: by its scope's cancellation): how it
        ended, unless a failure said so.

        Not a failure: both directions finished (clean), a timer fired (its end), or the
        caller cancelled the scope (stays CANCELLED).
        """
        if self.stats.end is TunnelEnd.CANCELLED:
            if not cancelled:
                self.stats.end = TunnelEnd.CLEAN
            elif trio.current_time() >= self.scope.deadline:
                self.stats.end = self.timer_end

    def fail(self, side: str) -> None:
        if self.stats.end is TunnelEnd.CANCELLED:
            self.stats.end = (
                TunnelEnd.CLIENT_ABORTED if side == "client" else TunnelEnd.BACKEND_ABORTED
            )
        self.scope.cancel()


async def run_tunnel(
    client: trio.abc.HalfCloseableStream,
    backend: trio.abc.HalfCloseableStream,
    *,
    client_leftover: bytes = b"",
    backend_leftover: bytes = b"",
    idle_timeout_s: float = 0.0,
    half_closed_timeout_s: float = 0.0,
    stats: TunnelStats | None = None,
    scope: trio.CancelScope | None = None,
    poller: BackendPoller | None = None,
    pushable: PushableClient | None = None,
) -> TunnelStats:
    """Relay until both sides are done or one breaks; always closes the backend stream.

    Never raises for peer behaviour: how it ended is in the returned stats. The caller's
    cancellation (shutdown) ends it as CANCELLED. The caller closes the client stream,
    choosing how from ``stats.end`` (an HTTP/2 stream is reset with a code that says why).

    ``scope``: a cancel scope the caller has entered around this call, that the tunnel may
    keep its timers on instead of entering a scope of its own (the HTTP/2 frontend's
    stream scope, which already held the backend dial: one scope per tunnel, not two);
    whatever deadline it has (the dial's) is replaced. Cancelling it ends the tunnel as
    CANCELLED; the ``Cancelled`` then goes on to that scope's ``with``, so read ``stats``
    (pass them in) for how it ended.

    ``pushable``: the client stream again, as one that takes bytes synchronously (an HTTP/2
    stream), where it is one. With it, a ``poller``, a ``scope`` and a backend socket, the
    backend → client direction runs without a task of its own (:class:`_PolledDownward`):
    one task per tunnel instead of two; and the client's bytes may be forwarded to the
    backend by the task that receives them (see ``_offer_forwarder``).
    """
    # The caller may pass ``stats`` so that counters survive its own cancellation.
    stats = stats if stats is not None else TunnelStats()
    backend_socket = as_pollable(backend)
    try:
        if (
            poller is not None
            and scope is not None
            and backend_socket is not None
            and pushable is not None
        ):
            await _run_polled(
                _Relay(
                    client,
                    backend,
                    stats,
                    scope,
                    pushable,
                    backend_socket,
                    idle_timeout_s=idle_timeout_s,
                    half_closed_timeout_s=half_closed_timeout_s,
                ),
                poller,
                client_leftover=client_leftover,
                backend_leftover=backend_leftover,
            )
            return stats
        if scope is not None:
            scope.deadline = math.inf  # the pumps' nursery holds the timers here
        async with trio.open_nursery() as pumps:
            relay = _Relay(
                client,
                backend,
                stats,
                pumps.cancel_scope,
                pushable,
                backend_socket,
                idle_timeout_s=idle_timeout_s,
                half_closed_timeout_s=half_closed_timeout_s,
            )
            relay.activity()
            # A constant name: trio would otherwise build one string per task.
            pumps.start_soon(_pump, relay, backend_leftover, False, name=_PUMP_DOWN_NAME)
            # The upward pump runs in this task rather than a third one: an idle tunnel
            # then costs two parked tasks, not three (a task is ~1.5 KiB with its frames).
            await _pump(relay, client_leftover, True)
        relay.settle_end(cancelled=pumps.cancel_scope.cancelled_caught)
    finally:
        if backend_socket is not None:
            backend_socket.close_now()  # two cancel scopes fewer than the line below
        else:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(backend)
    return stats


#: What a stream raises when its peer or its transport is gone.
_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class PushableClient(Protocol):
    """A client stream that takes bytes synchronously (see ``H2TunnelStream.send_now``)."""

    def send_now(self, data: memoryview) -> int: ...
    def end_now(self) -> None: ...
    def wake_receiver(self) -> None: ...
    def set_on_writable(self, callback: Callable[[], None] | None) -> None: ...
    def backlogged(self) -> bool: ...
    def call_when_drained(self, callback: Callable[[], None]) -> None: ...
    def set_forwarder(
        self, forward: Callable[[bytes], int] | None, end: Callable[[], bool] | None = None
    ) -> None: ...


async def _run_polled(
    relay: _Relay,
    poller: BackendPoller,
    *,
    client_leftover: bytes,
    backend_leftover: bytes,
) -> None:
    """``run_tunnel`` with the downward direction driven by ``poller`` (this task: upward);
    ``relay`` has a pushable client and a backend socket, and runs on the caller's scope."""
    assert relay.pushable is not None
    assert relay.backend_socket is not None
    relay.activity()
    downward = _PolledDownward(
        relay, relay.pushable, relay.backend_socket, poller, backend_leftover
    )
    try:
        downward.start()
        await _pump(relay, client_leftover, True, downward)
        while not downward.done:
            await downward.finished.wait()
    except trio.Cancelled:
        relay.settle_end(cancelled=True)
        raise
    finally:
        downward.stop()
    relay.settle_end(cancelled=False)


class _PolledDownward:
    """Backend → client for one tunnel, run by the connection's :class:`BackendPoller`.

    The same steps as ``_pump`` downward, as callbacks: the backend is readable → read one
    chunk, hand it to the client (``send_now``); the client's window is shut or its
    connection is backlogged → stop watching the backend until the client's stream says
    it may take more (``set_on_writable``, ``call_when_drained``); the backend's EOF →
    END_STREAM; an error on either side fails the tunnel. At most one chunk (``READ_SIZE``)
    waits here, as at most one waits in a pump.
    """

    __slots__ = (
        "_awaiting_drain",
        "_backend",
        "_client",
        "_fd",
        "_paused",
        "_pending",
        "_poller",
        "_relay",
        "done",
        "finished",
        "wake_client_receiver",
    )

    def __init__(
        self,
        relay: _Relay,
        client: PushableClient,
        backend: PollableSocket,
        poller: BackendPoller,
        leftover: bytes,
    ) -> None:
        self._relay = relay
        self._client = client
        self._backend = backend
        self._poller = poller
        self._fd = backend.fileno()
        self._pending: memoryview | None = memoryview(leftover) if leftover else None
        self._paused = True
        self._awaiting_drain = False
        #: The backend's end was delivered, or this direction failed.
        self.done = False
        self.finished = Wakeup()
        #: The client's end was passed on by the reader (``_offer_forwarder``): the
        #: upward pump sleeps until this direction finishes.
        self.wake_client_receiver = False

    def start(self) -> None:
        self._client.set_on_writable(self._resume)
        self._poller.register(
            self._fd, self._on_readable, on_error=lambda: self._fail("backend"), paused=True
        )
        self._resume()  # the backend's leftover first, then its socket

    def stop(self) -> None:
        self._client.set_on_writable(None)
        self._poller.unregister(self._fd)
        self._pending = None
        self.done = True

    def _on_readable(self) -> None:
        relay = self._relay
        if self._paused or self.done or relay.scope.cancel_called:
            self._pause()
            return
        try:
            data = self._backend.receive_nowait(READ_SIZE)
        except _STREAM_ERRORS:
            self._fail("backend")
            return
        if data is None:
            return  # woken for nothing (another reader took it, or a spurious event)
        if not data:
            self._backend_ended()
            return
        relay.activity()
        self._pending = memoryview(data)
        if not self._flush():
            self._pause()

    def _flush(self) -> bool:
        """Hand on what is pending: True if all went and the client can take more now."""
        pending = self._pending
        if pending is not None:
            try:
                sent = self._client.send_now(pending)
            except _STREAM_ERRORS:
                self._fail("client")
                return False
            self._relay.stats.bytes_down += sent
            if sent < len(pending):
                self._pending = pending[sent:]
                return False  # the window is shut: ``_resume`` comes with the next credit
            self._pending = None
        if self._client.backlogged():
            if not self._awaiting_drain:
                self._awaiting_drain = True
                self._client.call_when_drained(self._drained)
            return False
        return True

    def _drained(self) -> None:
        self._awaiting_drain = False
        self._resume()

    def _resume(self) -> None:
        if not self._paused or self.done or self._relay.scope.cancel_called:
            return
        if self._flush():
            self._paused = False
            self._poller.resume(self._fd)

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._poller.pause(self._fd)

    def _backend_ended(self) -> None:
        """The backend's EOF: END_STREAM to the client (``_end_down``)."""
        self._pause()
        relay = self._relay
        relay.backend_done = True
        try:
            self._client.end_now()
        except _STREAM_ERRORS:
            self._fail("client")
            return
        relay.half_closed()
        self._finish()

    def _fail(self, side: str) -> None:
        self._pause()
        self._finish()
        self._relay.fail(side)

    def _finish(self) -> None:
        self.done = True
        self.finished.set()
        if self.wake_client_receiver:
            self._client.wake_receiver()  # asleep since the reader passed its end on


async def _pump(
    relay: _Relay, leftover: bytes, upward: bool, downward: _PolledDownward | None = None
) -> None:
    """One direction: send ``leftover``, copy until the source's EOF, then end the sink.

    The copy loop is inline, not in helpers: a parked pump's chain of coroutine frames is
    most of an idle tunnel's memory, so the wait for the next read is one frame deep here.
    """
    if upward:
        source, sink, source_side, sink_side = relay.client, relay.backend, "client", "backend"
    else:
        source, sink, source_side, sink_side = relay.backend, relay.client, "backend", "client"
    data: bytes | bytearray = leftover
    forwards = upward and _offer_forwarder(relay, downward)
    try:
        try:
            while True:
                if data:
                    try:
                        await sink.send_all(data)
                    except _STREAM_ERRORS:
                        raise _SideBroke(sink_side) from None
                    if upward:
                        relay.stats.bytes_up += len(data)
                    else:
                        relay.stats.bytes_down += len(data)
                    # Don't hold the last chunk (up to READ_SIZE) while the tunnel idles.
                    data = b""
                try:
                    data = await source.receive_some(READ_SIZE)
                except _STREAM_ERRORS:
                    raise _SideBroke(source_side) from None
                if not data:
                    break
                relay.activity()
        finally:
            if forwards and relay.pushable is not None:
                relay.pushable.set_forwarder(None)
        await (_end_up if upward else _end_down)(relay)
    except _SideBroke as broke:
        if upward and broke.side == "backend":
            await _backend_stopped_taking(relay)
        else:
            relay.fail(broke.side)


def _offer_forwarder(relay: _Relay, downward: _PolledDownward | None) -> bool:
    """Let a client stream fed by another task forward to the backend itself (see below).

    An HTTP/2 stream's bytes arrive in the frontend's reader task; handing them to the
    backend socket right there, while this pump waits anyway, saves a task wake-up per
    message. The forwarder only sends what the kernel takes at once; the pump still does
    everything else (the rest of a message, waiting for the backend, EOF, errors). A send
    error is left for the pump to meet on its own next send.

    With the backend → client direction on the poller (``downward``), the client's
    END_STREAM is passed on there too, while that direction still runs: the FIN goes to
    the backend and the half-closed timer starts, as ``_end_up`` would, and this task
    sleeps on until ``downward`` finishes and wakes it (one wake-up per tunnel fewer). A
    FIN that fails is left to the pump, which meets the error itself.
    """
    client, backend = relay.pushable, relay.backend_socket
    if client is None or backend is None:
        return False
    stats = relay.stats

    def forward(data: bytes) -> int:
        # Never called once the tunnel's scope is cancelled (a timer fired, a side failed):
        # the pump's wait is aborted then (see set_forwarder), and the pump decides.
        try:
            sent = backend.send_nowait(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return 0
        if sent:
            stats.bytes_up += sent
            relay.activity()
        return sent

    def end() -> bool:
        if downward is None or downward.done:
            return False  # the pump ends the tunnel: it must wake
        try:
            backend.end_now()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        relay.half_closed()
        downward.wake_client_receiver = True
        return True

    client.set_forwarder(forward, end)
    return True


async def _end_down(relay: _Relay) -> None:
    """The backend ended its side: END_STREAM to the client."""
    relay.backend_done = True
    await _send_eof(relay.client, "client")
    relay.half_closed()


async def _end_up(relay: _Relay) -> None:
    """The client ended its side: a FIN to the backend."""
    try:
        if relay.backend_socket is not None:
            _end_now(relay.backend_socket, "backend")  # the last receive was the checkpoint
        else:
            await _send_eof(relay.backend, "backend")
    except _SideBroke:
        await _backend_stopped_taking(relay)
        return
    relay.half_closed()


async def _backend_stopped_taking(relay: _Relay) -> None:
    try:
        await _drain_client(relay)
    except _SideBroke as broke:
        relay.fail(broke.side)


async def _drain_client(relay: _Relay) -> None:
    """The backend takes no more bytes (it closed or reset); drain the client until it ends.

    What the backend already sent is still delivered by the other pump, which also decides
    how the tunnel ended. Draining is not activity (the idle timeout still runs), and it is
    bounded: if the backend's end has not shown up by then, the backend failed.
    """
    with trio.move_on_after(BACKEND_GONE_LINGER_S) as linger:
        while await _receive(relay.client, "client"):
            pass
    if not linger.cancelled_caught:
        return
    if not relay.backend_done:
        raise _SideBroke("backend")
    while await _receive(relay.client, "client"):  # the idle timeout bounds this one
        pass


async def _send_eof(stream: trio.abc.HalfCloseableStream, side: str) -> None:
    try:
        await stream.send_eof()
    except _STREAM_ERRORS:
        raise _SideBroke(side) from None


def _end_now(stream: PollableSocket, side: str) -> None:
    try:
        stream.end_now()
    except _STREAM_ERRORS:
        raise _SideBroke(side) from None


async def _receive(stream: trio.abc.ReceiveStream, side: str) -> bytes | bytearray:
    try:
        return await stream.receive_some(READ_SIZE)
    except _STREAM_ERRORS:
        raise _SideBroke(side) from None
