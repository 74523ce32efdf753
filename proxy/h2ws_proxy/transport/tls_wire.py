"""The socket under a client's TLS connection over memory BIOs (``tls_stream.py``):
ciphertext in, fed to OpenSSL's incoming BIO with its records counted, and out, sent in
the order OpenSSL made it.

Rules:

* One ``recv`` of up to 64 KiB per read of the socket; one that does not fill its buffer
  marks the socket drained (the next read waits for it first).
* Everything OpenSSL writes to the outgoing BIO goes to the socket through ``_unsent``,
  oldest first, whoever sends it: what the socket does not take is kept there (bounded by
  the stream: one write's records at most, and the replies and alerts reads make).
* Waits for readability go through ``trio_waits``' waiter, as ``LeanSocketStream``'s.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from h2ws_proxy.transport.tls_records import RecordBounds
from h2ws_proxy.transport.trio_waits import ReadableWait, readable_waiter

DEFAULT_RECEIVE_SIZE = 65536
#: After a failed handshake, at most this many 64 KiB reads are dropped before closing.
_DISCARD_READS = 4


class TLSWire:
    """A connected TCP socket and the memory BIOs of OpenSSL's server side over it."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        #: The running loop's wait for readability (trio_waits.py), taken at the first
        #: wait: a stream lives in one loop.
        self._wait: ReadableWait | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._records = RecordBounds()
        #: Ciphertext made but not taken by the socket yet, sent before anything newer.
        self._unsent = bytearray()
        #: The last ``recv`` did not fill its buffer: the next one waits for the socket.
        self._drained = False
        #: The socket gave EOF (fed to the BIO as its end).
        self._eof = False
        self._closed = False

    # ---- in ----

    def _recv_into_bio(self) -> bool:
        """One non-blocking ``recv`` into the incoming BIO; False if nothing was there."""
        try:
            data = self._sock.recv(DEFAULT_RECEIVE_SIZE)
        except BlockingIOError:
            return False
        except ConnectionResetError:  # a peer that closed with our bytes unread (tickets)
            data = b""  # ends the stream as a bare close does (as OpenSSL on the socket)
        except OSError as error:
            raise self._broken(error) from error
        if not data:
            self._eof = True
            self._incoming.write_eof()
            return True
        self._incoming.write(data)
        self._records.feed(data)
        self._drained = len(data) < DEFAULT_RECEIVE_SIZE
        return True

    def _discard_unread(self) -> None:
        """Drop what the client sent that OpenSSL did not read (bounded, no waiting): with
        unread input (a plaintext request to the TLS port, say) closing makes the kernel
        send a reset, which can destroy OpenSSL's alert before the client reads it."""
        for _ in range(_DISCARD_READS):
            try:
                if not self._sock.recv(65536, socket.MSG_DONTWAIT):
                    return
            except OSError:
                return

    # ---- out ----

    async def _flush(self) -> None:
        """Send every record made so far, waiting for the socket as needed."""
        while not self._push():
            await self._wait_writable()

    def _flush_nowait(self) -> None:
        """:meth:`_push` where a broken socket is for the next read or write to meet (an
        alert, a close_notify, a reply a read made)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._push()

    def _push(self) -> bool:
        """Send the records made so far as far as the socket takes them at once; True if
        none is left."""
        unsent = self._unsent
        if self._outgoing.pending:
            unsent += self._outgoing.read()
        if not unsent:
            return True
        try:
            sent = self._sock.send(unsent)
        except BlockingIOError:
            return False
        except OSError as error:
            raise self._broken(error) from error
        del unsent[:sent]
        return not unsent

    async def _wait_readable(self) -> None:
        wait = self._wait
        if wait is None:
            wait = self._wait = readable_waiter()
        await wait(self._fd)
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")

    async def _wait_writable(self) -> None:
        await trio.lowlevel.wait_writable(self._sock)
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")

    def _broken(self, error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError("the stream was closed")
        return trio.BrokenResourceError(f"TLS connection error: {error}")
