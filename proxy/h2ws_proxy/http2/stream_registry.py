"""The streams of one HTTP/2 client connection, and what the client's frames do to them.

Rules:

* The registry is the one owner of the connection's open streams: the frontend adds a
  stream it accepted, the stream's task removes it when its work is over (``forget``).
* Called by the reader only, synchronously (STYLE R3): each event appends to a stream's
  buffer, ends it, or breaks it; nothing here awaits a stream's consumer.
* Every DATA byte's credit goes back exactly once: on consumption for a stream that takes
  it, at once for a stream that is gone, answered, or broken.
* A request body is checked against its declared length as it arrives; a mismatch, DATA
  before a tunnel's 200, or trailers on a tunnel is a stream error (PROTOCOL_ERROR, RFC
  9113 §8.1.1), which spends the connection's reset budget.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.errors import ClientProtocolError, ProxyError
from h2ws_proxy.h2session import DataReceived, ErrorCode, StreamReset, TrailersReceived
from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream, StreamPhase

#: A module global: an enum member read from its class costs several times as much, and
#: :meth:`StreamRegistry.fed_to_open_tunnel` compares with it per DATA frame.
_OPEN = StreamPhase.OPEN


class StreamRegistry:
    """The open streams of one connection, by id."""

    def __init__(
        self,
        session: ProxySession,
        writer: ClientWriter,
        *,
        count_reset: Callable[[], None],
        count_empty_frame: Callable[[], None],
        on_emptied: Callable[[], None],
        log: Callable[..., None],
        streams: dict[int, H2Stream],
    ) -> None:
        self.session = session
        self._writer = writer
        self._count_reset = count_reset
        self._count_empty_frame = count_empty_frame
        self._on_emptied = on_emptied
        self._log = log
        #: The open streams (the caller's dict: the connection's lifetime counts them too).
        self.streams = streams

    def refuse(self, stream_id: int, error: ProxyError) -> None:
        """Answer ``error``'s status. The answer ends our side; the client ends its own.

        RFC 9113 §8.1 allows RST_STREAM(NO_ERROR) after it; none is sent (a reset after an
        answer is noise a browser may count against WebSocket over HTTP/2). A malformed
        request is a stream error (RFC 9113 §8.1.1): its answer leaves the stream open and
        RST_STREAM(PROTOCOL_ERROR) follows, whether or not the client had ended its side.
        Late DATA on such a stream is acknowledged and dropped.
        """
        malformed = isinstance(error, ClientProtocolError) and error.stream_error
        extra = error.extra_headers if isinstance(error, ClientProtocolError) else ()
        self.session.respond(
            stream_id, error.status_hint, error.message, extra, end_stream=not malformed
        )
        self._log(
            "h2.request_refused", stream=stream_id, status=error.status_hint, reason=error.message
        )
        if malformed:
            self.session.reset(stream_id, ErrorCode.PROTOCOL_ERROR)  # RFC 9113 §8.1.1
            self._count_reset()  # a flood of malformed (or empty) HEADERS spends the budget

    def on_data(self, event: DataReceived) -> None:
        """DATA on a stream (its padding's credit went back in the session already)."""
        stream_id, data = event.stream_id, event.data
        if data and not event.end_stream and self.fed_to_open_tunnel(stream_id, data):
            return  # an open tunnel's message
        stream = self.streams.get(stream_id)
        if not data and not event.end_stream:
            self._count_empty_frame()  # padding does not make a frame less empty
        if stream is None:
            # A stream we already answered or reset: return the credit, drop the bytes.
            self.session.acknowledge(stream_id, len(data))
        elif stream.phase is not StreamPhase.OPEN:
            self.session.acknowledge(stream_id, len(data))
            if data and stream.phase is StreamPhase.OPENING:
                self.fail_stream(stream_id, "DATA on an extended CONNECT before its 200")
        else:
            self._deliver(stream, data, len(data))
        if event.end_stream:
            self.on_stream_ended(stream_id)

    def fed_to_open_tunnel(self, stream_id: int, data: bytes) -> bool:
        """Give ``data`` (bytes, not ending the stream) to the stream if it is an open
        tunnel whose relay takes them as they come; False: nothing was done, the caller's
        general path decides. The frontend's ``feed`` for ``receive_data_frames``: the DATA
        frames that open a read come here without event objects."""
        stream = self.streams.get(stream_id)
        if (
            stream is not None
            and stream.phase is _OPEN
            and not stream.exchange
            and stream.broken_reason is None
        ):
            stream.feed_data(data)
            return True
        return False

    def _deliver(self, stream: H2Stream, data: bytes, length: int) -> None:
        """Hand DATA of an opened stream to its consumer (a request body: within its length)."""
        if stream.broken_reason is not None:
            # Reset already (say as malformed) while later frames of the same read still
            # come: their credit goes back; they are not a second violation to count.
            self.session.acknowledge(stream.stream_id, length)
            return
        problem = stream.count_body(len(data)) if stream.exchange else None
        if problem is not None:
            self.session.acknowledge(stream.stream_id, length)
            self.fail_stream(stream.stream_id, f"malformed request: {problem}")
            return
        stream.feed_data(data)

    def on_stream_ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        problem = stream.count_body(0, ended=True) if stream.exchange else None
        if problem is not None:
            self.fail_stream(stream_id, f"malformed request: {problem}")
            return
        stream.feed_eof()

    def on_trailers(self, event: TrailersReceived) -> None:
        """Trailers end the client's side of the stream (RFC 9113 §8.1)."""
        stream_id = event.stream_id
        stream = self.streams.get(stream_id)
        if stream is None or not stream.exchange:
            self.fail_stream(stream_id, "trailers on a tunnel stream")
            return
        stream.trailers = event.headers
        self.on_stream_ended(stream_id)

    def fail_stream(self, stream_id: int, reason: str) -> None:
        """A protocol violation on one stream: reset it PROTOCOL_ERROR, end its tunnel."""
        self._log("h2.stream_error", stream=stream_id, reason=reason)
        self.session.reset(stream_id, ErrorCode.PROTOCOL_ERROR)
        self._count_reset()
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.break_stream(reason, by_peer=True)
            stream.scope.cancel()

    def on_reset(self, event: StreamReset) -> None:
        """The client reset the stream, or broke a stream rule the session reset it for."""
        stream = self.streams.get(event.stream_id)
        if stream is not None and not stream.local_ended:
            # Only work in progress counts: a client cancelling its half of a stream we
            # already answered (say a 502 while a backend restarts) is not an attack.
            self._count_reset()
        if stream is not None:
            stream.break_stream(f"client reset the stream ({event.error_code!r})", by_peer=True)
            # Close the backend at once, even if no pump is waiting on the client side.
            stream.scope.cancel()

    def on_window_change(self, stream_id: int) -> None:
        """Wake the sender(s) the new credit may unblock.

        A connection-wide change (WINDOW_UPDATE on stream 0, a new initial window) wakes
        only the streams that found a window shut (``wait_for_window``), not every stream:
        clients send those updates all the time, and a hostile one may send them by the
        million.
        """
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                self._writer.forget_window_waiter(stream)
                stream.wake_writer()
            return
        for stream in self._writer.take_window_waiters():
            stream.wake_writer()

    def forget(self, stream: H2Stream) -> None:
        """A stream's work is over (its task has logged it): drop it from the registry."""
        self.streams.pop(stream.stream_id, None)
        if not self.streams:
            self._on_emptied()
