"""The WebSocket once open, for ``h2ws-proxy connect``: stdin's lines out, messages in.

One wsproto connection (client side: it masks our frames, answers pings, reassembles
fragmented messages, runs the close handshake) over a byte stream: the HTTP/2 stream after
the 200 or the socket after the 101. The same code serves both paths.

Rules:

* Two tasks: stdin's reader sends a message per line (the line's ``\\n`` removed), and at
  end of file our Close 1000; the receiver prints each message as it completes and answers
  what the protocol asks (pongs, the Close reply). Sends go through one lock, so frames
  never interleave on the stream.
* stdin is read by a worker thread (``os.read`` on fd 0), abandoned on exit: that works for
  terminals and pipes alike and never turns the terminal non-blocking (an ``FdStream`` on
  fd 0 would, for the shell too). Not ``sys.stdin.buffer.readline``: a thread still blocked
  in it holds the buffer's lock, and the interpreter aborts at exit (SIGABRT) over it.
* After our Close, the server's reply is awaited at most ``--close-timeout-s``.
* How it ended decides the exit code: a completed close handshake with 1000 or 1001 is
  clean; another code, an end of stream without a Close, a broken connection or no reply
  in time raise :class:`ClientFailure` (exit 5).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Protocol

import trio
from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from h2ws_proxy.client.options import ClientFailure, ConnectOptions, Exit
from h2ws_proxy.transport.errors import STREAM_GONE

#: Close codes that end a WebSocket normally (RFC 6455 §7.4.1); 1005 is a Close with no
#: code at all, which says nothing went wrong.
NORMAL_CLOSES = frozenset(
    {CloseReason.NORMAL_CLOSURE, CloseReason.GOING_AWAY, CloseReason.NO_STATUS_RCVD}
)
READ_SIZE = 65536


class WebSocketMachine(Protocol):
    """What we use of wsproto's ``Connection`` and ``WSConnection`` alike."""

    @property
    def state(self) -> ConnectionState: ...

    def send(self, event: Event) -> bytes: ...

    def receive_data(self, data: bytes | None) -> None: ...

    def events(self) -> Iterable[Event]: ...


class MessageLoop:
    """Run with :meth:`run`; see the module's rules."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        ws: WebSocketMachine,
        options: ConnectOptions,
        log: Callable[[str], None],
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._options = options
        self._log = log
        self._send_lock = trio.Lock()
        self._receive_scope = trio.CancelScope()
        self._parts: list[bytes | bytearray | str] = []
        self._close_sent = False

    async def run(self) -> None:
        """Until the WebSocket closed cleanly; raises ClientFailure otherwise."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_lines)
            try:
                await self._receive()
            finally:
                nursery.cancel_scope.cancel()

    async def _send(self, event: Event) -> None:
        async with self._send_lock:
            try:
                data = self._ws.send(event)
            except LocalProtocolError:
                return  # the connection closed meanwhile: nothing may be sent
            await self._stream.send_all(data)

    # ---- out ----

    async def _send_lines(self) -> None:
        async for payload in _stdin_lines():
            message: BytesMessage | TextMessage = (
                BytesMessage(data=payload)
                if self._options.binary
                else TextMessage(data=payload.decode("utf-8", "replace"))
            )
            try:
                await self._send(message)
            except STREAM_GONE:
                return  # the receiver reports how the connection ended
        self._log("* stdin ended: sending Close 1000")
        self._close_sent = True
        self._receive_scope.deadline = trio.current_time() + self._options.close_timeout_s
        try:
            await self._send(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
        except STREAM_GONE:
            return

    # ---- in ----

    async def _receive(self) -> None:
        timeout = self._options.close_timeout_s
        with self._receive_scope:
            # Frames that arrived with the handshake's answer are already in wsproto.
            for event in self._ws.events():
                if await self._handle(event):
                    return
            while True:
                try:
                    data = await self._stream.receive_some(READ_SIZE)
                except STREAM_GONE as error:
                    raise ClientFailure(
                        Exit.ABNORMAL_CLOSE,
                        f"the connection broke before the WebSocket closed: {error}",
                    ) from None
                if not data:
                    raise ClientFailure(
                        Exit.ABNORMAL_CLOSE,
                        "the server ended the connection without a WebSocket Close",
                    )
                try:
                    self._ws.receive_data(bytes(data))
                    for event in self._ws.events():
                        if await self._handle(event):
                            return
                except RemoteProtocolError as error:
                    raise ClientFailure(
                        Exit.ABNORMAL_CLOSE, f"the server broke the WebSocket protocol: {error}"
                    ) from None
        raise ClientFailure(
            Exit.ABNORMAL_CLOSE,
            f"no Close reply from the server within {timeout:g} s (--close-timeout-s)",
        )

    async def _handle(self, event: Event) -> bool:
        """Act on one event; True once the close handshake is complete."""
        if isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if event.message_finished:
                self._print(self._parts)
                self._parts = []
        elif isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, CloseConnection):
            return await self._closed(event)
        return False

    async def _closed(self, event: CloseConnection) -> bool:
        code, reason = event.code, event.reason or ""
        self._log(f"* server Close: {code} {reason}".rstrip())
        if not self._close_sent:
            self._close_sent = True
            # The server may have gone at once: its Close said everything.
            with contextlib.suppress(*STREAM_GONE):
                await self._send(event.response())
        if code not in NORMAL_CLOSES:
            shown = f"{code} {reason!r}" if reason else str(code)
            raise ClientFailure(
                Exit.ABNORMAL_CLOSE,
                f"the server closed the WebSocket with {shown}; see the server's log",
            )
        return True

    def _print(self, parts: list[bytes | bytearray | str]) -> None:
        out = sys.stdout.buffer
        if all(isinstance(part, str) for part in parts):
            out.write("".join(str(part) for part in parts).encode("utf-8") + b"\n")
        else:
            data = b"".join(part for part in parts if not isinstance(part, str))
            out.write((data if self._options.raw else data.hex().encode()) + b"\n")
        out.flush()


async def _stdin_lines() -> AsyncIterator[bytes]:
    """stdin's lines without their ``\n``; a last line without one counts too."""
    pending = b""
    while True:
        chunk = await trio.to_thread.run_sync(os.read, 0, READ_SIZE, abandon_on_cancel=True)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending
