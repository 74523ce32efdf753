"""The HTTP/2 state of one client connection and its outbound bytes. Synchronous, no I/O.

:class:`H2Session` wraps h2's ``H2Connection`` with what the proxy needs around it:

* our first SETTINGS (RFC 8441's ENABLE_CONNECT_PROTOCOL when the listener enables it) and a
  connection window big enough for every stream's window;
* an outbound buffer that every mutation appends to, with a callback so the frontend's
  writer task wakes up (R2: mutate, then flush, before any ``await``);
* h2's exceptions for streams that can no longer be written (reset, closed, connection
  going away) become one :class:`StreamUnusable`, so callers handle a single case;
* a GOAWAY from the client does not close h2's state machine (see
  :class:`_GracefulH2Connection`), and our own drain GOAWAY is written by hand;
* DATA frames of open tunnels (and of request bodies being read) bypass h2's per-frame
  work both ways (:mod:`h2ws_proxy.http2.h2lib_direct`); everything else is h2's;
* per new stream, h2 neither counts the open streams nor decodes (or encodes) a header
  block it has just decoded (encoded) while nothing can change the result (see
  :class:`_GracefulH2Connection`).
"""

from __future__ import annotations

from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import h2.stream
from h2.errors import ErrorCodes
from hyperframe.frame import Frame, GoAwayFrame

from h2ws_proxy.config import Limits
from h2ws_proxy.http2.h2lib_direct import DirectData, InboundFrames
from h2ws_proxy.http2.h2lib_outbound import (
    acknowledge_direct,
    end_direct,
    send_direct,
    send_plain_200,
    send_response_head,
    sendable_stream,
)
from h2ws_proxy.http2.library_internals import RepeatedBlockDecoder, RepeatedBlockEncoder

Header = tuple[bytes, bytes]

_MAX_WINDOW = 2**31 - 1  # RFC 9113 §6.9.1
_MAX_ERROR_BODY = 16384  # one frame at the default SETTINGS_MAX_FRAME_SIZE
#: The response that opens most tunnels: h2_direct.send_plain_200 writes it without h2.
_PLAIN_200: list[Header] = [(b":status", b"200")]


class StreamUnusable(Exception):
    """The stream can no longer carry frames from us (reset, closed, or the connection is)."""


def _ignore_content_length(headers: object) -> None:
    """Stands in for h2's content-length tracking (see ``_begin_new_stream``)."""


class _GracefulH2Connection(h2.connection.H2Connection):
    """h2's connection, except that a GOAWAY from the client leaves it open.

    RFC 9113 §6.8: streams up to the GOAWAY's last-stream-id may still complete. h2 4.x
    moves its state machine to CLOSED on any GOAWAY it receives (python-hyper/h2#1181) and
    then refuses to send anything, so every open tunnel would die when a client (Node's
    ``session.close()``, a browser retiring a connection) says goodbye politely. Here the
    event is reported and h2's state left alone; the frontend takes no new streams and
    closes once the open ones have ended.

    It also counts open streams less often than h2 would (see :attr:`open_inbound_streams`),
    and its HPACK decoder and encoder keep the last block of indexed fields (see
    :class:`RepeatedBlockDecoder` and :class:`RepeatedBlockEncoder`).
    """

    #: Our advertised MAX_CONCURRENT_STREAMS (set by :class:`H2Session`).
    stream_limit = 0

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        decoder = RepeatedBlockDecoder(self.decoder.max_header_list_size)
        decoder.max_allowed_table_size = self.decoder.max_allowed_table_size
        decoder.header_table_size = self.decoder.header_table_size
        self.decoder = decoder
        self.encoder = RepeatedBlockEncoder()

    @property
    def open_inbound_streams(self) -> int:
        """The client's open streams, exact once the stream table outgrows the limit.

        h2 asks on every new stream, only to compare with a limit that
        :class:`_AdvertisedSettings` lifts, and counts by walking its whole stream table
        (dropping closed entries as it goes): with 100 tunnels open that walk was the
        largest part of reading a new stream's HEADERS. The table's size bounds the count,
        so while it is within the advertised limit that size is returned and the walk
        waits. Past the limit (where the frontend needs the exact count to refuse a
        stream) every call walks, as h2 does, and the walk keeps the table near the limit:
        closed streams linger at most until then.
        """
        size = len(self.streams)
        if size <= self.stream_limit:
            return size
        return self._open_streams(1)  # h2's walk; client-initiated stream ids are odd

    def _begin_new_stream(
        self, stream_id: int, allowed_ids: h2.connection.AllowedStreamIDs
    ) -> h2.stream.H2Stream:
        """A new stream whose content-length h2 does not police.

        h2 checks a request's ``content-length`` against its DATA and makes a mismatch (or a
        non-numeric value) a *connection* error, ending every tunnel of the connection.
        RFC 9113 §8.1.1 makes it a malformed request: a stream error. The frontend checks
        it per stream instead (see ``H2Stream.count_body``).
        """
        stream = super()._begin_new_stream(stream_id, allowed_ids)
        stream._initialize_content_length = _ignore_content_length  # type: ignore[method-assign]
        return stream

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Frame], list[h2.events.Event]]:
        event = h2.events.ConnectionTerminated()
        try:
            event.error_code = ErrorCodes(frame.error_code)
        except ValueError:  # RFC 9113 §7: unknown codes are allowed, and mean INTERNAL_ERROR
            event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


class _AdvertisedSettings(h2.settings.Settings):
    """Our SETTINGS, except that h2 does not enforce MAX_CONCURRENT_STREAMS itself.

    h2 treats one stream over the advertised limit as a connection error that takes down
    every tunnel. RFC 9113 §5.1.2 lets us refuse just that stream with REFUSED_STREAM,
    which the frontend does. The value sent to the client is unchanged (it comes from the
    mapping); only h2's own check reads this property.
    """

    @property
    def max_concurrent_streams(self) -> int:
        return _MAX_WINDOW

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class H2Session:
    """h2 state plus outbound bytes for one client connection."""

    def __init__(
        self, limits: Limits, *, connect_protocol_enabled: bool, on_output: Callable[[], None]
    ) -> None:
        self._limits = limits
        self.connect_protocol_enabled = connect_protocol_enabled
        #: Called after output was queued (the writer sets it to its wake-up).
        self.on_output = on_output
        self.outbound = bytearray()
        self.conn = _GracefulH2Connection(
            config=h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # h2's own checks make a malformed request a connection error; ours
                # (h2_request) make it a stream error, as RFC 9113 §8.1.1 asks.
                validate_inbound_headers=False,
                normalize_inbound_headers=True,  # joins cookie crumbs (RFC 9113 §8.2.3)
                # Skipped only for a plain 200, and put back (see ``send_headers``).
                validate_outbound_headers=True,
                normalize_outbound_headers=True,
            )
        )
        self.conn.stream_limit = limits.max_concurrent_streams
        self._inbound = InboundFrames(self.conn)
        #: Streams whose DATA bypasses h2 (see h2_direct): the frontend adds a tunnel once
        #: its 200 went out and an ordinary request while its body is read.
        self.direct_streams = self._inbound.direct_streams
        self.goaway_sent = False
        #: Consumed bytes a stream may hold before returning their credit (see
        #: ``H2Stream._acknowledge_consumed``): a quarter of its window.
        self.ack_batch_bytes = max(1, limits.stream_window_bytes // 4)

    def start(self) -> None:
        """Queue the connection preface: our SETTINGS and a raised connection window."""
        limits = self._limits
        settings = {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        }
        if self.connect_protocol_enabled:
            # RFC 8441 §3. Browsers take this as "WebSocket over HTTP/2 works here".
            settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] = 1
        self.conn.local_settings = _AdvertisedSettings(client=False, initial_values=settings)
        self.conn.initiate_connection()
        # One stalled stream may hold its whole window unacknowledged; give the connection
        # room for every stream's window so the others keep moving.
        target = min(limits.max_concurrent_streams * limits.stream_window_bytes, _MAX_WINDOW)
        increment = target - self.conn.inbound_flow_control_window
        if increment > 0:
            self.conn.increment_flow_control_window(increment)
        self.flush()

    def receive(self, data: bytes) -> list[h2.events.Event | DirectData]:
        """Client bytes to events, in order: h2's, and DATA of direct streams.

        On ``h2.exceptions.ProtocolError`` a GOAWAY is queued.
        """
        inbound = self._inbound
        try:
            items = inbound.receive(data)
        except BaseException:
            self.flush()
            raise
        if inbound.fed_h2:  # else nothing new to flush: a read of direct DATA only
            inbound.fed_h2 = False
            self.flush()
        return items

    def flush(self) -> None:
        """Move h2's pending output into :attr:`outbound` and tell the writer."""
        data = self.conn.data_to_send()
        if data:
            self.outbound += data
            self.on_output()

    def take_outbound(self) -> bytearray:
        data, self.outbound = self.outbound, bytearray()
        return data

    # ---- stream operations ----

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of credit (the connection's too, even if the stream is gone)."""
        if size > 0 and acknowledge_direct(self.conn, stream_id, size, self.outbound):
            self.on_output()

    def send_data(self, stream_id: int, data: memoryview) -> int:
        """Send as much of ``data`` as the peer's windows allow; returns how much went."""
        stream = sendable_stream(self.conn, stream_id)
        if stream is None:
            return self._send_data_through_h2(stream_id, data)
        # h2's own output is always flushed into ``outbound`` (every method here ends with
        # ``flush``), so these frames go out after everything queued before them.
        sent = send_direct(self.conn, stream, data, self.outbound)
        if sent:
            self.on_output()
        return sent

    def _send_data_through_h2(self, stream_id: int, data: memoryview) -> int:
        """``send_data`` for a stream h2 must judge (it raises for a closed one)."""
        try:
            allowed = min(self.conn.local_flow_control_window(stream_id), len(data))
            frame_size = self.conn.max_outbound_frame_size
            sent = 0
            while sent < allowed:
                size = min(frame_size, allowed - sent)
                self.conn.send_data(stream_id, bytes(data[sent : sent + size]))
                sent += size
        except h2.exceptions.ProtocolError as error:  # StreamClosedError is one
            raise StreamUnusable(str(error)) from error
        finally:
            self.flush()
        return sent

    def send_headers(
        self, stream_id: int, headers: list[Header], *, end_stream: bool = False
    ) -> None:
        if headers == _PLAIN_200 and send_plain_200(
            self.conn, stream_id, self.outbound, end_stream=end_stream
        ):
            self.on_output()  # the 200 that opens most tunnels, without h2 (h2_direct.py)
            return
        try:
            self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as error:
            raise StreamUnusable(str(error)) from error
        self.flush()

    def send_response_head(
        self, stream_id: int, status: int, fields: list[Header], *, end_stream: bool
    ) -> None:
        """A response head whose ``fields`` came from an HTTP/1.1 parser (see
        :func:`~h2ws_proxy.http2.h2lib_direct.send_response_head`: names lowercase, values
        stripped)."""
        status_bytes = str(status).encode()
        if send_response_head(
            self.conn, stream_id, status_bytes, fields, self.outbound, end_stream=end_stream
        ):
            self.on_output()
            return
        self.send_headers(stream_id, [(b":status", status_bytes), *fields], end_stream=end_stream)

    def end_stream(self, stream_id: int) -> None:
        if end_direct(self.conn, stream_id, self.outbound):
            self.on_output()
            return
        try:
            self.conn.end_stream(stream_id)
        except h2.exceptions.ProtocolError as error:
            raise StreamUnusable(str(error)) from error
        self.flush()

    def reset(self, stream_id: int, code: ErrorCodes) -> None:
        """Reset ``stream_id`` with ``code`` unless it is already closed."""
        try:
            self.conn.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def respond(
        self, stream_id: int, status: int, reason: str, extra: tuple[Header, ...] = ()
    ) -> None:
        """A complete short answer: ``reason`` as text (dropped if the window cannot take it)."""
        body = (reason + "\n").encode("utf-8", "replace")
        try:
            window = self.conn.local_flow_control_window(stream_id)
            if len(body) > min(window, _MAX_ERROR_BODY):
                body = b""
            headers = [
                (b":status", str(status).encode()),
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ]
            self.conn.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.conn.send_data(stream_id, body, end_stream=True)
        except h2.exceptions.ProtocolError:
            pass
        self.flush()

    def close_connection(self, code: ErrorCodes) -> None:
        """GOAWAY with ``code``; nothing more will be sent on this connection."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self.conn.close_connection(error_code=code)
            self.flush()

    def send_goaway(self) -> None:
        """GOAWAY(NO_ERROR) for a drain, written by hand between whole frames.

        h2's ``close_connection`` would move its state machine to CLOSED, after which it
        refuses to send anything and every open tunnel would die.
        """
        if self.goaway_sent:
            return
        self.goaway_sent = True
        self.flush()
        goaway = GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id, error_code=0)
        self.outbound += goaway.serialize()
        self.on_output()
