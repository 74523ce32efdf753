"""Our sans-IO HTTP/2 session as the proxy's front end drives it.

:class:`ProxySession` is :class:`~h2ws_proxy.h2session.H2Session` in the server role,
with what the front end needs around it:

* the settings the config asks for: MAX_CONCURRENT_STREAMS, the stream window, the header
  list limit, RFC 8441's ENABLE_CONNECT_PROTOCOL where the listener advertises it, and a
  connection window big enough for every stream's (one stalled stream holds only its own);
* a wake-up after every call that queued output (``on_output``: the writer's), so R2 holds
  (mutate, then flush, before any ``await``);
* local misuse of a stream (closed, reset, the connection gone) as one
  :class:`~h2ws_proxy.h2session.StreamUnusable`, so callers handle a single case;
* short answers (:meth:`respond`), the head of an answer read from an HTTP/1.1 backend
  (:meth:`send_response_head`, or :meth:`send_prepared_head` with a head made once by
  :func:`prepared_response_head`, with a whole body: :meth:`send_prepared_answer`;
  credentials never indexed as h2 did, RFC 7541 §7.1.3), and
  a drain GOAWAY that leaves open streams working (:meth:`send_goaway`, RFC 9113 §6.8).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import hpack

from h2ws_proxy.config import Limits
from h2ws_proxy.h2session import (
    ErrorCode,
    Event,
    H2Session,
    LocalSettings,
    Role,
    SessionUsageError,
    StreamUnusable,
)

Header = tuple[bytes, bytes]

_MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1
_MAX_ERROR_BODY = 16384  # one frame at the default SETTINGS_MAX_FRAME_SIZE
#: Fields HPACK must never index (RFC 7541 §7.1.3), as h2 treats them: credentials always,
#: a cookie when short enough to guess.
_SENSITIVE = frozenset({b"authorization", b"proxy-authorization"})
_SHORT_COOKIE = 20
#: RFC 9113 §8.2.2: connection-specific fields never go out on HTTP/2. The exchange drops
#: them from a backend's answer already; this is the last line, as h2's was.
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
#: Names :func:`_outbound_fields` acts on; a head without any goes out untouched.
_ACTED_ON = _SENSITIVE | _CONNECTION_SPECIFIC | {b"cookie", b"te"}


def _nothing() -> None:
    """``on_output`` until the writer sets its own."""


class ProxySession(H2Session):
    """The server-role session of one client connection, with the front end's helpers."""

    #: The front end refuses streams over the limit itself, one event at a time, so its
    #: reset budget can stop a flood before the rest of a read is answered.
    refuse_over_limit = False

    def __init__(
        self,
        limits: Limits,
        *,
        connect_protocol_enabled: bool,
        on_output: Callable[[], None] = _nothing,
    ) -> None:
        super().__init__(
            Role.SERVER,
            LocalSettings(
                max_concurrent_streams=limits.max_concurrent_streams,
                initial_window_size=limits.stream_window_bytes,
                max_header_list_size=limits.max_header_list_bytes,
                enable_connect_protocol=connect_protocol_enabled,
                connection_window=min(
                    max(limits.max_concurrent_streams * limits.stream_window_bytes, 65535),
                    _MAX_WINDOW,
                ),
            ),
        )
        self.connect_protocol_enabled = connect_protocol_enabled
        #: Called after output was queued (the writer sets it to its wake-up).
        self.on_output = on_output
        #: Consumed bytes a stream may hold before returning their credit (see
        #: ``H2Stream._acknowledge_consumed``): a quarter of its window.
        self.ack_batch_bytes = max(1, limits.stream_window_bytes // 4)

    def start(self) -> None:
        """Queue the connection preface: our SETTINGS and the raised connection window."""
        self.initiate()
        self.on_output()

    def receive(self, data: bytes) -> list[Event]:
        """Client bytes to events (the session answers PINGs and SETTINGS itself)."""
        events = self.receive_data(data)
        if self.outbound:
            self.on_output()
        return events

    def _release_held_credit(self) -> None:
        """The credit held over a read (``receive_data_frames``), then the wake-up if it
        queued WINDOW_UPDATEs: ``acknowledge`` queued nothing while it was held."""
        before = len(self.outbound)
        H2Session._release_held_credit(self)
        if len(self.outbound) != before:
            self.on_output()

    # ---- stream operations ----

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of credit (the connection's too, even if the stream is gone)."""
        if size > 0:
            before = len(self.outbound)
            self.acknowledge_received_data(stream_id, size)
            if len(self.outbound) != before:
                self.on_output()

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False
    ) -> int:
        """As much of ``data`` as the peer's windows allow; how much went. (``H2Stream.send_now``
        takes these two steps itself: a relayed chunk's send, without this frame.)"""
        sent = H2Session.send_data(self, stream_id, data, end_stream)  # (no super object)
        if sent or end_stream:
            self.on_output()
        return sent

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool = False) -> None:
        """A head as given: names lowercased and values stripped first (RFC 9113 §8.2.1)."""
        normalized = [(name.lower(), value.strip(b" \t")) for name, value in headers]
        self._send_head(stream_id, normalized, end_stream)

    def send_response_head(
        self, stream_id: int, status: int, fields: list[Header], *, end_stream: bool
    ) -> None:
        """A response head whose ``fields`` came from an HTTP/1.1 parser holding to RFC
        9112's grammar (names lowercase tokens, values with no whitespace around them: h11
        and ``backend/h1_wire`` hand them over so), hop-by-hop fields removed (the exchange's
        ``ClientSide.send_head`` contract): normalizing them again would change nothing."""
        self._send_head(stream_id, [(b":status", str(status).encode()), *fields], end_stream)

    def send_prepared_head(self, stream_id: int, head: list[Header], *, end_stream: bool) -> None:
        """A response head :func:`prepared_response_head` made (it may be shared: the
        session only reads it)."""
        try:
            H2Session.send_headers(self, stream_id, head, end_stream)  # (no super object)
        except SessionUsageError as error:
            raise StreamUnusable(str(error)) from error
        self.on_output()

    def send_prepared_answer(self, stream_id: int, head: list[Header], body: bytes) -> int:
        """:meth:`send_prepared_head` and then :meth:`send_data` of ``body`` with END_STREAM,
        in one call and one wake-up (an answer that came whole); how much of ``body`` went.
        Less than all of it: END_STREAM goes with the rest, as for :meth:`send_data`.
        (``answer_heads.send_whole_answer``, once per lean GET, takes these steps in place:
        keep the two alike.)"""
        try:
            sent = self.send_answer(stream_id, head, body)
        except SessionUsageError as error:  # (the head's: after it, DATA cannot fail)
            raise StreamUnusable(str(error)) from error
        self.on_output()
        return sent

    def _send_head(self, stream_id: int, headers: list[Header], end_stream: bool) -> None:
        try:
            super().send_headers(stream_id, _outbound_fields(headers), end_stream)
        except SessionUsageError as error:
            raise StreamUnusable(str(error)) from error
        self.on_output()

    def reset(self, stream_id: int, code: ErrorCode) -> None:
        """Reset ``stream_id`` with ``code`` unless it is already closed."""
        before = len(self.outbound)
        self.reset_stream(stream_id, code)
        if len(self.outbound) != before:
            self.on_output()

    def respond(
        self,
        stream_id: int,
        status: int,
        reason: str,
        extra: tuple[Header, ...] = (),
        *,
        end_stream: bool = True,
    ) -> None:
        """A complete short answer: ``reason`` as text (dropped if the window cannot take
        it). ``end_stream=False`` leaves the stream open for the caller's RST_STREAM (a
        stream error answered first, RFC 9113 §8.1.1)."""
        body = (reason + "\n").encode("utf-8", "replace")
        if len(body) > min(self.local_window(stream_id), _MAX_ERROR_BODY):
            body = b""
        headers = [
            (b":status", str(status).encode()),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        try:
            self.send_headers(stream_id, headers, end_stream=end_stream and not body)
            if body:
                self.send_data(stream_id, body, end_stream=end_stream)
        except SessionUsageError:
            pass

    def close_connection(self, code: ErrorCode) -> None:
        """GOAWAY with ``code``; nothing more will be sent on this connection."""
        if not self.closed:
            self.close(code)
            self.on_output()

    def send_goaway(self, code: ErrorCode | int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """GOAWAY for a drain, once: streams already open go on (RFC 9113 §6.8)."""
        if self.goaway_sent or self.closed:
            return
        super().send_goaway(code, debug)
        self.on_output()


def prepared_response_head(status: int, fields: list[Header]) -> list[Header]:
    """What :meth:`ProxySession.send_response_head` sends for ``status`` and ``fields`` (the
    same contract), made once for :meth:`ProxySession.send_prepared_head`: an answer head
    that repeats need not be put together again. Raises :class:`StreamUnusable` as it."""
    return _outbound_fields([(b":status", str(status).encode()), *fields])


def _outbound_fields(headers: list[Header]) -> list[Header]:
    """``headers`` as they may go out: connection-specific fields dropped, credentials (and
    a short cookie) never indexed; a ``te`` other than ``trailers`` refused (RFC 9113
    §8.2.2) with :class:`StreamUnusable`."""
    for name, _ in headers:
        if name in _ACTED_ON:
            break
    else:
        return headers
    fields: list[Header] = []
    for name, value in headers:
        if name in _CONNECTION_SPECIFIC:
            continue
        if name == b"te" and value.lower() != b"trailers":
            raise StreamUnusable("te other than trailers is not allowed on HTTP/2")
        if name in _SENSITIVE or (name == b"cookie" and len(value) < _SHORT_COOKIE):
            fields.append(cast(Header, hpack.NeverIndexedHeaderTuple(name, value)))
        else:
            fields.append((name, value))
    return fields
