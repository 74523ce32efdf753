"""What a front end does in its own protocol around one tunnel or request: :class:`FrontSide`.

The relays (:mod:`~h2ws_proxy.relay.websocket_relay`, :mod:`~h2ws_proxy.relay.request_relay`)
set up a tunnel and forward a request once for every client protocol; the steps whose frames
or bytes differ are the front end's, behind these protocols (HTTP/2: a stream's HEADERS, its
resets; HTTP/1.1: h11's answers, the connection's close).

Rules:

* The relay fills the :class:`~h2ws_proxy.relay.record.RelayRecord` (status, error, opened,
  how it ended); the front end only answers, and decides afterwards how its stream or
  connection ends (reset codes, keep-alive, linger) and when the record is logged.
* Each answering method is called at most once per tunnel or request, and only while
  nothing of an answer went out.
* Sync methods never do I/O; they queue (HTTP/2) or return the bytes to write (HTTP/1.1),
  so the common path adds no await to a front end that answers synchronously.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import trio

from h2ws_proxy.errors import BackendRejected, ProxyError
from h2ws_proxy.http.handshake import BackendAccepted
from h2ws_proxy.relay.exchange_contract import ClientSide
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.relay.relay_state import PushableClient
from h2ws_proxy.transport.poller import BackendPoller


class FrontSide(Protocol):
    """The front end's steps common to tunnels and requests."""

    async def refuse(self, error: ProxyError) -> None:
        """Answer ``error``'s status ourselves (nothing of an answer went out yet).

        May run in a scope cancelled for good (a tunnel's dial timed out in
        :attr:`TunnelFront.scope`): a front end with a scope answers without a checkpoint.
        """


class TunnelFront(FrontSide, Protocol):
    """The client's end of one WebSocket tunnel, for :mod:`~h2ws_proxy.relay.websocket_relay`."""

    @property
    def open_status(self) -> int:
        """The status that opens the tunnel, for the record (HTTP/2: 200, HTTP/1.1: 101)."""

    @property
    def scope(self) -> trio.CancelScope | None:
        """The cancel scope the front end entered around the relay, on which the dial and
        then the tunnel keep their deadlines (see ``run_tunnel``); None: each enters its own."""

    @property
    def answer_stream(self) -> trio.abc.Stream:
        """Where the bytes :meth:`answer_upgrade` returns are written."""

    @property
    def tunnel_client(self) -> trio.abc.HalfCloseableStream:
        """The client's end of the tunnel."""

    @property
    def pushable(self) -> PushableClient | None:
        """:attr:`tunnel_client` again where it takes bytes synchronously (see ``run_tunnel``)."""

    async def relay_rejection(self, rejection: BackendRejected) -> None:
        """Pass the backend's non-101 answer back to the client as it came."""

    def answer_upgrade(self, accepted: BackendAccepted, record: RelayRecord) -> bytes | None:
        """Answer that the tunnel is open: the bytes still to write on :attr:`answer_stream`
        (``b""`` if the answer is queued already), or None if the client is gone (the front
        end notes why in ``record``; the relay then closes the backend)."""

    def client_leftover(self) -> bytes:
        """Bytes the client sent behind its request head: they go to the backend first."""

    def backend_poller(self) -> BackendPoller | None:
        """The connection's backend poller, where the tunnel may use one (see ``run_tunnel``)."""


class RequestFront(ClientSide, FrontSide, Protocol):
    """The client's end of one ordinary request, for :mod:`~h2ws_proxy.relay.request_relay`."""

    @property
    def on_start(self) -> Callable[[trio.CancelScope], object] | None:
        """Given the exchange's cancel scope before it runs (see ``forward_exchange``)."""

    async def cut_short(self) -> None:
        """The answer began and then failed: do at once what tells the client so, if
        anything must be done before the front end's own ending (HTTP/1.1 drops the
        connection; an HTTP/2 stream is reset when the front end ends it)."""


async def refuse(front: FrontSide, record: RelayRecord, error: ProxyError) -> None:
    """Record ``error`` and have ``front`` answer its status."""
    record.refused(error)
    await front.refuse(error)
