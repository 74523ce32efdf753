"""A polled tunnel's run: no task while the tunnel idles, a task only while a direction waits.

Where ``run_tunnel`` has a client stream that takes bytes synchronously, a backend socket
and the connection's poller and timers, the backend → client direction is
:class:`~h2ws_proxy.relay.polled.PolledDownward` (callbacks), the reader forwards the
client's bytes and its end (``Relay.forward_up``, ``Relay.pass_client_end``), and the
timers are on the connection's :class:`~h2ws_proxy.transport.timers.ConnectionTimers`. What
is left for a task is what must wait, so a task runs only then.

Rules:

* :func:`run_polled` runs in the task that opened the tunnel (or :func:`begin_polled`
  begins it where a tunnel opened without a task: ``http2/tunnel_opening.py``); once the
  tunnel idles (the client's stream has nothing for it) the task leaves (:func:`_leave`):
  an idle tunnel holds no task, context, cancel scope or coroutine frames
  (bench/README.md, idle memory). What would have woken the task calls :func:`_resume`
  instead, synchronously, in whichever task it happens (the reader, the poller, the
  timers, the frontend).
* :func:`_resume` ends the tunnel there when nothing must wait (a cancel, a timer, a client
  reset, the client's end after the backend's end): the same settling as the run's end,
  then the front end's part (``Relay.on_end``). Anything else (bytes the backend did not
  take at once, the drain's Close, the client's end while the other direction runs) starts
  a task in the connection's nursery that goes on with the run, and leaves again when the
  tunnel idles.
* A task waits in a cancel scope that ``Relay.cancel`` cancels: one made for that wait in
  the opening task, the task's own in a resumed one; where the opening task waits for the
  client's stream it is in none, and ``Relay.cancel`` wakes it to stop
  (``_Stopped``), as a cancelled pump would. The connection's own cancellation reaches a
  task anywhere; a tunnel without one is ended by the poller's end (``on_closed``).
* The same steps as the generic pump otherwise (``tunnel._pump``, ``pump_steps.py``): the
  drain's Close at a frame boundary, a backend that stops taking bytes drains the client,
  the stats counted as bytes really moved.
"""

from __future__ import annotations

from typing import cast

import trio

from h2ws_proxy.relay.legs import Bytes
from h2ws_proxy.relay.outcome import RelayStats, Side
from h2ws_proxy.relay.polled import PolledDownward
from h2ws_proxy.relay.pump_steps import backend_stopped_taking, end_up, pass_draining
from h2ws_proxy.relay.relay_state import READ_SIZE, Relay, SideBroke
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.wakeup import Wakeup


class _Stopped(Exception):
    """:meth:`Relay.cancel` was called while the task waited in no scope of its own."""


async def run_polled(
    relay: Relay, leftover: bytes, downward: PolledDownward, resumed: Bytes | None = None
) -> RelayStats:
    """The polled tunnel's run (see the module): ``downward`` begins first, the client's
    bytes go up until its end, then the other direction is waited for; ``downward`` closes
    the tunnel last, whatever ended it.

    Where the run may go on without this task (the connection's poller has a nursery and
    the client stream a ``tunnel_end``), it returns as soon as the tunnel idles, with the
    tunnel still open (:func:`_leave`); ``resumed``: the chunk a later task goes on with.

    The copy loop is inline: the task's frames while it waits are this one and its
    caller's (idle memory, bench/README.md).
    """
    client, backend, leg = relay.pushable, relay.backend_socket, relay.up
    assert client is not None
    assert backend is not None
    broke: SideBroke | None = None
    left = False
    try:
        if resumed is None:
            downward.begin()
            # The reader forwards the client's bytes, and its END_STREAM while the downward
            # direction runs (``Relay.pass_client_end``): this task then sleeps until
            # ``downward`` finishes and wakes it.
            client.set_forwarder(relay)
        try:
            data: Bytes = leftover
            if data:
                data = await _waiting_pass(relay, data)
            while True:
                if data:
                    if relay.cancel_called:  # where a pump's send would be cancelled
                        raise _Stopped
                    try:
                        sent = backend.send_nowait(data)
                    except STREAM_GONE as error:
                        raise SideBroke(Side.BACKEND, str(error)) from None
                    if sent < len(data):
                        await _waiting_send(relay, memoryview(data)[sent:])
                    relay.stats.bytes_up += len(data)
                    if relay.on_close_handshake is not None and leg.close_code is not None:
                        relay.close_handshake_passed()
                    data = b""  # don't hold the last chunk while the tunnel idles
                    if leg.draining:  # the drain came while we were sending
                        await _waiting_pass(relay, b"")
                if resumed is not None:
                    got: Bytes | None = resumed
                    resumed = None
                else:
                    try:
                        got = client.receive_nowait(READ_SIZE)
                        if got is None:
                            if _may_leave(relay, downward):
                                left = True
                                _leave(relay)
                                return relay.stats
                            while got is None:  # having waited is the checkpoint
                                await client.park_receiver()
                                # What came before a cancel is still taken in, as a
                                # cancelled pump does up to its next checkpoint (a Close's
                                # code is seen).
                                try:
                                    got = client.receive_nowait(READ_SIZE)
                                except STREAM_GONE:
                                    if relay.cancel_called:
                                        raise _Stopped from None
                                    raise
                                if got is None and relay.cancel_called:
                                    raise _Stopped
                        else:
                            await trio.lowlevel.checkpoint()
                            if relay.cancel_called:
                                raise _Stopped
                    except STREAM_GONE as error:
                        raise SideBroke(Side.CLIENT, str(error)) from None
                if not got:
                    break
                relay.activity()
                if leg.draining:
                    data = await _waiting_pass(relay, got)
                else:
                    leg.feed(got)
                    data = got
        except SideBroke as error:
            broke = error
        finally:
            if not left:
                client.set_forwarder(None)
        if relay.scope is not None:  # the task's own (``_run_resumed``)
            await _end_run(relay, broke, downward)
            relay.settle_end(cancelled=False)
        else:
            scope = _enter(relay)
            with scope:
                await _end_run(relay, broke, downward)
            relay.scope = None
            relay.settle_end(cancelled=scope.cancelled_caught)
    except _Stopped:
        relay.settle_end(cancelled=True)
    except trio.Cancelled:
        relay.settle_end(cancelled=True)
        raise
    finally:
        if not left:
            downward.close_tunnel()
            _report_end(relay)
    return relay.stats


async def _end_run(relay: Relay, broke: SideBroke | None, downward: PolledDownward) -> None:
    """The client's side is over (its end, or a side broke): end the backend's side, then
    wait for the downward direction."""
    if broke is None:
        if relay.up.sending is not None:  # the closer's send of our Close must finish first
            await relay.up.sending.wait()
        await end_up(relay)
    elif broke.side is Side.BACKEND:
        await backend_stopped_taking(relay)
    else:
        relay.fail(broke.side, broke.reason)
    while not downward.done:
        if downward.finished is None:
            downward.finished = Wakeup()
        await downward.finished.wait()


async def _run_resumed(relay: Relay, downward: PolledDownward, got: Bytes) -> None:
    """A task that goes on with a run (``_resume``): it exists only while the tunnel must
    wait, so it waits in one cancel scope for its whole life, not one per wait."""
    scope = _enter(relay)
    with scope:
        await run_polled(relay, b"", downward, got)
    relay.scope = None


def begin_polled(relay: Relay, downward: PolledDownward) -> None:
    """:func:`run_polled`'s start without a task (a tunnel opened in the poller's turn): the
    same steps, then the tunnel idles as a run that left it (``_leave``), or goes on as
    :func:`_resume` would go on with whatever the client's stream holds already."""
    client = relay.pushable
    assert client is not None
    assert client.tunnel_end is not None  # who hears of the end (``_report_end``)
    assert downward.nursery() is not None  # where the run goes on if it must wait
    downward.begin()
    client.set_forwarder(relay)
    relay.on_end, client.tunnel_end = client.tunnel_end, None
    _resume(relay)


def _may_leave(relay: Relay, downward: PolledDownward) -> bool:
    """The tunnel idles, and a later task could go on with its run (see ``run_polled``)."""
    if relay.cancel_called or downward.nursery() is None:
        return False
    client = relay.pushable
    return relay.on_end is not None or (client is not None and client.tunnel_end is not None)


def _leave(relay: Relay) -> None:
    """The task leaves the idle tunnel: the client stream's wake-ups call :func:`_resume`,
    and the tunnel's end is reported to the front end by whoever ends it."""
    client = relay.pushable
    assert client is not None
    if relay.on_end is None:
        relay.on_end, client.tunnel_end = client.tunnel_end, None
    relay.scope = None  # (a resumed task's own: it ends now)
    relay.resumer = _resume
    client.detach_receiver()


def _resume(relay: Relay) -> None:
    """The client's stream woke the tunnel that has no task (the reader, the poller, the
    timers or the frontend calls this). Its end is settled here when nothing must wait (a
    cancel, a client reset, the client's end after the backend's); else a task goes on
    with the run from the chunk taken."""
    downward = cast(PolledDownward, relay.downward)
    client = relay.pushable
    assert client is not None
    relay.resumer = None
    try:
        got = None if relay.cancel_called else client.receive_nowait(READ_SIZE)
    except STREAM_GONE as error:
        relay.fail(Side.CLIENT, str(error))
        _end_here(relay, downward, cancelled=True)
        return
    if relay.cancel_called:
        _end_here(relay, downward, cancelled=True)
    elif got is None:
        _leave(relay)  # woken for nothing
    elif not got and downward.done and relay.up.sending is None:
        backend = relay.backend_socket
        assert backend is not None
        try:
            backend.end_now()  # (``end_up``; a backend gone already has its end)
            relay.client_ended()
            if relay.half_closed_since is None:  # (``half_closed``'s own test, no call)
                relay.half_closed()
        except STREAM_GONE:
            pass
        _end_here(relay, downward, cancelled=False)
    else:
        downward.spawn(_run_resumed, relay, downward, got)


def _end_here(relay: Relay, downward: PolledDownward, *, cancelled: bool) -> None:
    relay.settle_end(cancelled=cancelled)
    if relay.pushable is not None:
        relay.pushable.set_forwarder(None)
    downward.close_tunnel()
    _report_end(relay)


def _report_end(relay: Relay) -> None:
    """To the front end, once, where the task that opened the tunnel left it."""
    end, relay.on_end = relay.on_end, None
    if end is not None:
        end.tunnel_ended()


def _enter(relay: Relay) -> trio.CancelScope:
    """A scope for one wait, that :meth:`Relay.cancel` cancels (already cancelled if it
    was called)."""
    scope = relay.scope = trio.CancelScope()
    if relay.cancel_called:
        scope.cancel()
    return scope


async def _waiting_send(relay: Relay, rest: memoryview) -> None:
    """What the backend did not take at once, sent in a scope of its own (or the task's)."""
    leg = relay.up
    if relay.scope is not None:
        leg.busy = True
        try:
            await relay.backend.send_all(rest)
        except STREAM_GONE as error:
            raise SideBroke(Side.BACKEND, str(error)) from None
        leg.busy = False
        return
    scope = _enter(relay)
    with scope:
        leg.busy = True
        try:
            await relay.backend.send_all(rest)
        except STREAM_GONE as error:
            raise SideBroke(Side.BACKEND, str(error)) from None
        leg.busy = False
    relay.scope = None
    if scope.cancelled_caught:
        raise _Stopped


async def _waiting_pass(relay: Relay, data: Bytes) -> Bytes:
    """``pass_draining`` (the drain's Close upward) in a scope of its own (or the task's)."""
    if relay.scope is not None:
        return await pass_draining(relay, relay.up, data, relay.backend, Side.BACKEND)
    scope = _enter(relay)
    with scope:
        data = await pass_draining(relay, relay.up, data, relay.backend, Side.BACKEND)
    relay.scope = None
    if scope.cancelled_caught:
        raise _Stopped
    return data
