"""The part of a backend upgrade done before any wait, outside the task that finishes it.

A new tunnel's dial to a near backend never waits until its answer is due: the connect to
an IP address completes in the call (loopback, a near host), and the upgrade request goes
into an empty send buffer. :func:`start_dial` does that much synchronously, in whichever
turn accepted the tunnel (the HTTP/2 reader's), so the first answer can be waited for
without a task (``http2/tunnel_opening.py``). A :class:`HeadStart` says how far it got;
``connect_and_upgrade`` goes on from there, with the same deadlines, errors and outcomes
as a dial it made itself (the connect's own timeout counts from ``started``, the answer's
from ``connected``).

Rules:

* Only a plain TCP dial to an IP address literal (:func:`may_start_dial`): TLS, unix
  sockets, names to resolve and HTTP/2 backends are dialled in a task as before.
* Nothing here raises for the backend's behaviour: a connect still in progress or failed
  is handed on (``begun``: on Linux the upgrade's first send is what tells, and its error
  is the connect's), and so is an OS error of a send on a connected socket (``error``,
  raised where the task would have met it); an OS error before the connect leaves the
  dial to the task (nothing was sent).
"""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass

import trio

from h2ws_proxy.backend.balancer import ServerState
from h2ws_proxy.config import BackendAddress, Limits
from h2ws_proxy.counters import Histogram
from h2ws_proxy.http.upgrade_wire import UpgradeRequest
from h2ws_proxy.transport.socket_stream import (
    CONNECT_IN_PROGRESS,
    SEND_TELLS_CONNECT,
    LeanSocketStream,
    begin_tcp_to_ip,
    connected_stream,
    is_ip_literal,
    send_first,
)

#: ``is_ip_literal`` remembered per host: the configuration names a few backend hosts, and
#: parsing one with ``ipaddress`` on every new tunnel showed in profiles.
is_ip_literal_cached = functools.lru_cache(maxsize=256)(is_ip_literal)


@dataclass(slots=True)
class HeadStart:
    """How far a dial got before its first wait (see the module)."""

    #: The server taken for it (its balancer counts it active), the key and the request.
    server: ServerState
    key: bytes
    upgrade: UpgradeRequest
    #: When the dial began (the connect's timeout counts from here).
    started: float
    #: The limits it began under: its timeouts stay these through a reload, whoever
    #: waits for the answer (as a task's opening reads them once, at its start).
    limits: Limits
    #: A connect begun that did not complete at once, or whose first send failed with the
    #: connect's error (the socket and the error number: ``begin_tcp_to_ip``'s result, or
    #: ``send_first``'s code).
    begun: tuple[socket.socket, int] | None = None
    #: The connected backend; None while not connected.
    stream: LeanSocketStream | None = None
    #: When it connected (the answer's timeout counts from here).
    connected: float = 0.0
    #: What of the upgrade request is still to send.
    unsent: bytes = b""
    #: The answer's bytes read so far.
    received: bytes = b""
    #: An error the connection met (a send or a read), for the task to meet in its place.
    error: Exception | None = None


def may_start_dial(address: BackendAddress) -> bool:
    """A plain TCP backend at an IP address literal, spoken to in HTTP/1.1."""
    return address.scheme == "http" and not address.speaks_h2 and is_ip_literal_cached(address.host)


def start_dial(
    server: ServerState,
    key: bytes,
    upgrade: UpgradeRequest,
    limits: Limits,
    connect_times: Histogram | None,
) -> HeadStart:
    """Connect to ``server`` and send the upgrade, as far as that goes without waiting."""
    address = server.address
    head = HeadStart(server, key, upgrade, trio.current_time(), limits, unsent=upgrade.data)
    try:
        sock, code = begin_tcp_to_ip(
            address.host, address.port, ask_connected=not SEND_TELLS_CONNECT
        )
    except OSError:
        return head  # the task dials afresh, and meets the error itself
    sent = -1  # (not sent yet)
    if code in CONNECT_IN_PROGRESS and SEND_TELLS_CONNECT:
        # The upgrade itself asks whether the connect completed (a near backend's has).
        code, sent = send_first(sock, upgrade.data)
    if code:
        head.begun = (sock, code)
        return head
    head.stream = stream = connected_stream(sock)
    head.connected = connected = trio.current_time()
    if connect_times is not None:
        connect_times.observe(connected - head.started)
    if sent < 0:
        try:
            sent = stream.send_nowait(upgrade.data)
        except trio.BrokenResourceError as error:
            head.error = error
            return head
    head.unsent = upgrade.data[sent:]
    return head
