"""Move bytes both ways between a client stream and a backend stream, unchanged.

The tunnel knows nothing of HTTP/2, HTTP/1.1 or WebSocket: both ends are
``trio.abc.HalfCloseableStream``. The HTTP/2 side is an :class:`H2Stream`, whose
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

Frames: every chunk is fed to its direction's :class:`~h2ws_proxy.relay.legs.Leg` as it is
taken from the source (one call, O(frame headers in it)); the bytes pass unchanged. Once the
drain wants a Close in a direction (``going_away.py``), that direction's chunks go through
``Leg.take``: the frame in progress still passes, then our Close, then nothing more. Whoever
holds the direction's bytes puts the Close in: the pump after its send, the polled side in
its pending bytes, the closer task when the pump waits idle at a boundary.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import trio

from h2ws_proxy.relay.going_away import OpenTunnels
from h2ws_proxy.relay.legs import Bytes, Leg, UntrackedReporter
from h2ws_proxy.relay.outcome import RelayStats, Side
from h2ws_proxy.relay.polled import PolledDownward
from h2ws_proxy.relay.pump_steps import (
    backend_stopped_taking,
    end_down,
    end_up,
    pass_draining,
)
from h2ws_proxy.relay.relay_state import READ_SIZE, Relay, SideBroke
from h2ws_proxy.relay.tunnel_polled import begin_polled, run_polled
from h2ws_proxy.relay.tunnel_ports import PushableClient
from h2ws_proxy.transport.capabilities import as_pollable
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller

#: The downward pump task's name (trio's task tree, py-spy).
_PUMP_DOWN_NAME = "h2ws_proxy.relay.tunnel.pump_down"


def run_tunnel(
    client: trio.abc.HalfCloseableStream,
    backend: trio.abc.HalfCloseableStream,
    *,
    client_leftover: bytes = b"",
    backend_leftover: bytes = b"",
    idle_timeout_s: float = 0.0,
    half_closed_timeout_s: float = 0.0,
    stats: RelayStats | None = None,
    scope: trio.CancelScope | None = None,
    poller: BackendPoller | None = None,
    pushable: PushableClient | None = None,
    open_tunnels: OpenTunnels | None = None,
    untracked_reporter: UntrackedReporter | None = None,
    on_close_handshake: Callable[[], None] | None = None,
    begin_now: bool = False,
) -> Awaitable[RelayStats] | None:
    """Relay until both sides are done or one breaks; always closes the backend stream.

    Never raises for peer behaviour: how it ended is in the returned stats. The caller's
    cancellation (shutdown) ends it as CANCELLED. The caller closes the client stream,
    choosing how from ``stats.end`` (an HTTP/2 stream is reset with a code that says why).

    ``scope``: a cancel scope the caller may have entered around this call (whatever
    deadline it has, the dial's, is replaced). Cancelling it ends the tunnel as CANCELLED;
    the ``Cancelled`` then goes on to that scope's ``with``, so read ``stats`` (pass them
    in) for how it ended.

    ``pushable``: the client stream again, as one that takes bytes synchronously (an HTTP/2
    stream), where it is one. It adopts the tunnel as what cancels its work
    (``adopt_scope``: a reset or the connection's end cancels the tunnel). With it, a
    ``poller`` that has the connection's timers and a backend socket, the tunnel runs as
    :func:`~h2ws_proxy.relay.tunnel_polled.run_polled`, which holds no task while the
    tunnel idles (a run that returns with the tunnel still open: see there). And the
    client's bytes may be forwarded to the backend by the task that receives them (see
    ``_offer_forwarder``).

    ``open_tunnels``: where the tunnel is listed while it runs, for the drain's Close.
    ``untracked_reporter`` is told once per side whose bytes turn out not to be WebSocket
    frames (they keep passing unchanged). ``on_close_handshake`` is called once both sides'
    Close frames have passed whole (only where the backend is not a pollable socket): the
    WebSocket is over (RFC 6455 §7.1.1), which an HTTP/2 backend stream acts on.

    Sync: it returns the run's coroutine (await it at once), so no frame of its own stays
    parked for the tunnel's life (idle memory, bench/README.md).

    ``begin_now``: a polled run begins here, in the caller's turn, and returns None (the
    caller has no task to run it in: ``tunnel_polled.begin_polled``); the client stream's
    ``tunnel_end`` hears of its end. Callers pass it only where the run is polled and the
    client sent nothing behind its request (an HTTP/2 stream).
    """
    # The caller may pass ``stats`` so that counters survive its own cancellation.
    stats = stats if stats is not None else RelayStats()
    backend_socket = as_pollable(backend)
    timers = poller.timers if poller is not None else None
    polled = timers is not None and backend_socket is not None and pushable is not None
    relay = Relay(
        client,
        backend,
        stats,
        # Polled: no scope while it idles; else the pumps' nursery's, below.
        None if polled else scope if scope is not None else trio.CancelScope(),
        pushable,
        backend_socket,
        idle_timeout_s=idle_timeout_s,
        half_closed_timeout_s=half_closed_timeout_s,
        up=Leg(True, untracked_reporter),
        down=Leg(False, untracked_reporter),
        on_close_handshake=on_close_handshake,
        timers=timers if polled else None,
        poller=poller if polled else None,
        backend_raw=backend_socket.raw_socket() if backend_socket is not None else None,
    )
    if pushable is not None:
        pushable.adopt_scope(relay)
    if polled:
        assert poller is not None
        assert backend_socket is not None
        assert pushable is not None
        downward = PolledDownward(
            relay, pushable, backend_socket, poller, backend_leftover, open_tunnels
        )
        if begin_now:
            assert not client_leftover  # (see the docstring)
            begin_polled(relay, downward)
            return None
        return run_polled(relay, client_leftover, downward)
    return _run_pumps(relay, scope, open_tunnels, client_leftover, backend_leftover)


async def _run_pumps(
    relay: Relay,
    scope: trio.CancelScope | None,
    open_tunnels: OpenTunnels | None,
    client_leftover: bytes,
    backend_leftover: bytes,
) -> RelayStats:
    """``run_tunnel`` with a task per direction: the downward pump in a nursery of its
    own, the upward one in this task."""
    if open_tunnels is not None:
        open_tunnels.add(relay)
    try:
        if scope is not None:
            scope.deadline = math.inf  # the pumps' nursery holds the timers here
        async with trio.open_nursery() as pumps:
            relay.scope = pumps.cancel_scope
            if relay.cancel_called:  # before the nursery was there to cancel
                pumps.cancel_scope.cancel()
            relay.activity()
            # A constant name: trio would otherwise build one string per task.
            pumps.start_soon(_pump, relay, backend_leftover, False, name=_PUMP_DOWN_NAME)
            # The upward pump runs in this task rather than a third one: an idle tunnel
            # then costs two parked tasks, not three (a task is ~1.5 KiB with its frames).
            await _pump(relay, client_leftover, True)
        relay.settle_end(cancelled=pumps.cancel_scope.cancelled_caught)
    finally:
        relay.settle_frames()
        if open_tunnels is not None:
            open_tunnels.discard(relay)
        if relay.backend_socket is not None:
            relay.backend_socket.close_now()  # two cancel scopes fewer than the line below
        else:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(relay.backend)
    return relay.stats


async def _pump(relay: Relay, leftover: bytes, upward: bool) -> None:
    """One direction: send ``leftover``, copy until the source's EOF, then end the sink.

    The copy loop is inline, not in helpers: a parked pump's chain of coroutine frames is
    most of an idle tunnel's memory, so the wait for the next read is one frame deep here.
    """
    if upward:
        source, sink, source_side, sink_side, leg = (
            relay.client,
            relay.backend,
            Side.CLIENT,
            Side.BACKEND,
            relay.up,
        )
    else:
        source, sink, source_side, sink_side, leg = (
            relay.backend,
            relay.client,
            Side.BACKEND,
            Side.CLIENT,
            relay.down,
        )
    data: Bytes = leftover
    # The client stream again where it receives without waiting (an HTTP/2 stream).
    receiver = relay.pushable if upward else None
    forwards = upward and _offer_forwarder(relay)
    try:
        try:
            if data:
                data = await pass_draining(relay, leg, data, sink, sink_side)
            while True:
                if data:
                    leg.busy = True
                    try:
                        await sink.send_all(data)
                    except STREAM_GONE as error:
                        raise SideBroke(sink_side, str(error)) from None
                    leg.busy = False
                    if upward:
                        relay.stats.bytes_up += len(data)
                    else:
                        relay.stats.bytes_down += len(data)
                    if relay.on_close_handshake is not None and leg.close_code is not None:
                        relay.close_handshake_passed()
                    # Don't hold the last chunk (up to READ_SIZE) while the tunnel idles.
                    data = b""
                    if leg.draining:  # the drain came while we were sending
                        await pass_draining(relay, leg, b"", sink, sink_side)
                try:
                    if receiver is None:
                        data = await source.receive_some(READ_SIZE)
                    else:  # its receive_some inline: a frame less while the tunnel idles
                        got = receiver.receive_nowait(READ_SIZE)
                        if got is None:
                            while got is None:  # having waited is the checkpoint
                                await receiver.park_receiver()
                                got = receiver.receive_nowait(READ_SIZE)
                        else:
                            await trio.lowlevel.checkpoint()
                        data = got
                except STREAM_GONE as error:
                    raise SideBroke(source_side, str(error)) from None
                if not data:
                    break
                relay.activity()
                if leg.draining:
                    data = await pass_draining(relay, leg, data, sink, sink_side)
                else:
                    leg.feed(data)
        finally:
            if forwards and relay.pushable is not None:
                relay.pushable.set_forwarder(None)
        if leg.sending is not None:  # the closer's send of our Close must finish first
            await leg.sending.wait()
        await (end_up if upward else end_down)(relay)
    except SideBroke as broke:
        if upward and broke.side is Side.BACKEND:
            await backend_stopped_taking(relay)
        else:
            relay.fail(broke.side, broke.reason)


def _offer_forwarder(relay: Relay) -> bool:
    """Let a client stream fed by another task forward to the backend itself (see below).

    An HTTP/2 stream's bytes arrive in the frontend's reader task; handing them to the
    backend socket right there, while this pump waits anyway, saves a task wake-up per
    message. The forwarder only sends what the kernel takes at once; the pump still does
    everything else (the rest of a message, waiting for the backend, EOF, errors). A send
    error is left for the pump to meet on its own next send. The forwarder is the relay
    itself (``Relay.forward_up``): no closures per idle tunnel. (The polled run offers it
    too, and the client's END_STREAM with it: ``tunnel_polled.py``.)
    """
    if relay.pushable is None or relay.backend_socket is None:
        return False
    relay.pushable.set_forwarder(relay)
    return True
