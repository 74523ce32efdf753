"""An ordinary request's HTTP/2 stream as the exchange's client side (and the relay's front).

Rules: the answer's head, body and end go through the session on the stream's id; a stream
that broke (reset, connection lost) raises trio's ``BrokenResourceError``, which the
exchange treats as the client gone; credit for request-body bytes goes back one read late,
after the exchange wrote them on (as for tunnels). Between the exchange's ``hold`` and
``flush`` the output is one batch of the writer's (sent at its end, inline when the writer is
idle); a batch must never stay open across a yield, so every wait here flushes first.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from h2ws_proxy.errors import ProxyError
from h2ws_proxy.h2session import StreamUnusable
from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.http2.stream import BODY_READ_SIZE, H2Stream


class H2ClientSide:
    """An ordinary request's HTTP/2 stream as the request relay's :class:`RequestFront`."""

    for_h2 = True
    watches_disconnect = False

    def __init__(
        self, stream: H2Stream, writer: ClientWriter, refuse: Callable[[int, ProxyError], None]
    ) -> None:
        self._stream = stream
        self._session = stream.session
        self._connection = stream.connection
        self._writer = writer
        self._refuse = refuse
        #: An output batch of ours is open (see ``hold``).
        self._holding = False
        #: A reset cancels the exchange's own scope.
        self.on_start = stream.adopt_scope

    async def refuse(self, error: ProxyError) -> None:
        self._refuse(self._stream.stream_id, error)
        self._stream.mark_ended_locally()

    async def cut_short(self) -> None:
        pass  # the front end resets the stream as it ends it (stream_tasks)

    async def receive_body(self) -> bytes:
        # Credit for each chunk goes back on the next call, after the exchange wrote it on.
        return await self._stream.receive_some(BODY_READ_SIZE)

    def request_trailers(self) -> list[tuple[bytes, bytes]]:
        return self._stream.trailers or []

    async def wait_gone(self) -> None:
        # A reset or a lost connection cancels the stream's scope; nothing to watch here.
        await trio.sleep_forever()

    async def send_informational(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._send_headers([(b":status", str(status).encode()), *headers], end=False)
        self.flush()  # a 1xx goes at once (100-continue), and this yields
        await trio.lowlevel.checkpoint()

    async def send_head(
        self, status: int, headers: list[tuple[bytes, bytes]], *, has_body: bool
    ) -> None:
        # The fields come from the backend's HTTP/1.1 parser (h1_backend), as
        # send_response_head needs them.
        self._send(
            lambda: self._session.send_response_head(
                self._stream.stream_id, status, headers, end_stream=not has_body
            ),
            end=not has_body,
        )
        # The exchange reads the backend next, which yields: no second trip here.
        if self._writer.backlogged():
            self.flush()  # it waits for the writer
        await self._connection.wait_outbound_drained_lean()

    async def send_body(self, data: bytes) -> None:
        if self._holding:
            # What the window and the writer take at once stays in the batch; a wait flushes.
            view = memoryview(data)
            sent = self._stream.send_now(view)
            if sent == len(view) and not self._writer.backlogged():
                await trio.lowlevel.checkpoint_if_cancelled()
                return
            self.flush()
            if sent < len(view):
                await self._stream.send_all(view[sent:])
            else:
                await self._connection.wait_outbound_drained_lean()
            return
        await self._stream.send_all(data)

    async def end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        if self._stream.local_ended:
            pass
        elif trailers:
            self._send_headers(trailers, end=True)
        else:
            self._end_stream()
        self.flush()
        # The exchange ends right after; its task already yielded reading the backend.
        await trio.lowlevel.checkpoint_if_cancelled()

    def hold(self) -> None:
        if not self._holding:
            self._holding = self._writer.begin_own_batch()

    def flush(self) -> None:
        if self._holding:
            self._holding = False
            self._writer.end_batch()

    def _end_stream(self) -> None:
        stream = self._stream
        if stream.broken_reason is not None:
            raise trio.BrokenResourceError(stream.broken_reason)
        stream.mark_ended_locally()
        try:
            self._session.end_stream(stream.stream_id)
        except StreamUnusable as error:
            raise trio.BrokenResourceError(str(error)) from error

    def _send_headers(self, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        self._send(
            lambda: self._session.send_headers(self._stream.stream_id, headers, end_stream=end),
            end=end,
        )

    def _send(self, send: Callable[[], None], *, end: bool) -> None:
        """Run ``send`` (a session call that queues a head) unless the stream broke; the
        stream's errors as trio's, and our side marked ended if ``end``."""
        stream = self._stream
        if stream.broken_reason is not None:
            raise trio.BrokenResourceError(stream.broken_reason)
        try:
            send()
        except StreamUnusable as error:
            raise trio.BrokenResourceError(str(error)) from error
        if end:
            stream.mark_ended_locally()
