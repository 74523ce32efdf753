"""A kept-alive HTTP/1.1 connection to a backend, and the poller's callbacks for its socket.

A connection a request without a task gave back is *parked* in its client connection's
poller while idle (``backend/pool.py``): its socket stays in the poller's epoll set, the
connection its watcher. It stays the watcher while a lean request uses it, passing the
poller's callbacks on to that request (:attr:`BackendConnection.user`): a take and a release
then change one attribute, not the poller's table (two ``register`` calls per request).

Rules:

* While idle (no user), bytes, an EOF or an error mean the connection cannot serve a
  request: the pool drops it (:meth:`Parking.discard_parked`); the poller's end leaves it
  idle, parked nowhere (:meth:`Parking.poller_gone`).
* A user sets :attr:`BackendConnection.user` once it is the connection's (after the pool's
  take) and clears it at its end, before the release or the close: a parked connection's
  events are its own again, and the cycle between the two objects is broken.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from h2ws_proxy.config import BackendAddress
from h2ws_proxy.transport.capabilities import PollableSocket, as_pollable, idle_is_quiet
from h2ws_proxy.transport.poller import BackendPoller


def _unpollable(max_bytes: int) -> bytes:
    """``receive_now`` of a connection whose stream is no pollable socket (no lean request
    takes one: ``take_idle_now`` wants its ``socket``)."""
    raise OSError("not a pollable socket")


class Parking(Protocol):
    """What a parked connection tells its pool (``BackendPool``)."""

    def discard_parked(self, connection: BackendConnection) -> None:
        """It turned readable while idle: forget and close it."""

    def poller_gone(self, connection: BackendConnection) -> None:
        """The poller it was parked in closed: it stays idle, parked nowhere."""


class ConnectionUser(Protocol):
    """A request run without a task on a taken connection (``http2/polled_request.py``,
    ``http1/lean_exchange.py``): the poller's callbacks for its socket, passed on."""

    def on_readable(self) -> None: ...

    def on_error(self) -> None: ...

    def on_closed(self) -> None: ...


@dataclass(slots=True, eq=False)
class BackendConnection:
    """One HTTP/1.1 connection to a backend, between requests (we are the client)."""

    address: BackendAddress
    stream: trio.abc.HalfCloseableStream
    #: True for a connection that already served a request (a stale one may be retried).
    reused: bool = False
    idle_since: float = field(default=0.0)
    #: While idle: the poller whose epoll set holds the socket (``backend/pool.py``'s docstring).
    parked_in: BackendPoller | None = None
    #: The socket is in ``parked_in``'s epoll set now (the poller's :class:`Watcher` flag).
    watched: bool = False
    #: The pool it came from (told when the connection fails while parked).
    pool: Parking | None = None
    #: ``stream`` as a socket a poller can drive, or None (``as_pollable``, asked once: a
    #: lean request's take and write need it).
    socket: PollableSocket | None = field(init=False, default=None)
    #: ``socket``'s descriptor (-1: none), read once: a take looks it up in its client
    #: read's ready descriptors (``take_idle_now``).
    fd: int = field(init=False, default=-1)
    #: A ``poll`` set holding ``socket`` alone, made at its first take and kept while the
    #: connection lives: a take's quiet check is then one ``poll(0)`` (``take_idle_now``).
    quiet_poll: select.poll | None = field(init=False, default=None)
    #: ``socket``'s own ``send`` (``PollableSocket.raw_send``), read once: a lean start
    #: writes its request head with it (``relay/kept_start.py``), one C call.
    send_head: Callable[[bytes], int] | None = field(init=False, default=None)
    #: ``socket``'s own ``recv`` (``PollableSocket.raw_socket``'s), read once: a lean
    #: request reads its answer with it (``http2/polled_request.py``), one C call.
    receive_now: Callable[[int], bytes] = field(init=False, default=_unpollable)
    #: The request it serves, taken by :meth:`BackendPool.take_idle_now` (None while idle):
    #: the socket's watcher in the poller stays this connection, which passes the poller's
    #: callbacks on to it, so a take and a release need no ``register`` of their own. Its
    #: user sets it, and clears it at its end (before a release: a parked connection's
    #: events are its own), which also breaks the cycle between the two.
    user: ConnectionUser | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.socket = socket = as_pollable(self.stream)
        if socket is not None:
            self.fd = socket.fileno()
            self.send_head = socket.raw_send()
            self.receive_now = socket.raw_socket().recv

    # ---- the poller's callbacks (a Watcher): its user's while it has one ----

    def on_readable(self) -> None:
        """Bytes, an EOF or an error while idle: the connection cannot serve a request.
        A spurious event (a round the poller runs without asking epoll which descriptor is
        ready: ``_run_handlers``) finds it quiet and leaves it be."""
        user = self.user
        if user is not None:
            user.on_readable()
        elif self.pool is not None and not idle_is_quiet(self.stream):
            self.pool.discard_parked(self)

    def on_error(self) -> None:
        user = self.user
        if user is not None:
            user.on_error()
        elif self.pool is not None and not idle_is_quiet(self.stream):
            self.pool.discard_parked(self)

    def on_closed(self) -> None:
        """The poller ended (its client connection did): the socket stays idle, unwatched
        (the kernel took it out of the set with the poller's epoll)."""
        self.watched = False
        user = self.user
        if user is not None:
            user.on_closed()
        elif self.pool is not None:
            self.pool.poller_gone(self)

    def fileno(self) -> int:
        pollable = self.socket
        assert pollable is not None, "only sockets a poller can drive are parked"
        return pollable.fileno()
