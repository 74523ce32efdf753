"""The state a tunnel's two directions share: its ends, counters, timers and scope.

Rules:

* The timers (idle, half-closed, the drain's end) move lazily, never early and at most
  ``TIMER_SLACK_S`` late, plus, on a polled tunnel, the processing of the client read or
  poller round whose one clock reading its messages share (see :class:`Relay`). They are
  kept either on the connection's
  :class:`~h2ws_proxy.transport.timers.ConnectionTimers` (a polled tunnel: no cancel scope
  while it idles) or as the deadline of the tunnel's cancel scope (the pumps' nursery).
* :meth:`Relay.cancel` ends the tunnel, whoever calls it (a timer, a failed side, the
  frontend through the stream's ``scope``): it cancels the scope the tunnel's task is in, or,
  where the task waits idle outside any scope (a polled tunnel), wakes it to stop.
* A failure of one side ends the tunnel as that side's abort, unless it had ended already.
* Each direction is a :class:`~h2ws_proxy.relay.legs.Leg` that sees its WebSocket frames;
  how the tunnel ended is settled with them: a side that ended first without a Close frame
  aborted (the other side's endpoint sees 1006: backend or client alike), a tunnel the
  drain closed with both sides' Close frames seen was drained, and each side's close code
  goes into the stats.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from h2ws_proxy.relay.legs import Leg
from h2ws_proxy.relay.outcome import RelayEnd, RelayStats, Side
from h2ws_proxy.relay.tunnel_ports import ClosingDownward, TunnelEnd
from h2ws_proxy.relay.tunnel_ports import PushableClient as PushableClient  # front_side.py
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.timers import ConnectionTimers

#: Largest read from either side. 64 KiB matches the common socket buffer and h2's window.
READ_SIZE = 65536
#: How late the idle and half-closed timeouts may fire (see ``Relay``): the price of not
#: moving a trio deadline on every message.
TIMER_SLACK_S = 0.5
#: ``Relay.armed_length`` of a deadline armed at a point in time (``arm_at``).
_AT = -1.0


class SideBroke(Exception):
    """One side of the tunnel failed (``reason``: its stream's error, if one was raised)."""

    def __init__(self, side: Side, reason: str = "") -> None:
        super().__init__(side)
        self.side = side
        self.reason = reason


@dataclass(slots=True, eq=False)
class Relay:
    """The state both pumps share, and the tunnel's timer.

    The idle and half-closed timeouts are one deadline, moved on as bytes flow, rather than
    watcher tasks: a task and its frames cost more memory per idle tunnel than anything
    else here. Moving it costs (a heap operation for a scope's deadline, a queue move on
    the connection's timers), too much per message; so the deadline moves only once the
    last activity is ``slack`` past the last move, and is set ``slack`` late. A timer thus
    fires between its timeout and timeout + slack after the last byte moved: never early,
    at most ``TIMER_SLACK_S`` late.

    With ``timers`` the deadline is on the connection's timers (this object is the
    :class:`~h2ws_proxy.transport.timers.Timer`); a queue's deadline is set from the
    current time only (its order), so a timer set from an older time (the idle one when
    the half-closed one starts) stays where it is when it comes first anyway. Without,
    it is ``scope``'s deadline. There a message reads no clock of its own: a client
    read's messages share one reading, taken after the read's first send
    (:meth:`forward_up`), and a poller round's one taken once its output went
    (``BackendPoller.moved``, :meth:`rearm`); both come after the bytes they count, so
    never early, and the deadline is late by at most that read's or round's processing.
    """

    client: trio.abc.HalfCloseableStream
    backend: trio.abc.HalfCloseableStream
    stats: RelayStats
    #: The scope the tunnel's task is in (its timers' deadline without ``timers``); None
    #: while a polled tunnel's task waits idle in no scope of its own.
    scope: trio.CancelScope | None
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
    timer_end: RelayEnd = RelayEnd.IDLE_TIMEOUT
    #: From this clock reading on, activity moves the deadline again: its last move (a
    #: reading of ``stats.last_activity``'s clock) plus ``TIMER_SLACK_S``.
    rearm_from: float = -math.inf
    #: Client → backend and backend → client, as WebSocket frames.
    up: Leg = field(default_factory=lambda: Leg(upward=True))
    down: Leg = field(default_factory=lambda: Leg(upward=False))
    #: The drain's Close wait: the tunnel ends by then whatever else happens.
    close_by: float = math.inf
    #: The drain put (or wanted to put) its Close into this tunnel.
    drain_closed: bool = False
    #: The backend ended its side first, without having sent a Close frame.
    backend_vanished: bool = False
    #: The client ended its side first, without having sent a Close frame.
    client_vanished: bool = False
    #: The downward direction where it has no task (``PolledDownward``): it puts our Close
    #: toward the client itself; None: the closer sends it on the client stream.
    downward: ClosingDownward | None = None
    #: The drain's closer task for this tunnel, cancelled when the tunnel ends.
    closer: trio.CancelScope | None = None
    #: Called once both Close frames have passed whole, where the backend wants to know
    #: (an HTTP/2 backend stream: ``run_tunnel``'s ``on_close_handshake``).
    on_close_handshake: Callable[[], None] | None = None
    #: The connection's timers, where the deadline is kept on them (see the class).
    timers: ConnectionTimers | None = None
    #: The armed deadline there (``Timer.deadline``; set by the timers only).
    deadline: float = math.inf
    #: The queue it is armed in there: a timeout length, ``_AT`` (``arm_at``), or 0.0.
    armed_length: float = 0.0
    #: :meth:`cancel` was called (a stream's scope says so too: see ``Cancellable``).
    cancel_called: bool = False
    #: The deadline on ``timers`` fired.
    timer_fired: bool = False
    #: A polled tunnel that left its task while idle: what the stream's wake-ups call
    #: (``resume``; a module's function, not a closure), and the front end's end.
    resumer: Callable[[Relay], None] | None = None
    on_end: TunnelEnd | None = None
    #: With ``timers``: the connection's backend poller, whose ``read_time`` is the clock
    #: reading of the client read going on, shared by the messages of the read (see
    #: :meth:`forward_up`); None: ``activity`` reads the clock per message.
    poller: BackendPoller | None = None
    #: ``backend_socket``'s socket (``PollableSocket.raw_socket``), whose own ``send`` and
    #: ``recv`` the polled directions call once per message: no stream's call around them.
    backend_raw: socket.socket | None = None

    # ---- the upward forwarder (``tunnel._offer_forwarder``), on the reader's task ----

    def forward_up(self, data: bytes) -> int:
        """The client's ``data``, sent to the backend as far as it takes it without
        waiting: how much went. Only while a pump waits with nothing held (see
        ``H2Stream.set_forwarder``), never once the scope is cancelled."""
        backend, up = self.backend_raw, self.up
        if backend is None or up.draining:
            return 0  # the pump passes the rest of the frame, then our Close
        try:
            sent = backend.send(data)
        except OSError:
            # Full (``BlockingIOError``), or ended, closed or broken: nothing went, and the
            # pump meets the stream's state on its own next send.
            return 0
        if sent:
            up.feed(data if sent == len(data) else data[:sent])
            self.stats.bytes_up += sent
            poller = self.poller
            if poller is not None:
                # ``activity`` with one clock reading per client read, taken after its first
                # send: every byte of the read came before it, so a deadline set from it is
                # never early, and late by at most the read's processing (the timers' rule
                # for arms that share a reading; a lean request's clock is its read's too).
                now = poller.read_time
                if now < 0.0:
                    now = poller.read_time = poller.now()
                if now >= self.rearm_from:
                    self.stats.last_activity = now
                    self.arm_fresh(now)
            else:
                self.activity()
        return sent

    def resume(self) -> None:
        """The client's stream would have woken the tunnel's task, which left (see
        ``tunnel_polled.py``)."""
        if self.resumer is not None:
            self.resumer(self)

    def pass_client_end(self) -> bool:
        """The client's END_STREAM: a FIN to the backend, while the polled downward
        direction still runs (True); False: the pump must wake and end the tunnel (or wait
        for our Close)."""
        downward, backend = self.downward, self.backend_socket
        if downward is None or backend is None or downward.done or self.up.sending is not None:
            return False
        try:
            backend.end_now()
        except STREAM_GONE:
            return False
        self.client_ended()
        if self.half_closed_since is None:  # (``half_closed``'s own test, without its call)
            self.half_closed()
        downward.wake_client_receiver = True
        return True

    def close_handshake_passed(self) -> None:
        """After a send: if both sides' Close frames have now passed whole, say so once."""
        up, down = self.up, self.down
        if (
            up.close_code is not None
            and down.close_code is not None
            and up.at_boundary
            and down.at_boundary
            and self.on_close_handshake is not None
        ):
            callback, self.on_close_handshake = self.on_close_handshake, None
            callback()

    def activity(self) -> None:
        """Bytes moved: both timers start over (the deadline follows within the slack)."""
        timers = self.timers
        if timers is not None:
            now = self.stats.last_activity = timers.now()  # trio.current_time(), in one call
            if now >= self.rearm_from:
                self.arm_fresh(now)
        else:
            now = self.stats.last_activity = trio.current_time()
            if now >= self.rearm_from:
                self._arm()

    def rearm(self, now: float) -> None:
        """Activity seen before ``now`` (a clock reading taken after it: a poller round's,
        ``BackendPoller.moved``), where ``now`` reached ``rearm_from``: the deadline moves
        as :meth:`activity` moves it. Nothing once the polled tunnel was closed (its timer
        is disarmed for good)."""
        if self.downward is not None:
            self.stats.last_activity = now
            self.arm_fresh(now)

    def half_closed(self) -> None:
        """One direction ended cleanly: from now on the other one is on a timer."""
        if self.half_closed_since is None:
            now = self.half_closed_since = trio.current_time()
            if self.timers is None:
                self._arm()
            elif self.half_closed_timeout_s > 0:
                length = self.half_closed_timeout_s + TIMER_SLACK_S
                if now + length < self.deadline:  # else the one armed comes first anyway
                    self._arm_length(length, now, RelayEnd.HALF_CLOSED_TIMEOUT)

    def arm_fresh(self, now: float) -> None:
        """On the connection's timers, from ``now``: the earlier of the idle and the
        half-closed timeout (both start over at activity), or the drain's end before them."""
        self.rearm_from = now + TIMER_SLACK_S
        length, end = math.inf, RelayEnd.IDLE_TIMEOUT
        if self.idle_timeout_s > 0:
            length = self.idle_timeout_s + TIMER_SLACK_S
        closing = self.half_closed_timeout_s + TIMER_SLACK_S
        if (
            self.half_closed_since is not None
            and self.half_closed_timeout_s > 0
            and closing < length
        ):
            length, end = closing, RelayEnd.HALF_CLOSED_TIMEOUT
        if self.close_by <= now + length:
            if self.armed_length != _AT:
                self._arm_at(self.close_by)
        elif length < math.inf:
            self._arm_length(length, now, end)

    def _arm_length(self, length: float, now: float, end: RelayEnd) -> None:
        timers = self.timers
        assert timers is not None
        armed = self.armed_length
        if armed != length:
            if armed:  # (``disarm``'s own test first: not armed on a tunnel's first arm)
                self.disarm()
            self.armed_length = length
        timers.arm(self, length, now)
        self.timer_end = end

    def _arm_at(self, deadline: float) -> None:
        timers = self.timers
        assert timers is not None
        self.disarm()
        self.armed_length = _AT
        timers.arm_at(self, deadline)
        self.timer_end = RelayEnd.CANCELLED

    def disarm(self) -> None:
        """Off the connection's timers (the tunnel ended, or the deadline moves queues)."""
        timers, length = self.timers, self.armed_length
        if timers is not None and length:
            if length == _AT:
                timers.disarm_at(self)
            else:
                timers.disarm(self, length)
            self.armed_length = 0.0

    def on_timer(self) -> None:
        """The connection's timers: the deadline passed (``timer_end`` says which)."""
        self.armed_length = 0.0
        self.timer_fired = True
        self.cancel()

    def _arm(self) -> None:
        self.rearm_from = self.stats.last_activity + TIMER_SLACK_S
        deadline, end = math.inf, RelayEnd.IDLE_TIMEOUT
        if self.idle_timeout_s > 0:
            deadline = self.stats.last_activity + self.idle_timeout_s
        if self.half_closed_since is not None and self.half_closed_timeout_s > 0:
            since = max(self.half_closed_since, self.stats.last_activity)
            if since + self.half_closed_timeout_s < deadline:
                deadline, end = since + self.half_closed_timeout_s, RelayEnd.HALF_CLOSED_TIMEOUT
        deadline += TIMER_SLACK_S
        if self.close_by <= deadline:
            deadline, end = self.close_by, RelayEnd.CANCELLED
        assert self.scope is not None
        self.scope.deadline, self.timer_end = deadline, end

    def close_for_drain(self, close_by: float) -> None:
        """The drain's Close goes into this tunnel (see going_away.py): the tunnel ends by
        ``close_by`` at the latest."""
        self.drain_closed = True
        self.close_by = close_by
        if self.timers is None:
            self._arm()
        elif close_by < self.deadline:
            self._arm_at(close_by)

    def backend_ended(self) -> None:
        """The backend's EOF came (its bytes all delivered)."""
        self.backend_done = True
        down = self.down
        if self.half_closed_since is None and down.close_code is None and down.lost is None:
            self.backend_vanished = True

    def client_ended(self) -> None:
        """The client's end came and went on to the backend (its bytes all delivered)."""
        up = self.up
        if self.half_closed_since is None and up.close_code is None and up.lost is None:
            self.client_vanished = True

    def settle_end(self, *, cancelled: bool) -> None:
        """Once the tunnel has stopped (``cancelled``: by its scope's cancellation): how it
        ended, unless a failure said so.

        Not a failure: both directions finished (clean), a timer fired (its end), or the
        caller cancelled the scope (stays CANCELLED).
        """
        if self.stats.end is RelayEnd.CANCELLED:
            if not cancelled:
                self.stats.end = RelayEnd.CLEAN
            elif self.timers is not None:
                if self.timer_fired:
                    self.stats.end = self.timer_end
            elif self.scope is not None and trio.current_time() >= self.scope.deadline:
                self.stats.end = self.timer_end

    def settle_frames(self) -> None:
        """Once the tunnel has stopped, whatever stopped it: the close codes, and what the
        frames say about how it ended (see the module's rules)."""
        stats = self.stats
        stats.client_close, stats.backend_close = self.up.close_code, self.down.close_code
        # The usual tunnel stops here: no enum compared (each look-up costs, per tunnel).
        if self.backend_vanished:
            if stats.end is RelayEnd.CLEAN:
                stats.end = RelayEnd.BACKEND_ABORTED
        elif self.client_vanished:
            if stats.end is RelayEnd.CLEAN:
                stats.end = RelayEnd.CLIENT_ABORTED
        elif self.drain_closed:
            self.up.draining = self.down.draining = False  # a late closer sends nothing
            if self.closer is not None:
                self.closer.cancel()
            if (
                stats.end in (RelayEnd.CLEAN, RelayEnd.CANCELLED)
                and stats.client_close is not None
                and stats.backend_close is not None
            ):
                stats.end = RelayEnd.DRAINED

    def fail(self, side: Side, reason: str = "") -> None:
        if self.stats.end is RelayEnd.CANCELLED:
            self.stats.end = side.aborted
            if reason:
                self.stats.broke = f"{side.value}: {reason}"
        self.cancel()

    def cancel(self) -> None:
        """End the tunnel (see the module rules); its stats say how, unless already said."""
        self.cancel_called = True
        if self.scope is not None:
            self.scope.cancel()
        elif self.pushable is not None:
            self.pushable.wake_receiver()  # it sees ``cancel_called`` on waking
