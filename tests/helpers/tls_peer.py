"""A TLS client over memory BIOs whose every byte the test places (records split, joined,
followed by close_notify), against the proxy's server-side LeanTLSStream on loopback TCP;
and a watchdog for a loop that would never yield."""

from __future__ import annotations

import contextlib
import signal
import socket
import ssl
from collections.abc import Iterator

import trio
import trustme

from h2ws_proxy.transport.tls_stream import LeanTLSStream


class Client:
    """A TLS client over memory BIOs: its records are made here and sent when the test says."""

    def __init__(self, sock: trio.socket.SocketType, context: ssl.SSLContext) -> None:
        self.raw = sock
        self.sock = trio.SocketStream(sock)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="proxy.test")

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.sock.send_all(self.outgoing.read())
                self.incoming.write(await self.sock.receive_some(65536))
        await self.sock.send_all(self.outgoing.read())

    def records(self, *messages: bytes) -> bytes:
        """One record per message, not sent: the bytes to send."""
        for message in messages:
            self.tls.write(message)
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """Our close_notify, not sent: the bytes to send."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        return self.outgoing.read()

    async def receive(self, size: int) -> bytes:
        """``size`` bytes of plaintext, reading the socket as needed."""
        received = b""
        while len(received) < size:
            try:
                received += self.tls.read(size - len(received))
            except ssl.SSLWantReadError:
                data = await self.sock.receive_some(65536)
                assert data, "the server closed"
                self.incoming.write(data)
        return received


def contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("proxy.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def connected(
    ca: trustme.CA,
    *,
    small_buffers: bool = False,
    tiny_both_ways: bool = False,
    server_context: ssl.SSLContext | None = None,
    client_context: ssl.SSLContext | None = None,
) -> tuple[LeanTLSStream, Client]:
    default_server, default_client = contexts(ca)
    server_context = server_context or default_server
    client_context = client_context or default_client
    listener = socket.socket()
    dialled = trio.socket.socket()
    if tiny_both_ways:  # set before the connection: the windows are small from the start
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        dialled.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        dialled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    if small_buffers:
        dialled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with listener:
        await dialled.connect(listener.getsockname())
        accepted, _ = listener.accept()
    if small_buffers:
        accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server = LeanTLSStream(accepted, server_context)
    client = Client(dialled, client_context)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.do_handshake)
        nursery.start_soon(client.handshake)
    return server, client


class Stuck(Exception):
    """The event loop did not come back (a synchronous loop that never ends)."""


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Interrupt a busy loop that never yields (trio cannot cancel it): a safety net, not
    a wait for anything."""

    def fire(signum: int, frame: object) -> None:
        raise Stuck(f"the event loop was stuck for {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
