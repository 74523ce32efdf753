"""A TLS connection as a trio stream, with OpenSSL working on the socket itself.

Client connections are served with it; backend connections use it in client mode
(``tls_client.py`` adds what a backend needs: half-close, an idle check).

``trio.SSLStream`` runs OpenSSL over memory BIOs: every read and write goes through its
retry machinery, two buffers and a plain ``trio.SocketStream`` underneath, each a full
checkpoint. Per WebSocket message that doubled the proxy's CPU against plain TCP in the
ping-pong and bulk benchmarks. Here the stdlib ``ssl.SSLSocket`` drives the non-blocking
socket directly (as nginx and HAProxy drive OpenSSL), and the stream only waits when
OpenSSL says it must:

* ``SSLWantReadError`` → wait until the socket is readable (through ``trio_waits``'
  waiter, as ``LeanSocketStream``); ``SSLWantWriteError`` → writable (either can come
  from either direction: TLS 1.3 key updates, or a write that needs the peer's records
  first). Then the same call is repeated with the same arguments,
  as OpenSSL requires of a write.
* ``receive_some`` is always a checkpoint, as with :class:`~h2ws_proxy.transport.socket_stream
  .LeanSocketStream`: it waited, or it yields once when OpenSSL already had bytes.
  ``send_all`` yields only when it has to wait (every caller receives between sends).
* A receive takes every record that is there already, not one: OpenSSL hands over one
  record per read and reads the socket only for the record it needs (no read-ahead), so
  after a record that did not fill the read, plaintext OpenSSL still holds
  (``pending()``) or bytes on the socket (a ``poll`` that does not wait) mean read on;
  neither means the peer has nothing more for now, and the next receive waits for the
  socket before it reads. A read that finds nothing is a want-read, raised and caught,
  several times the cost of the poll (bench/README.md), and it was the usual answer to
  every receive after a message.
* https-compatible: a peer that closes without close_notify ends the stream (``b""``),
  as browsers do (RFC 9112 §9.8); a close_notify ends it too. Other TLS or socket errors
  are ``trio.BrokenResourceError`` with the original as ``__cause__``.
* Like ``trio.SSLStream`` this is not half-closeable: TLS has no half-close.
* ``aclose`` sends our close_notify if the socket takes it at once, and closes; it never
  waits for the peer's.

One reader and one writer may use it at once (the frontends' reader and writer tasks):
OpenSSL allows a read between a write that must be repeated and its repetition.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

import trio

from h2ws_proxy.transport.socket_stream import socket_is_quiet
from h2ws_proxy.transport.trio_waits import ReadableWait, readable_waiter

DEFAULT_RECEIVE_SIZE = 65536
#: The most plaintext one TLS record carries (RFC 8446 §5.1). OpenSSL hands over one record
#: per read; a full one suggests more behind it, read on at once (see ``_read_on``).
_RECORD_PLAINTEXT_MAX = 16384
#: How often a task asked to wait for the other task's direction retries (see _wait_for).
_CROSSED_WAIT_POLL_S = 0.001
#: After a failed handshake, at most this many 64 KiB reads are dropped before closing.
_DISCARD_READS = 4


class LeanTLSStream(trio.abc.Stream):
    """A TLS connection over a connected TCP socket (handshake not done yet): the server's
    side, or with ``server_hostname`` the client's (the name sent as SNI, unless it is an
    IP address, and verified as the context says)."""

    #: A record is written whole or not at all, and one that had to wait is repeated with
    #: the same bytes (capabilities.ClientStream).
    whole_writes = True

    def __init__(
        self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str | None = None
    ) -> None:
        sock.setblocking(False)
        # wrap_socket takes over the descriptor (``sock`` is detached): wait on ``_tls``.
        self._tls = context.wrap_socket(
            sock,
            server_side=server_hostname is None,
            server_hostname=server_hostname,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=True,
        )
        self._fd = self._tls.fileno()
        #: The running loop's wait for readability (trio_waits.py: one coroutine frame and
        #: kept records, where trio's public wait makes five frames and two records), taken
        #: at the first wait: a stream lives in one loop.
        self._wait: ReadableWait | None = None
        self._closed = False
        self._sending = False
        self._receiving = False
        #: How the stream ended, met while reading on past a full record (``_read_on``):
        #: told by the next ``receive_some``, after the bytes read before it.
        self._end_met: OSError | None = None
        #: The last receive found nothing more to read (see the module docstring): the next
        #: one waits for the socket before it reads.
        self._drained = False

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
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
                await self._wait_for(writable=isinstance(want, ssl.SSLWantWriteError))
            except OSError as error:  # ssl.SSLError is one
                self._discard_unread()
                raise self._broken(error) from error
        await trio.lowlevel.checkpoint()

    def _discard_unread(self) -> None:
        """Drop what the client sent that OpenSSL did not read (bounded, no waiting).

        A failed handshake leaves the rest of the client's bytes (say a plaintext HTTP
        request sent to the TLS port) unread; closing then makes the kernel send a reset,
        which can destroy OpenSSL's alert before the client reads it.
        """
        for _ in range(_DISCARD_READS):
            try:
                # The plain socket's recv on the same descriptor, below OpenSSL.
                if not socket.socket.recv(self._tls, 65536, socket.MSG_DONTWAIT):
                    return
            except OSError:
                return

    def selected_alpn_protocol(self) -> str | None:
        return self._tls.selected_alpn_protocol()

    def server_context(self) -> ssl.SSLContext:
        """The context the handshake ended with: the listener's, or the one its SNI
        callback switched to (the certificate the client was served)."""
        return self._tls.context

    # ---- trio.abc.Stream ----

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        size = DEFAULT_RECEIVE_SIZE if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        self._check_open()
        self._receiving = True
        try:
            waited = self._drained
            if waited:
                self._drained = False
                await self._wait_for(writable=False)
            while True:
                try:
                    self._raise_end_met()
                    data = self._tls.recv(size)
                    break
                except ssl.SSLZeroReturnError:  # close_notify
                    data = b""
                    break
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
                    await self._wait_for(writable=isinstance(want, ssl.SSLWantWriteError))
                    waited = True
                except OSError as error:
                    raise self._broken(error) from error
            if data and size > len(data):
                data = self._read_on(data, size)
            if not waited:
                await trio.lowlevel.checkpoint()
            return data
        finally:
            self._receiving = False

    def _raise_end_met(self) -> None:
        """Raise the end ``_read_on`` met, if it met one (once)."""
        end, self._end_met = self._end_met, None
        if end is not None:
            raise end

    def _read_on(self, first: bytes, size: int) -> bytes:
        """``first`` and the records that can be read now, up to ``size``; sets
        ``_drained`` when nothing more is there (see the module docstring).

        OpenSSL hands over one record per read, so a 64 KiB read of a bulk sender took four
        trips through the reader (and four writes on), and two messages sent together two.
        After a full record it reads on at once (more usually follows); after a short one
        only if OpenSSL holds plaintext or the socket has bytes. An end met on the way
        (close_notify, an error) is kept for the next call, as it would have come there.
        """
        chunks = [first]
        total, last = len(first), len(first)
        tls = self._tls
        while total < size:
            if last < _RECORD_PLAINTEXT_MAX and not tls.pending() and socket_is_quiet(tls):
                self._drained = True
                break
            try:
                more = tls.recv(size - total)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except OSError as error:  # ssl.SSLZeroReturnError (close_notify) is one
                self._end_met = error
                break
            if not more:  # the peer closed without close_notify: b"" again next time
                break
            chunks.append(more)
            last = len(more)
            total += last
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._check_open()
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            with memoryview(data) as view:
                sent = 0
                while sent < len(view):
                    try:
                        # After a want-read/write this repeats the very same write, as
                        # OpenSSL requires.
                        sent += self._tls.send(view[sent:])
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as want:
                        await self._wait_for(writable=isinstance(want, ssl.SSLWantWriteError))
                    except OSError as error:
                        raise self._broken(error) from error
        finally:
            self._sending = False

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send ``data`` now if OpenSSL and the socket take all of it at once; else 0.

        For the frontend's inline send (writes between the writer task's sends). OpenSSL
        writes all or nothing here (no partial writes), and after a write that had to wait
        (0 returned) the next write must begin with the same bytes and be no shorter: the
        caller keeps them at the head of its output and the writer task's next ``send_all``
        (or another call here) repeats them. 0 too while ``send_all`` is in progress: its
        own write may be the one that must be repeated.
        """
        if self._sending:
            return 0
        self._check_open()
        try:
            return int(self._tls.send(data))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return 0
        except OSError as error:
            raise self._broken(error) from error

    async def wait_send_all_might_not_block(self) -> None:
        self._check_open()
        await trio.lowlevel.wait_writable(self._tls)

    def end_now(self) -> None:
        """Our side is done: close_notify if the socket takes it at once, then a FIN. What
        the peer still sends can only be drained after it (read as raw bytes, as lingering
        does); nothing more can be sent."""
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")
        with contextlib.suppress(OSError, ValueError):
            self._tls.unwrap()
        with contextlib.suppress(OSError):
            self._tls.shutdown(socket.SHUT_WR)  # and reads from here on are the raw socket's

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            # Our close_notify, if the socket takes it now; the peer's is not awaited.
            with contextlib.suppress(OSError, ValueError):
                self._tls.unwrap()
            trio.lowlevel.notify_closing(self._tls)
            self._tls.close()
        await trio.lowlevel.checkpoint()

    # ---- internals ----

    async def _wait_for(self, *, writable: bool) -> None:
        """Wait until the socket is writable or readable, as OpenSSL asked (waiting is a
        checkpoint).

        The reader waits for readability and the writer for writability; should OpenSSL
        ever ask one of them for the other's direction (renegotiation is off, TLS 1.3
        key updates do not), trio refuses a second waiter on it: then this polls briefly
        instead, and the call is repeated as usual.
        """
        try:
            if writable:
                await trio.lowlevel.wait_writable(self._tls)
            else:
                wait = self._wait
                if wait is None:
                    wait = self._wait = readable_waiter()
                await wait(self._fd)
        except trio.BusyResourceError:
            await trio.sleep(_CROSSED_WAIT_POLL_S)
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the stream was closed")

    def _broken(self, error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError("the stream was closed")
        return trio.BrokenResourceError(f"TLS connection error: {error}")
