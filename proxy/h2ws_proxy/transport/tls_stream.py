"""A client's TLS connection as a trio stream: OpenSSL over memory BIOs, one ``recv`` per
read and one ``send`` per write, without trio's ``SSLStream`` machinery (its retries,
buffers and checkpoints doubled the CPU per message: bench/README.md).

OpenSSL on the socket (``tls_socket_stream.py``, still the backends') reads a record's
header and its body with two ``read``s, and a ``poll`` must then tell whether more is
there. Here one ``recv`` of up to 64 KiB feeds the incoming BIO (``tls_wire.py``: the
socket's side), and plaintext is taken while whole records are there (``tls_records.py``
counts them from their headers: no want-read is paid to find there are none).

Rules:

* One reader and one writer may use it at once (the frontends' tasks). Every ciphertext
  OpenSSL makes goes through the outgoing BIO and ``_unsent`` to the socket in the order
  made, whoever sends it (the handshake, a write, a read that made a reply or an alert).
* ``receive_some`` is always a checkpoint: it waited, or it yields once. After a ``recv``
  that did not fill its buffer, once the records fed are read, the next receive waits
  for the socket first. Records without plaintext (a key update, a post-handshake
  message) are read like the others; if only such were whole, OpenSSL's want-read says so.
* Writes keep ``whole_writes``' contract (capabilities.ClientStream) as OpenSSL on the
  socket has it: ``send_nowait`` takes all or returns 0, and after a 0 the next write
  begins with the same bytes and is no shorter (else refused). The BIO takes every write
  whole; what the socket does not take is kept in ``_unsent`` (one write's records at
  most: later writes flush it first), the write returns 0, and its repetition skips the
  bytes encrypted already. ``send_all`` encrypts ``_WRITE_CHUNK`` at a time.
* https-compatible: a close without close_notify (RFC 9112 §9.8), or with it, ends the
  stream (``b""``); other TLS or socket errors are ``trio.BrokenResourceError`` with the
  original as ``__cause__``. An end met after some plaintext is told by the next receive.
* Not half-closeable: ``end_now`` sends close_notify and a FIN, and reads then drain the
  raw socket (lingering). ``aclose`` sends close_notify if the socket takes it at once.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from h2ws_proxy.transport.tls_wire import DEFAULT_RECEIVE_SIZE, TLSWire

#: ``send_all`` encrypts this much plaintext at a time, flushing each to the socket before
#: the next (the bound on what a write keeps in ``_unsent``).
_WRITE_CHUNK = 65536


class LeanTLSStream(TLSWire, trio.abc.Stream):
    """The server's side of TLS over a connected TCP socket (handshake not done yet)."""

    #: Writes all or nothing; a 0 is repeated with the same bytes (the module's rules).
    whole_writes = True

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock, context)
        #: Plaintext bytes of the write that returned 0 that are encrypted already: its
        #: repetition's first bytes, not encrypted again.
        self._repeat = 0
        #: The last read filled its request: OpenSSL may hold the rest of a record.
        self._held = False
        #: The stream ended (close_notify, or EOF with no whole record left): b"" from now.
        self._ended = False
        #: How the stream ended, met after some plaintext: told by the next receive.
        self._end_met: OSError | None = None
        #: After ``end_now``: reads drain the raw socket.
        self._raw = False
        self._sending = self._receiving = False

    @classmethod
    def from_socket_stream(
        cls, stream: trio.SocketStream, context: ssl.SSLContext
    ) -> LeanTLSStream:
        """Take over ``stream``'s socket (``stream`` must not be used afterwards)."""
        family, kind, proto = stream.socket.family, stream.socket.type, stream.socket.proto
        return cls(socket.socket(family, kind, proto, fileno=stream.socket.detach()), context)

    # ---- the handshake and what it decided ----

    async def do_handshake(self) -> None:
        """The TLS handshake; ``trio.BrokenResourceError`` (cause: the TLS error) if it fails."""
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush()  # our flight, before waiting for the peer's
                if self._eof:
                    raise self._broken(ssl.SSLEOFError("EOF in the TLS handshake")) from None
                while not self._recv_into_bio():  # the peer's next flight
                    await self._wait_readable()
            except OSError as error:  # ssl.SSLError is one
                self._flush_nowait()  # the alert saying why
                self._discard_unread()
                raise self._broken(error) from error
        await self._flush()  # the last flight (TLS 1.2's Finished; TLS 1.3's tickets)
        await trio.lowlevel.checkpoint()

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    def server_context(self) -> ssl.SSLContext:
        """The context the handshake ended with: the listener's, or the one its SNI
        callback switched to (the certificate the client was served)."""
        return self._tls.context

    # ---- trio.abc.Stream: reads ----

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        size = DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        self._receiving = True
        try:
            if self._raw:
                return await self._receive_raw(size)
            waited = False
            records = self._records
            if (
                self._drained  # the usual case after a message: straight to the wait
                and not (self._held or self._eof or self._ended or self._end_met)
                and records.fed - self._incoming.pending >= records.whole_end
            ):
                data = None
            else:
                data = self._read_records(size)
            while data is None:  # nothing whole fed, and the socket had nothing more
                await self._wait_readable()
                waited = True
                if self._recv_into_bio():
                    data = self._read_records(size)
            if not waited:
                await trio.lowlevel.checkpoint()
            return data
        finally:
            self._receiving = False

    def _read_records(self, size: int) -> bytes | None:
        """Plaintext of the records fed, up to ``size`` (reading on while a ``recv`` fills
        its buffer); b"" at the end; None if none is whole and the socket was empty."""
        if self._ended:
            return b""
        if self._end_met is not None:
            end, self._end_met = self._end_met, None
            return self._ended_by(end)
        tls, records, incoming = self._tls, self._records, self._incoming
        first: bytes | None = None  # (one record is the usual read: no list, no join)
        chunks: list[bytes] | None = None
        wanted = size
        while wanted:
            if not (self._held or records.fed - incoming.pending < records.whole_end):
                # Nothing whole left: read on only if the last recv filled its buffer.
                if self._drained or self._eof:
                    break
                if not self._recv_into_bio():
                    self._drained = True
                    break
                continue
            try:
                more = tls.read(wanted)
            except ssl.SSLWantReadError:  # only records without plaintext were whole
                self._held = False
                continue
            except OSError as error:  # ssl.SSLZeroReturnError (close_notify) is one
                self._held = False
                self._flush_nowait()  # the alert, if OpenSSL made one
                if first is not None:
                    self._end_met = error
                    break
                return self._ended_by(error)
            got = len(more)
            self._held = got == wanted
            wanted -= got
            if first is None:
                first = more
            elif chunks is None:
                chunks = [first, more]
            else:
                chunks.append(more)
        if self._outgoing.pending:  # a reply OpenSSL made (a key update's)
            self._flush_nowait()
        if first is not None:
            return first if chunks is None else b"".join(chunks)
        if self._eof:  # the peer closed, no whole record left (close_notify or not)
            self._ended = True
            return b""
        return None

    def _ended_by(self, error: OSError) -> bytes:
        """b"" for close_notify or an EOF (RFC 9112 §9.8's incomplete close); else raise."""
        if isinstance(error, ssl.SSLZeroReturnError | ssl.SSLEOFError):
            self._ended = True
            return b""
        raise self._broken(error) from error

    async def _receive_raw(self, size: int) -> bytes:
        """After ``end_now``: the socket's bytes as they are (lingering drops them)."""
        while True:
            try:
                data = self._sock.recv(size)
                break
            except BlockingIOError:
                await self._wait_readable()
            except OSError as error:
                raise self._broken(error) from error
        await trio.lowlevel.checkpoint()
        return data

    # ---- trio.abc.Stream: writes ----

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._check_open()
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            with memoryview(data) as view:
                start = self._repeated(len(view))
                while True:
                    await self._flush()
                    if start >= len(view):
                        break
                    chunk = view[start : start + _WRITE_CHUNK]
                    self._encrypt(chunk)
                    start += len(chunk)
        finally:
            self._sending = False

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """All of ``data`` if the socket takes its records at once; else 0, and the next
        write must begin with the same bytes and be no shorter (the module's rules).

        For the frontend's inline send (writes between the writer task's sends). 0 too
        while ``send_all`` is in progress, or while earlier records wait for the socket.
        """
        if self._sending:
            return 0
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        if self._unsent and not self._push():
            return 0
        size = len(data)
        start = self._repeated(size) if self._repeat else 0
        if start < size:
            try:
                self._tls.write(data[start:] if start else data)
            except OSError as error:  # ssl.SSLError: after a fatal alert, say
                raise self._broken(error) from error
        encrypted = self._outgoing.read()
        try:
            sent = self._sock.send(encrypted)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            raise self._broken(error) from error
        if sent == len(encrypted):
            return size
        self._unsent += memoryview(encrypted)[sent:]
        self._repeat = size
        return 0

    def _repeated(self, size: int) -> int:
        """How many of a write's first bytes were encrypted by the write it repeats."""
        repeat = self._repeat
        if repeat:
            if size < repeat:
                raise self._broken(ssl.SSLError("a repeated write was shorter (bad write retry)"))
            self._repeat = 0
        return repeat

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        try:
            self._tls.write(data)
        except OSError as error:  # ssl.SSLError: after a fatal alert, say
            raise self._broken(error) from error

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await self._wait_writable()

    # ---- the end ----

    def end_now(self) -> None:
        """Our side is done: close_notify if the socket takes it at once, then a FIN. What
        the peer still sends can only be drained after it (read as raw bytes, as lingering
        does); nothing more can be sent."""
        self._check_open()
        self._send_close_notify()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._raw = True

    async def aclose(self) -> None:
        if not self._closed:
            if not self._raw:
                self._send_close_notify()  # if the socket takes it now; no wait for the peer's
            self._closed = True
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
        await trio.lowlevel.checkpoint()

    def _send_close_notify(self) -> None:
        # SSL_shutdown writes our close_notify, then asks for the peer's: a want-read here.
        with contextlib.suppress(OSError, ValueError):
            self._tls.unwrap()
        self._flush_nowait()
