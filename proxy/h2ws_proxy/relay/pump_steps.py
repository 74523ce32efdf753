"""The steps a tunnel's directions share, whether a pump task or a polled run takes them.

Each raises :class:`~h2ws_proxy.relay.relay_state.SideBroke` for the side whose stream
failed (``STREAM_GONE``), or settles it itself where its rule says so (a backend that stops
taking bytes: the client is drained, and the downward direction decides how it ended).
"""

from __future__ import annotations

import trio

from h2ws_proxy.relay.legs import Bytes, Leg
from h2ws_proxy.relay.outcome import Side
from h2ws_proxy.relay.relay_state import READ_SIZE, Relay, SideBroke
from h2ws_proxy.transport.capabilities import PollableSocket
from h2ws_proxy.transport.errors import STREAM_GONE

#: After a failed write to the backend, how long the tunnel waits for the backend's end
#: (its EOF, after its last bytes reach a slow client) before calling it a failure.
BACKEND_GONE_LINGER_S = 10.0


async def pass_draining(
    relay: Relay, leg: Leg, data: Bytes, sink: trio.abc.Stream, side: Side
) -> Bytes:
    """A chunk of a direction the drain closes (``Leg.take``): what is left to send the
    usual way (the frame in progress goes on past it), or b"" when the Close went after
    the frame's end (sent here) or went already (the chunk is dropped)."""
    forward, inject = leg.take(data)  # (also the first chunk, draining or not)
    if not inject:
        return forward
    leg.busy = True
    try:
        if forward:
            await sink.send_all(forward)
            if leg is relay.up:
                relay.stats.bytes_up += len(forward)
            else:
                relay.stats.bytes_down += len(forward)
        await sink.send_all(leg.close)
    except STREAM_GONE as error:
        raise SideBroke(side, str(error)) from None
    leg.busy = False
    return b""


async def end_down(relay: Relay) -> None:
    """The backend ended its side: END_STREAM to the client."""
    relay.backend_ended()
    await _send_eof(relay.client, Side.CLIENT)
    relay.half_closed()


async def end_up(relay: Relay) -> None:
    """The client ended its side: a FIN to the backend."""
    try:
        if relay.backend_socket is not None:
            _end_now(relay.backend_socket, Side.BACKEND)  # the last receive was the checkpoint
        else:
            await _send_eof(relay.backend, Side.BACKEND)
    except SideBroke:
        await backend_stopped_taking(relay)
        return
    relay.client_ended()
    relay.half_closed()


async def backend_stopped_taking(relay: Relay) -> None:
    try:
        await drain_client(relay)
    except SideBroke as broke:
        relay.fail(broke.side, broke.reason)


async def drain_client(relay: Relay) -> None:
    """The backend takes no more bytes (it closed or reset); drain the client until it ends.

    What the backend already sent is still delivered by the other pump, which also decides
    how the tunnel ended. Draining is not activity (the idle timeout still runs), and it is
    bounded: if the backend's end has not shown up by then, the backend failed.
    """
    with trio.move_on_after(BACKEND_GONE_LINGER_S) as linger:
        while await _receive(relay.client, Side.CLIENT):
            pass
    if not linger.cancelled_caught:
        return
    if not relay.backend_done:
        raise SideBroke(Side.BACKEND)
    while await _receive(relay.client, Side.CLIENT):  # the idle timeout bounds this one
        pass


async def _send_eof(stream: trio.abc.HalfCloseableStream, side: Side) -> None:
    try:
        await stream.send_eof()
    except STREAM_GONE as error:
        raise SideBroke(side, str(error)) from None


def _end_now(stream: PollableSocket, side: Side) -> None:
    try:
        stream.end_now()
    except STREAM_GONE as error:
        raise SideBroke(side, str(error)) from None


async def _receive(stream: trio.abc.ReceiveStream, side: Side) -> bytes | bytearray:
    try:
        return await stream.receive_some(READ_SIZE)
    except STREAM_GONE as error:
        raise SideBroke(side, str(error)) from None
