"""A plain socket as a trio stream that costs fewer scheduler trips per message.

``trio.SocketStream`` makes every ``send_all`` and ``receive_some`` a full checkpoint: a
successful send still yields, and every receive first tries ``recv`` (usually ``EAGAIN``
in ping-pong traffic) before it waits: a tunnel's message pays for both. Used for backend
connections of WebSocket upgrades and plain-TCP clients (TLS has its own lean streams).

Rules this stream keeps instead:

* ``receive_some`` is always a checkpoint: it either waits for the socket, or, when data
  was already there, yields once. Every loop that sends on such a stream also receives
  or waits (the tunnel pumps, the upgrade, the exchange, the HTTP/2 writer's wait for
  output), so each of its iterations still yields.
* ``send_all`` waits (``wait_writable``) only when the kernel's buffer is full; when the
  kernel takes everything at once it checks for cancellation but does not yield. This is
  the one departure from trio's "every async call is a schedule point".
* After a short read the socket is known to be drained, so the next receive waits for
  readability first instead of spending a failing ``recv`` syscall; after a full read it
  tries ``recv`` first (bulk transfers usually have more queued).
* ``aclose`` closes at once and yields, but does not raise ``Cancelled`` in a cancelled
  scope: a cancellation still pending reaches the caller at its next checkpoint. Every
  tunnel closes its backend with ``trio.aclose_forcefully``, whose own scope is cancelled
  by design, and raising and catching that ``Cancelled`` costs more than the close.
* OS errors become ``trio.BrokenResourceError`` and use after ``aclose`` becomes
  ``trio.ClosedResourceError``, as with ``trio.SocketStream``.
* Closing calls ``trio.lowlevel.notify_closing`` only while a task may be waiting on the
  socket, to wake it and drop trio's record of the wait; with no wait in progress trio
  holds no record, and its ``EPOLL_CTL_DEL`` finds nothing the close would not remove.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import sys
from collections.abc import Callable

import trio

from h2ws_proxy.transport.trio_waits import ReadableWait, readable_waiter

#: Default read size when the caller gives none (trio's SocketStream uses 64 KiB too).
DEFAULT_RECEIVE_SIZE = 65536
#: Unsent bytes the kernel holds before the socket stops being writable: trio.SocketStream's
#: value (trio issue #72), so a stalled backend holds back its tunnel as before.
NOTSENT_LOWAT_BYTES = 16384
#: Makes a socket non-blocking as it is created, without a separate ioctl (Linux).
_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
#: The option where the platform has it (Linux, macOS), else 0.
_TCP_NOTSENT_LOWAT: int = getattr(socket, "TCP_NOTSENT_LOWAT", 0)

#: What a non-blocking ``connect`` answers while the handshake goes on (``BlockingIOError``'s
#: numbers, and EINTR: the connection goes on after an interrupted call).
CONNECT_IN_PROGRESS = frozenset(
    {errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR}
)

#: Linux's TCP: a send on a socket whose connect is still in progress fails with EAGAIN and
#: queues nothing, and one on a socket whose connect failed fails with the connect's error.
#: So there a first send says itself whether the connect completed (:func:`send_first`),
#: and no ``getpeername`` need ask before it.
SEND_TELLS_CONNECT = sys.platform.startswith("linux")

#: For :meth:`LeanSocketStream.is_quiet`: one poll set, holding one descriptor only while a
#: check runs (a check never yields, and each process runs one trio loop).
_QUIET_POLL = select.poll() if hasattr(select, "poll") else None
_POLLIN = getattr(select, "POLLIN", 1)


class LeanSocketStream(trio.abc.HalfCloseableStream):
    """A connected, non-blocking stdlib socket (TCP or unix) as a half-closeable stream."""

    # One per tunnel: no instance dict (trio's stream ABCs have empty __slots__).
    __slots__ = ("_closed", "_drained", "_eof_sent", "_reading", "_sock", "_wait", "_writing")

    #: ``send_nowait`` may take part of what it is given (capabilities.ClientStream).
    whole_writes = False

    def __init__(self, sock: socket.socket) -> None:
        if sock.gettimeout() != 0.0:  # not made non-blocking already (each call is a syscall)
            sock.setblocking(False)
        self._sock = sock
        self._closed = False
        self._eof_sent = False
        #: The last read returned less than asked: the kernel's queue was empty then.
        self._drained = False
        #: A task may be waiting in trio for the socket to be readable / writable: set
        #: before each wait, cleared when it ends normally (left set if it raised: a
        #: spare ``notify_closing`` costs little, a missing one leaves trio a stale record).
        self._reading = False
        self._writing = False
        #: The running loop's wait for readability (trio_waits.py), taken at the first
        #: wait: a stream lives in one loop.
        self._wait: ReadableWait | None = None

    @classmethod
    def from_socket_stream(cls, stream: trio.SocketStream) -> LeanSocketStream:
        """Take over ``stream``'s socket (``stream`` must not be used afterwards)."""
        family, kind, proto = stream.socket.family, stream.socket.type, stream.socket.proto
        return cls(socket.socket(family, kind, proto, fileno=stream.socket.detach()))

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("the stream was closed or ended")
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            remaining = view
            try:
                while remaining:
                    try:
                        sent = self._sock.send(remaining)
                    except BlockingIOError:
                        self._writing = True
                        await trio.lowlevel.wait_writable(self._sock)
                        self._writing = False
                        continue
                    remaining = remaining[sent:]
            except OSError as error:
                raise self._broken(error) from error
            finally:
                remaining.release()

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes right now, without waiting; returns how much.

        For a writer that times out stalled peers: it needs a timer (a cancel scope with a
        deadline, which costs a heap operation) only for what is left after this.
        """
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("the stream was closed or ended")
        try:
            return self._sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise self._broken(error) from error

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """What the kernel has now, without waiting: ``None`` if nothing, ``b""`` at EOF.

        For a caller told by a readiness watcher that the socket is readable
        (backend_poller.py); it is not a checkpoint.
        """
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        try:
            return self._sock.recv(max_bytes)
        except BlockingIOError:
            return None
        except OSError as error:
            raise self._broken(error) from error

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        size = DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        try:
            if not self._drained:
                try:
                    data = self._sock.recv(size)
                except BlockingIOError:
                    pass
                else:
                    self._drained = len(data) < size
                    await trio.lowlevel.checkpoint()
                    return data
            while True:
                # Waiting is this call's checkpoint.
                self._reading = True
                wait = self._wait
                if wait is None:
                    wait = self._wait = readable_waiter()
                await wait(self._sock)
                self._reading = False
                try:
                    data = self._sock.recv(size)
                except BlockingIOError:
                    continue
                self._drained = len(data) < size
                return data
        except OSError as error:
            raise self._broken(error) from error

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        self._writing = True
        await trio.lowlevel.wait_writable(self._sock)
        self._writing = False

    async def send_eof(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        await trio.lowlevel.checkpoint()
        self.end_now()

    def end_now(self) -> None:
        """``send_eof`` without the checkpoint: a shutdown never waits, and a caller that
        has just been through one (a tunnel's pump, after its receive) needs no second."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._eof_sent:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            raise self._broken(error) from error  # asked again, it fails again
        self._eof_sent = True

    async def aclose(self) -> None:
        self.close_now()
        # A schedule point, not a cancel point: see the module docstring.
        await trio.lowlevel.cancel_shielded_checkpoint()

    def close_now(self) -> None:
        """``aclose`` without the checkpoint: closing a socket never waits, so a caller that
        must close even when cancelled needs no shielded cancel scope for it."""
        if not self._closed:
            self._closed = True
            if self._reading or self._writing:
                # Wake any task still waiting on this socket (it sees ClosedResourceError).
                # Only then: see the module docstring (a failing syscall, raised and caught).
                trio.lowlevel.notify_closing(self._sock)
            self._sock.close()

    def is_quiet(self) -> bool:
        """True if nothing waits to be read: no EOF, no bytes, no error (see
        :func:`socket_is_quiet`, inline: the pool asks it per request it takes)."""
        poll = _QUIET_POLL
        if poll is None:
            return socket_is_quiet(self._sock)
        fd = self._sock.fileno()
        poll.register(fd, _POLLIN)
        try:
            return not poll.poll(0)
        finally:
            poll.unregister(fd)

    def detach(self) -> socket.socket:
        """Hand the socket over (to a TLS layer): this stream is closed, the socket is not."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        self._closed = True
        return self._sock

    def raw_send(self) -> Callable[[bytes | bytearray | memoryview], int]:
        """The socket's own ``send`` (``PollableSocket.raw_send``): no checks of our state."""
        return self._sock.send

    def raw_socket(self) -> socket.socket:
        """The socket (see ``PollableSocket.raw_socket``): closed when this stream is."""
        return self._sock

    def fileno(self) -> int:
        """The socket's descriptor (for a non-consuming peek, as the backend pool does)."""
        return self._sock.fileno()

    def _broken(self, error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError("the stream was closed")
        return trio.BrokenResourceError(f"socket error: {error}")


def socket_is_quiet(sock: socket.socket) -> bool:
    """True if nothing waits to be read on ``sock``: no EOF, no bytes, no error (a poll that
    does not wait: readable means bytes nobody asked for or the peer's FIN, and errors and
    hang-ups are always reported). A non-blocking ``MSG_PEEK`` would say the same, but its
    usual answer is an exception, about four times the cost."""
    if _QUIET_POLL is None:  # no poll(2) here
        try:
            # The plain socket's recv: below OpenSSL, should ``sock`` be a TLS socket.
            socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False  # b"": the peer closed; anything else: bytes nobody asked for
    fd = sock.fileno()
    _QUIET_POLL.register(fd, select.POLLIN)
    try:
        return not _QUIET_POLL.poll(0)
    finally:
        _QUIET_POLL.unregister(fd)


def is_ip_literal(host: str) -> bool:
    """True for ``127.0.0.1``, ``::1`` and the like (no name to resolve)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def open_tcp_to_ip(
    host: str,
    port: int,
    *,
    before_wait: Callable[[], object] | None = None,
    begun: tuple[socket.socket, int] | None = None,
) -> LeanSocketStream:
    """Connect to an IP address literal; OS errors propagate as ``OSError``.

    ``trio.open_tcp_stream`` resolves the name and races addresses (happy eyeballs) in a
    nursery of its own: a task, cancel scopes and a ``getaddrinfo`` per connection (its
    cost per new tunnel: bench/README.md). An IP literal needs none of it.

    Like :meth:`LeanSocketStream.send_all`, this yields only when it has to wait: a
    non-blocking ``connect`` always says "in progress", but to a loopback or otherwise
    near backend the handshake has usually completed by the time it returns (the kernel
    runs it in the same call), so a ``getpeername`` asks first and the wait for
    writability (an epoll registration and a trip through the scheduler) is spent only
    when the connection is really still pending or has failed. The stream's first
    receive waits for readability before it reads: nothing has been sent on it yet, so
    an immediate ``recv`` would only find the queue empty. ``before_wait`` is called only
    if the connection has to be waited for (the caller's connect timeout goes on then).
    ``begun``: :func:`begin_tcp_to_ip`'s result, where the caller began the connect itself.
    """
    sock, code = begun if begun is not None else begin_tcp_to_ip(host, port)
    try:
        if code in CONNECT_IN_PROGRESS:
            if before_wait is not None:
                before_wait()
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        await trio.lowlevel.checkpoint_if_cancelled()  # (a failed dial too: it may not have waited)
    except BaseException:
        sock.close()
        raise
    if code:
        sock.close()
        raise OSError(code, os.strerror(code))
    return connected_stream(sock)


def begin_tcp_to_ip(
    host: str, port: int, *, ask_connected: bool = True
) -> tuple[socket.socket, int]:
    """:func:`open_tcp_to_ip`'s part that never waits: the socket, its options, the connect
    begun; with 0 if the connection completed at once, else ``connect``'s error number (in
    progress, or failed). OS errors before the connect propagate (nothing was sent).

    ``ask_connected=False``: "in progress" is not checked (no ``getpeername``), for a
    caller whose first send asks instead (:func:`send_first`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
    try:
        if not _SOCK_NONBLOCK:
            sock.setblocking(False)
        # The options trio.SocketStream sets. TCP_NOTSENT_LOWAT matters for backpressure:
        # without it the kernel's growing send buffer takes far more of a stalled
        # backend's bytes (memory per tunnel) before send() says EAGAIN.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _TCP_NOTSENT_LOWAT:
            sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, NOTSENT_LOWAT_BYTES)
        # ``connect_ex``: "in progress", the usual answer, as a number rather than an
        # exception raised and caught.
        code = sock.connect_ex((host, port))
        if ask_connected and code in CONNECT_IN_PROGRESS and _connected(sock):
            code = 0
    except BaseException:
        sock.close()
        raise
    return sock, code


def send_first(sock: socket.socket, data: bytes) -> tuple[int, int]:
    """Where :data:`SEND_TELLS_CONNECT`, on a socket whose connect is in progress: ``(0,
    sent)`` if the connection is up by now; else ``(code, 0)``, nothing sent: in progress
    (``EINPROGRESS``: wait for writability, then read ``SO_ERROR``) or failed (its error,
    which this send took from the socket: ``SO_ERROR`` would read 0 now)."""
    try:
        return 0, sock.send(data)
    except BlockingIOError:
        return errno.EINPROGRESS, 0
    except OSError as error:
        return error.errno or errno.ECONNABORTED, 0


def connected_stream(sock: socket.socket) -> LeanSocketStream:
    """A socket whose connect just completed as a stream; its first receive waits before it
    reads (nothing was sent on it yet, so an immediate ``recv`` would find nothing)."""
    stream = LeanSocketStream(sock)
    stream._drained = True
    return stream


def _connected(sock: socket.socket) -> bool:
    """True once ``sock``'s connection is established (a refused one is not)."""
    try:
        sock.getpeername()
    except OSError:  # ENOTCONN: still pending, or failed (SO_ERROR says which)
        return False
    return True
