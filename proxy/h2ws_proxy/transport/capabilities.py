"""What a stream can do beyond ``trio.abc.Stream``, as protocols the rest of the proxy codes
against; the only place that knows which concrete stream classes provide what.

Rules:

* Callers choose a fast path by capability, found here once per stream (at accept, dial or
  tunnel start), never by testing a concrete class themselves.
* :class:`ClientStream`: every accepted client connection is one. Its ``send_nowait``
  hands over what the kernel takes at once (0 when it would wait), so a writer tries that
  first and awaits ``send_all`` only for the rest. ``whole_writes`` says a write is all or
  nothing and, having had to wait, must be repeated with at least the same bytes
  (OpenSSL's rule for TLS records). A stream of trio's own (in-memory streams in tests)
  is adapted: its ``send_nowait`` never sends, so every byte takes the awaited path.
* :class:`PollableSocket`: a backend socket a connection's poller can watch, and that can
  be written, ended and closed without waiting. A TLS backend is not one (``tls_client.py``):
  its tunnels run both pumps as tasks.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Protocol

import trio

from h2ws_proxy.transport.socket_stream import LeanSocketStream
from h2ws_proxy.transport.tls_client import LeanTLSClientStream
from h2ws_proxy.transport.tls_stream import LeanTLSStream

Bytes = bytes | bytearray | memoryview


class ClientStream(Protocol):
    """A client connection's byte stream, with writes that may go without waiting."""

    #: Writes are all or nothing, and one that had to wait is repeated with its bytes.
    whole_writes: bool

    def send_nowait(self, data: Bytes) -> int:
        """Send what can go at once; how much went (0: it would wait). Raises trio's
        ``BrokenResourceError``/``ClosedResourceError``."""
        ...

    async def send_all(self, data: Bytes) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray: ...

    async def aclose(self) -> None: ...


class PollableSocket(Protocol):
    """A socket stream driven by readiness: reads, writes and ends that never wait."""

    def fileno(self) -> int: ...

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """Bytes, ``b""`` at EOF, or None when nothing is there yet."""
        ...

    def send_nowait(self, data: Bytes) -> int: ...

    def raw_send(self) -> Callable[[Bytes], int]:
        """The socket's own ``send``, for a caller that writes to a stream it knows open
        and takes any ``OSError`` (``BlockingIOError`` too) as "nothing sent"."""
        ...

    def raw_socket(self) -> socket.socket:
        """The socket itself, for a tunnel that reads and writes it once per message: its
        own ``recv`` and ``send``, with no checks of this stream's state. A stream closed by
        ``close_now``/``aclose`` closes it (its calls raise ``OSError``, EBADF; ``detach``
        leaves it open for the TLS layer, whose tunnels never take it); ``BlockingIOError`` is
        "nothing there" or "nothing sent", any other ``OSError`` the stream broken."""
        ...

    def end_now(self) -> None:
        """Half-close (FIN) without waiting."""
        ...

    def close_now(self) -> None: ...

    def is_quiet(self) -> bool:
        """Nothing waits to be read: no EOF, no bytes, no error (:func:`idle_is_quiet`)."""
        ...


class _AwaitingStream:
    """A stream of trio's own as a :class:`ClientStream`: nothing goes without waiting."""

    whole_writes = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    def send_nowait(self, data: Bytes) -> int:
        return 0

    async def send_all(self, data: Bytes) -> None:
        await self.stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.stream.aclose()


def lean_accepted(stream: trio.abc.Stream, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """An accepted connection as the stream the proxy serves it on: a socket of trio's as
    our own socket stream, or as our TLS stream when ``ssl_context`` is given (handshake
    not done yet); any other stream as it is (tests' in-memory ones, without TLS)."""
    if isinstance(stream, trio.SocketStream):
        if ssl_context is None:
            return LeanSocketStream.from_socket_stream(stream)
        return LeanTLSStream.from_socket_stream(stream, ssl_context)
    if ssl_context is not None:
        raise TypeError("TLS is served on sockets only: give handle_client a socket stream")
    return stream


def tls_of(stream: trio.abc.Stream) -> LeanTLSStream | None:
    """The stream's TLS layer, if :func:`lean_accepted` made it one."""
    return stream if isinstance(stream, LeanTLSStream) else None


def as_client_stream(stream: trio.abc.Stream) -> ClientStream:
    """``stream`` as a :class:`ClientStream` (one of ours as it is, trio's adapted)."""
    if isinstance(stream, LeanSocketStream | LeanTLSStream):
        return stream
    return _AwaitingStream(stream)


def lean_backend(stream: trio.abc.HalfCloseableStream) -> trio.abc.HalfCloseableStream:
    """A dialled backend connection: a socket of trio's as our own socket stream (a tunnel
    makes one send and one receive per message: see socket_stream.py)."""
    if isinstance(stream, trio.SocketStream):
        return LeanSocketStream.from_socket_stream(stream)
    return stream


def as_pollable(stream: trio.abc.Stream) -> PollableSocket | None:
    """The stream as a :class:`PollableSocket`, if it is a socket of ours."""
    return stream if isinstance(stream, LeanSocketStream) else None


def peer_address(stream: trio.abc.Stream) -> tuple[str, int] | None:
    """The peer's address and port of a socket stream (None for any other, or a socket gone)."""
    if isinstance(stream, trio.SocketStream):
        try:
            address = stream.socket.getpeername()
        except OSError:
            return None
        return str(address[0]), int(address[1])
    return None


def peer_host(stream: trio.abc.Stream) -> str | None:
    """The peer's address of a socket stream (None for any other, or a socket gone)."""
    if isinstance(stream, trio.SocketStream):
        try:
            return str(stream.socket.getpeername()[0])
        except OSError:
            return None
    return None


def idle_is_quiet(stream: trio.abc.Stream) -> bool:
    """True if an idle connection has neither EOF nor unsolicited bytes waiting.

    A non-blocking ``MSG_PEEK`` on the raw socket: the common stale case (the backend closed
    its idle connection; its FIN is already here) costs one syscall instead of a failed
    request. A TLS backend connection is quiet when, besides, OpenSSL holds no bytes read
    already. Streams that are not sockets (tests' in-memory ones) are taken as quiet.
    """
    if isinstance(stream, LeanSocketStream | LeanTLSClientStream):
        return stream.is_quiet()
    if not isinstance(stream, trio.SocketStream):
        return True
    sock = stream.socket
    # Family, type and protocol given: socket.socket would otherwise ask the kernel for them
    # (getsockopt, getsockname) on every reuse.
    raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False  # reset while idle
    finally:
        raw.detach()
    return False  # b"": the backend closed it; anything else: bytes nobody asked for
