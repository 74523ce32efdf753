"""The drain's WebSocket Close: 1001 "going away" into every open tunnel, both ways.

When the server drains, ``graceful_timeout_s`` lets tunnels end by themselves; then (or at
once with ``limits.drain_close_websockets``) :func:`close_websockets_on_drain` closes the
ones still open as RFC 6455 wants, instead of cutting them (their clients would see 1006):

1. Each open tunnel gets a Close frame with 1001 and the reason "going away" toward the
   client (unmasked, as a server sends it) and toward the backend (masked with a fresh
   random key, as a client must, §5.3). No RSV bit: control frames are never compressed
   (RFC 7692 §6.1), so a tunnel whose peers use permessage-deflate gets the same frame.
2. Only at a frame boundary (``legs.py``): a frame in progress is finished first; between
   the fragments of a message is a boundary (§5.4). A direction whose frame does not end
   within the wait gets no Close.
3. A side that sent its own Close already gets none from us on the other side: the other
   side has that Close, and an endpoint sends one Close only (§5.5.1). So a closing
   handshake in progress is left to finish; if only one side had sent its Close, the other
   direction still gets ours (completing the handshake of the side that started it).
4. After our Close into a sink, the source's bytes are dropped (§5.5.1: nothing after a
   Close; its reply Close must not be a second Close for the sink), but read: its close
   code is logged.
5. Then ``close_wait_s`` for the replies: the backend, a server, closes its TCP connection
   after the handshake (§7.1.1) and that EOF ends the client's stream as usual (END_STREAM,
   or a FIN for HTTP/1.1); the client ends its side. Whatever is still open by then is
   cut. A tunnel where both sides' Close frames were seen ends as ``drained``.
"""

from __future__ import annotations

import secrets

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.relay.legs import Leg
from h2ws_proxy.relay.relay_state import Relay
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.wakeup import Wakeup
from h2ws_proxy.websocket.frames import GOING_AWAY, close_frame

#: The Close's reason (RFC 6455 §7.1.6: UTF-8, for humans; the code is what counts).
GOING_AWAY_REASON = b"going away"
#: Toward clients: the same unmasked frame for every tunnel.
_CLIENT_CLOSE = close_frame(GOING_AWAY, GOING_AWAY_REASON)
#: Past the Close wait, how long connections get to write the tunnels' last frames (their
#: END_STREAM or reset, a GOAWAY) before they are cut.
CLOSE_FLUSH_S = 0.5


def drain_deadline_s(limits: Limits) -> float:
    """How long after the drain begins connections are cut: time for tunnels and requests to
    end by themselves, then for the WebSocket Close and its replies."""
    close_at = 0.0 if limits.drain_close_websockets else limits.graceful_timeout_s
    return max(limits.graceful_timeout_s, close_at + limits.close_wait_s + CLOSE_FLUSH_S)


class OpenTunnels:
    """The server's running tunnels (each adds itself while it runs), for the drain."""

    __slots__ = ("_empty", "_relays", "close_by")

    def __init__(self) -> None:
        self._relays: set[Relay] = set()
        #: Set while the drain waits for the last tunnel to end (None before).
        self._empty: Wakeup | None = None
        #: Once the drain closes tunnels: when they end at the latest.
        self.close_by: float | None = None

    def __len__(self) -> int:
        return len(self._relays)

    def add(self, relay: Relay) -> None:
        self._relays.add(relay)
        if self.close_by is not None:
            # Opened during the Close wait: its Close goes in with its next bytes.
            _start_closing(relay, self.close_by)

    def discard(self, relay: Relay) -> None:
        relays = self._relays
        relays.discard(relay)
        if not relays and self._empty is not None:
            self._empty.set()

    async def wait_empty(self) -> None:
        self._empty = Wakeup()
        while self._relays:
            await self._empty.wait()

    async def close_all(self, close_wait_s: float) -> None:
        """Our Close into every open tunnel (see the module); returns once each went or was
        left to the tunnel (its frame in progress), or its tunnel ended."""
        self.close_by = trio.current_time() + close_wait_s
        relays = list(self._relays)
        for relay in relays:
            _start_closing(relay, self.close_by)
        async with trio.open_nursery() as closers:
            for relay in relays:
                closers.start_soon(_close_one, relay)


def _start_closing(relay: Relay, close_by: float) -> None:
    relay.close_for_drain(close_by)
    relay.down.start_draining(_CLIENT_CLOSE)
    relay.up.start_draining(close_frame(GOING_AWAY, GOING_AWAY_REASON, secrets.token_bytes(4)))


async def _close_one(relay: Relay) -> None:
    """Put our Close into the directions of ``relay`` that wait idle at a boundary; the
    tunnel's own pumps put it into the others when their frame ends."""
    with trio.CancelScope() as scope:
        relay.closer = scope  # the tunnel's end cancels this
        if relay.downward is not None:
            relay.downward.inject()  # synchronous: the polled side holds the client's bytes
            await _inject(relay.up, relay.backend)
            return
        async with trio.open_nursery() as both:
            both.start_soon(_inject, relay.down, relay.client)
            both.start_soon(_inject, relay.up, relay.backend)


async def _inject(leg: Leg, sink: trio.abc.Stream) -> None:
    if not leg.may_inject_now():
        return  # the pump puts it in (it holds bytes, or the frame goes on), or none is due
    leg.injected = True
    sent = leg.sending = trio.Event()
    try:
        await sink.send_all(leg.close)
    except STREAM_GONE:
        pass  # the tunnel's pumps meet that themselves
    finally:
        sent.set()


async def close_websockets_on_drain(tunnels: OpenTunnels, limits: Limits) -> None:
    """Run once the server drains: wait ``graceful_timeout_s`` for tunnels to end by
    themselves (not at all with ``drain_close_websockets``), then close those left."""
    if not limits.drain_close_websockets:
        with trio.move_on_after(limits.graceful_timeout_s):
            await tunnels.wait_empty()
            return
    if len(tunnels):
        await tunnels.close_all(limits.close_wait_s)
