"""An extended CONNECT stream as the tunnel relay's front: what the client sees, in HTTP/2.

The backend's 101 becomes our ``:status 200`` HEADERS (RFC 8441 §5), any other answer goes
back as it came (status, headers, body), and a proxy-side failure becomes the registry's
short answer. The stream's work around it is :class:`~h2ws_proxy.http2.stream_tasks.StreamTasks`'.
"""

from __future__ import annotations

from typing import Protocol, cast

import trio

from h2ws_proxy.config import Limits
from h2ws_proxy.errors import BackendRejected, ProxyError
from h2ws_proxy.h2session import StreamUnusable
from h2ws_proxy.http.handshake import BackendAccepted, h2_success_headers
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream, StreamPhase
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller

#: Statuses whose answers carry no content-length (RFC 9110 §8.6, §15.4.5).
_NO_LENGTH_STATUSES = frozenset({204, 304})


class TunnelTasks(Protocol):
    """What the front needs of its connection's stream work (``StreamTasks``)."""

    session: ProxySession
    limits: Limits

    def refuse(self, stream_id: int, error: ProxyError) -> None:
        """Answer a proxy error on a stream (the registry's short answer)."""

    def backend_poller(self) -> BackendPoller | None:
        """The connection's backend poller, once it has one."""


class H2TunnelFront:
    """One extended CONNECT stream as the tunnel relay's :class:`TunnelFront`.

    Answers go through the session, synchronously: success is a ``:status 200`` HEADERS
    (RFC 8441 §5), a refusal the registry's short answer.
    """

    __slots__ = ("_tasks", "answer_stream", "pushable", "scope", "stream", "tunnel_client")

    open_status = 200

    def __init__(self, tasks: TunnelTasks, stream: H2Stream) -> None:
        self._tasks = tasks
        self.stream = stream
        # Trio's scope until the tunnel's run adopts its relay (``H2Stream.adopt_scope``).
        self.scope = cast(trio.CancelScope, stream.scope)
        self.answer_stream = self.tunnel_client = self.pushable = stream

    async def refuse(self, error: ProxyError) -> None:
        # Synchronous, with no checkpoint: after a dial's timeout the stream's scope
        # stays cancelled.
        stream = self.stream
        stream.phase = StreamPhase.ANSWERED
        self._tasks.refuse(stream.stream_id, error)
        stream.mark_ended_locally()

    async def relay_rejection(self, rejection: BackendRejected) -> None:
        """Pass the backend's non-101 answer back as it came (status, headers, body)."""
        stream = self.stream
        stream.phase = StreamPhase.ANSWERED
        headers = [(b":status", str(rejection.status).encode()), *rejection.headers]
        if rejection.status not in _NO_LENGTH_STATUSES:
            headers.append((b"content-length", str(len(rejection.body)).encode()))
        try:
            self._tasks.session.send_headers(
                stream.stream_id, headers, end_stream=not rejection.body
            )
        except StreamUnusable:
            return
        if not rejection.body:
            stream.mark_ended_locally()
        else:
            # The client's window decides how fast the body goes; a client that never
            # opens it does not keep the stream forever.
            with trio.move_on_after(self._tasks.limits.handshake_timeout_s):
                try:
                    await stream.send_all(rejection.body)
                    await stream.send_eof()
                except STREAM_GONE:
                    return

    def answer_upgrade(self, accepted: BackendAccepted, record: RelayRecord) -> bytes | None:
        stream = self.stream
        try:
            self._tasks.session.send_headers(stream.stream_id, h2_success_headers(accepted))
        except StreamUnusable as error:
            # The client reset the stream while the backend was answering.
            record.error = str(error)
            return None
        stream.phase = StreamPhase.OPEN
        return b""

    def client_leftover(self) -> bytes:
        return b""  # DATA before our 200 is refused (stream_registry)

    def backend_poller(self) -> BackendPoller | None:
        return self._tasks.backend_poller()
