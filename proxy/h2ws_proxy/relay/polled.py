"""Backend → client without a task: a tunnel's downward direction run by readiness.

Rules:

* Used when the client stream takes bytes synchronously (:class:`PushableClient`, an
  HTTP/2 stream) and the backend is a socket of ours: the connection's
  :class:`~h2ws_proxy.transport.poller.BackendPoller` calls back when the backend is
  readable, and the tunnel costs one task instead of two (``tunnel_polled.py``).
* The same steps as a pump, as callbacks; at most one chunk (``READ_SIZE``) waits here.
* Backpressure: a shut window or a backlogged connection pauses the backend's watch until
  the client side calls back (``set_on_writable``, ``call_when_drained``).
* Frames: each chunk read is fed to the relay's downward leg; once the drain wants a Close
  toward the client, it joins the pending bytes at the first frame boundary
  (:meth:`PolledDownward.inject`, ``Leg.take``) and the backend's later bytes are dropped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from h2ws_proxy.relay.going_away import OpenTunnels
from h2ws_proxy.relay.outcome import Side
from h2ws_proxy.relay.relay_state import READ_SIZE, Relay
from h2ws_proxy.relay.tunnel_ports import Backlog, PushableClient
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller
from h2ws_proxy.transport.wakeup import Wakeup

#: The task that goes on with a tunnel's run after it idled without one.
_RESUMED_NAME = "h2ws_proxy.relay.tunnel_polled.resumed"


class PolledDownward:
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
        "_backlog",
        "_client",
        "_fd",
        "_paused",
        "_pending",
        "_poller",
        "_raw",
        "_relay",
        "_tunnels",
        "done",
        "finished",
        "wake_client_receiver",
        "watched",
    )

    def __init__(
        self,
        relay: Relay,
        client: PushableClient,
        backend: PollableSocket,
        poller: BackendPoller,
        leftover: bytes,
        tunnels: OpenTunnels | None = None,
    ) -> None:
        """``tunnels``: where the tunnel is listed from :meth:`begin` to
        :meth:`close_tunnel`, for the drain's Close."""
        self._relay = relay
        self._tunnels = tunnels
        self._client = client
        #: What ``client.backlogged()`` asks, asked directly: a call fewer per chunk.
        self._backlog: Backlog = client.connection
        self._backend = backend
        #: Its socket, whose own ``recv`` each message takes (``PollableSocket.raw_socket``):
        #: no stream's call around it. Watched only while the stream is open.
        self._raw = backend.raw_socket()
        self._poller = poller
        self._fd = backend.fileno()
        if leftover:
            relay.down.feed(leftover)
        self._pending: bytes | memoryview | None = leftover or None
        self._paused = True
        self._awaiting_drain = False
        #: The backend's end was delivered, or this direction failed.
        self.done = False
        #: Made by the waiter when it waits (``done`` is checked first: no wake-up is
        #: lost); none per tunnel that never waits for it.
        self.finished: Wakeup | None = None
        #: The client's end was passed on by the reader (``_offer_forwarder``): the
        #: upward pump sleeps until this direction finishes.
        self.wake_client_receiver = False
        #: In the poller's epoll set now (the poller's flag: ``Watcher.watched``).
        self.watched = False

    def begin(self) -> None:
        """The polled tunnel's start (``tunnel._pump`` runs it first, inside the ``try``
        whose ``finally`` calls :meth:`close_tunnel`): listed for the drain, its timers
        armed, the backend watched."""
        relay = self._relay
        if self._tunnels is not None:
            self._tunnels.add(relay)
        relay.activity()
        relay.downward = self
        self.start()

    def close_tunnel(self) -> None:
        """The polled tunnel's end, however it ended: the backend no longer watched, its
        timer disarmed, its frames settled, off the drain's list, the backend socket closed."""
        self.stop()
        relay = self._relay
        relay.disarm()
        relay.downward = None  # no cycle left for the garbage collector
        relay.settle_frames()
        if self._tunnels is not None:
            self._tunnels.discard(relay)
        self._backend.close_now()

    def start(self) -> None:
        # This object is the callback both ways (``on_readable``, ``on_error``,
        # ``client_writable``): no bound method or closure per idle tunnel.
        self._client.set_on_writable(self)
        relay = self._relay
        if self._pending is None and not relay.cancel_called and not self._client.backlogged():
            # Nothing to hand on first (``_resume`` would find so): the socket is read from
            # now on, and the watch of a tunnel's opening carries over (no ``epoll_ctl``).
            self._paused = False
            self._poller.register(self._fd, self)
        else:
            self._poller.register(self._fd, self, paused=True)
            self._resume()  # the backend's leftover first, then its socket

    def stop(self) -> None:
        """Before the backend socket is closed (``close_tunnel``), in the same turn."""
        self._client.set_on_writable(None)
        self._poller.forget_closing(self._fd)  # (the close takes it out of the epoll set)
        self._paused = True
        self._pending = None
        self.done = True

    def on_error(self) -> None:
        self._fail(Side.BACKEND)

    def on_closed(self) -> None:
        """The poller ended with the connection: the tunnel ends (cancelled)."""
        self._relay.cancel()

    def nursery(self) -> trio.Nursery | None:
        """Where the tunnel's run goes on when it must wait (``tunnel_polled.py``)."""
        return self._poller.nursery

    def spawn(self, run: Callable[..., Awaitable[object]], *args: object) -> None:
        nursery = self._poller.nursery
        assert nursery is not None
        # A constant name: trio would otherwise build one string per task.
        nursery.start_soon(run, *args, name=_RESUMED_NAME)

    def on_readable(self) -> None:
        relay = self._relay
        if self._paused or self.done or relay.cancel_called:
            self._pause()
            return
        try:
            data = self._raw.recv(READ_SIZE)
        except BlockingIOError:
            return  # woken for nothing (another reader took it, or a spurious event)
        except OSError:
            self._fail(Side.BACKEND)
            return
        if not data:
            self._backend_ended()
            return
        if relay.timers is not None:
            # The deadline moves once the round is over and its output went
            # (``BackendPoller.moved``): no clock reading per message, none before the send.
            self._poller.moved.append(relay)
        else:
            relay.activity()
        down = relay.down
        closed = down.close_code
        if down.draining:
            forward, inject = down.take(data)
            data = bytes(forward) + down.close if inject else bytes(forward)
            if not data:
                return  # dropped: our Close went already
        else:
            down.feed(data)
        # The chunk that brings the backend's Close, whole, once the client's end went to
        # the backend (its FIN): both sides are over, as nothing comes after a Close but
        # the backend's end (RFC 6455 §5.5.1). It goes with END_STREAM (one frame), and
        # the tunnel ends without a read for that EOF: the client's endpoint may close once
        # it has sent and received a Close (§7.1.1), and a FIN still to come meets a
        # socket closed with no unread bytes, so no reset.
        last = (
            closed is None
            and self.wake_client_receiver
            and down.close_code is not None
            and down.at_boundary
        )
        # ``_flush`` inline (nothing is pending here: a chunk left pending pauses the
        # reads until it went), for the message that goes whole to a client that can take
        # more: a backend message's every chunk takes it.
        client = self._client
        try:
            sent = client.send_now(data, last)
        except STREAM_GONE:
            self._fail(Side.CLIENT)
            return
        relay.stats.bytes_down += sent
        if sent < len(data):
            self._pending = memoryview(data)[sent:]  # ``_resume`` comes with the credit
            self._pause()
        elif last:
            self._backend_ended()  # (its END_STREAM went with the chunk)
        elif self._backlog.backlogged():
            self._flush()  # (nothing pending: it asks to be called when drained)
            self._pause()
        elif closed is None and down.close_code is not None:
            # This chunk brought the backend's Close: its end comes next, usually there
            # already. One more read now ends the tunnel in this round, not the poller's
            # next; once per tunnel, so data still takes turns, one chunk per round.
            self.on_readable()

    def inject(self) -> None:
        """The drain's Close toward the client, if the bytes handed on so far (and those
        pending) end at a frame boundary; else the chunk that ends the frame brings it."""
        down = self._relay.down
        if self.done or not down.may_inject_now():
            return
        down.injected = True
        pending = self._pending
        self._pending = memoryview(down.close if pending is None else bytes(pending) + down.close)
        if self._paused:
            self._resume()  # or the client's window or drain calls back, as for any bytes
        elif not self._flush():
            self._pause()

    def _flush(self) -> bool:
        """Hand on what is pending: True if all went and the client can take more now."""
        pending = self._pending
        if pending is not None:
            try:
                sent = self._client.send_now(pending)
            except STREAM_GONE:
                self._fail(Side.CLIENT)
                return False
            self._relay.stats.bytes_down += sent
            if sent < len(pending):
                self._pending = memoryview(pending)[sent:]
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
        if not self._paused or self.done or self._relay.cancel_called:
            return
        if self._flush():
            self._paused = False
            self._poller.resume(self._fd)

    #: The client's window may have grown, or its stream broke (``set_on_writable``).
    client_writable = _resume

    def _pause(self) -> None:
        if not self._paused:
            self._paused = True
            self._poller.pause(self._fd)

    def _backend_ended(self) -> None:
        """The backend's EOF: END_STREAM to the client (``_end_down``)."""
        relay = self._relay
        relay.backend_ended()
        try:
            self._client.end_now()
        except STREAM_GONE:
            self._fail(Side.CLIENT)
            return
        if relay.half_closed_since is None:  # (``half_closed``'s own test, without its call)
            relay.half_closed()
        self._finish()
        # The EOF stays readable: the socket is watched no more, unless ``_finish`` ended
        # the tunnel and closed it already (the client's end came first: the usual end),
        # which took it out of the epoll set with no ``epoll_ctl`` (``stop``).
        self._pause()

    def _fail(self, side: Side) -> None:
        # The failure first: a tunnel without a task may end as this wakes it.
        self._pause()
        self._relay.fail(side)
        self._finish()

    def _finish(self) -> None:
        self.done = True
        if self.finished is not None:
            self.finished.set()
        if self.wake_client_receiver:
            self._client.wake_receiver()  # asleep since the reader passed its end on
