""":class:`H2Session`: one HTTP/2 connection, sans-IO, in the client or the server role.

Theory of operation: the driver feeds the peer's bytes to :meth:`H2Session.receive_data`
and handles the events it returns; it calls the ``send_*`` methods to act; after either it
writes :meth:`H2Session.take_outbound` to the socket. Nothing here blocks or does I/O.

Rules of the send half (RFC 9113):

* :meth:`~H2Session.initiate` queues our preface: the client magic (client role), our
  SETTINGS, and a WINDOW_UPDATE raising the connection window to
  ``LocalSettings.connection_window`` (§3.4, §6.9).
* Local misuse raises (see :mod:`.errors`) and writes nothing: sending on a stream we cannot
  send on (closed, reset, half-closed (local), never opened) or on a closed connection is
  ``StreamUnusable``; extended CONNECT (``:protocol``) before the server's
  SETTINGS_ENABLE_CONNECT_PROTOCOL=1 is ``ProtocolNotNegotiated`` (RFC 8441 §4); a new
  stream past the peer's MAX_CONCURRENT_STREAMS is ``TooManyStreams`` (§5.1.2); new
  streams after the peer's GOAWAY are ``StreamUnusable`` (§6.8).
* A header block is split by the peer's MAX_FRAME_SIZE into HEADERS + CONTINUATION (§4.3).
  A response head starts with ``:status``; DATA waits for the final (non-1xx) head; after
  it, a further head is a trailer section, ends the stream and holds no pseudo-field (§8.1).
  Otherwise the fields go out as given (their validity is the caller's).
* :meth:`~H2Session.send_data` never waits and never raises for a shut window: it sends what
  both send windows and the peer's MAX_FRAME_SIZE allow and returns how much; END_STREAM
  goes only on a call whose data all went (§6.9). :meth:`~H2Session.send_answer` is a
  final head and then such DATA with END_STREAM in one call, as the two would send them.
* :meth:`~H2Session.send_goaway` is graceful: streams up to its last-stream-id go on; new
  peer streams above it are ignored (§6.8). :meth:`~H2Session.close` is a connection error
  we raise ourselves: GOAWAY, then nothing more.
"""

from __future__ import annotations

import struct
from collections.abc import Sized

from h2ws_proxy.h2session import frames as f
from h2ws_proxy.h2session.core import Role
from h2ws_proxy.h2session.errors import (
    ErrorCode,
    ProtocolNotNegotiated,
    SessionUsageError,
    StreamUnusable,
    TooManyStreams,
)
from h2ws_proxy.h2session.inbound import Receiver
from h2ws_proxy.h2session.settings import (
    DEFAULT_WINDOW,
    MIN_MAX_FRAME_SIZE,
    SettingCode,
    encode_settings,
)
from h2ws_proxy.h2session.streams import CLOSED_MEMORY, ClosedBy, Stream, StreamState

Header = tuple[bytes, bytes]
_PING_BYTES = 8  # RFC 9113 §6.7
#: DATA of up to this size always fits one frame: no peer's MAX_FRAME_SIZE is below it (§6.5.2).
_ONE_FRAME = MIN_MAX_FRAME_SIZE
_BY_END_STREAM = ClosedBy.END_STREAM
#: A frame's header in one pack: (length << 8 | type, flags, stream id); for DATA (type 0),
#: END_STREAM (flag 1) is the bool ``end_stream`` itself; HEADERS is type 1, END_HEADERS
#: flag 4 (written as literals where this packs them).
_FRAME_HEAD = struct.Struct(">LBL")
assert f.DATA == 0
assert f.END_STREAM == 1
assert f.HEADERS == 1
assert f.END_HEADERS == 4


class H2Session(Receiver):
    """One HTTP/2 connection's state machine (see the module docstring)."""

    # -- output ---------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our connection preface; call once, before anything else is sent."""
        if self.role is Role.CLIENT:
            self.outbound += f.PREFACE
        pairs = self.local_settings.to_pairs(server=self._server)
        f.write_frame(self.outbound, f.SETTINGS, 0, 0, encode_settings(pairs))
        self._send_settings_pairs(pairs)
        raise_by = self.local_settings.connection_window - DEFAULT_WINDOW
        if raise_by > 0:
            f.write_window_update(self.outbound, 0, raise_by)
            self._recv_window += raise_by

    def take_outbound(self) -> bytearray:
        """The bytes queued for the peer since the last call; the caller writes them all."""
        out = self.outbound
        self.outbound = bytearray()
        return out

    # -- streams --------------------------------------------------------------------------

    def next_stream_id(self) -> int:
        """Client role: the id :meth:`send_headers` opens next."""
        return self._next_local_id

    def send_headers(self, stream_id: int, headers: list[Header], end_stream: bool = False) -> None:
        """Send a head on ``stream_id``: the client role opens a new stream with a request
        (``stream_id`` from :meth:`next_stream_id`); otherwise a response, an informational
        response, or trailers (``end_stream`` required). Raises ``SessionUsageError``s.

        The fields go out as given: lowercase names, pseudo-fields first, no
        connection-specific fields (RFC 9113 §8.2) are the caller's to ensure."""
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._open_local_stream(stream_id, headers)
        elif not stream.sending:
            raise StreamUnusable(f"stream {stream_id} cannot send")
        elif stream.final_head_sent:
            if not end_stream or any(name[:1] == b":" for name, _ in headers):
                raise SessionUsageError("trailers end the stream, with no pseudo-field (§8.1)")
        elif not headers or headers[0][0] != b":status":
            raise SessionUsageError("a response head starts with :status (RFC 9113 §8.3.2)")
        elif headers[0][1][:1] != b"1":
            stream.final_head_sent = True
        elif end_stream:
            raise SessionUsageError("an informational head cannot end the stream (§8.1)")
        block = self._codec.encode(headers)
        f.write_header_block(
            self.outbound, stream_id, end_stream, block, self.peer_settings.max_frame_size
        )
        if end_stream:
            self._local_ended(stream)

    def _open_local_stream(self, stream_id: int, headers: list[Header]) -> Stream:
        if self._server or stream_id < self._next_local_id or not stream_id & 1:
            raise StreamUnusable(f"stream {stream_id} is not open and cannot be opened")
        if self._goaway_received_last_id is not None:
            raise StreamUnusable("the peer sent GOAWAY: no new streams (RFC 9113 §6.8)")
        limit = self.peer_settings.max_concurrent_streams
        if limit is not None and len(self._streams) >= limit:
            raise TooManyStreams(f"the peer allows {limit} concurrent streams")
        if not self.peer_settings.enable_connect_protocol and any(
            name == b":protocol" for name, _ in headers
        ):
            raise ProtocolNotNegotiated("no SETTINGS_ENABLE_CONNECT_PROTOCOL=1 from the server")
        stream = Stream(
            stream_id,
            local=True,
            send_window=self.peer_settings.initial_window_size,
            recv_window=self._stream_recv_initial,
        )
        stream.final_head_sent = True
        self._streams[stream_id] = stream
        self._next_local_id = stream_id + 2
        return stream

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False
    ) -> int:
        """Send as much of ``data`` as the windows allow (see module rules); returns how many
        bytes went. Raises ``StreamUnusable`` for a stream we cannot send on, and
        ``SessionUsageError`` before the stream's final (non-1xx) head."""
        stream = self._streams.get(stream_id)
        if self._failed or stream is None or not stream.sending or not stream.final_head_sent:
            stream = self._sendable(stream_id)  # raises the error that fits
        size = len(data)
        if 0 < size <= _ONE_FRAME and size <= self._send_window and size <= stream.send_window:
            # The common case (a relayed message): all of it, in one frame.
            out = self.outbound
            out += _FRAME_HEAD.pack(size << 8, end_stream, stream_id)  # (type 0, flag 1)
            out += data
            self._send_window -= size
            stream.send_window -= size
            if end_stream:
                self._local_ended(stream)
            return size
        allowed = max(0, min(size, self._send_window, stream.send_window))
        if not allowed and size:
            return 0
        frame_size = self.peer_settings.max_frame_size
        out = self.outbound
        header = f.FRAME_HEADER
        view = memoryview(data)  # frames sliced without a copy each
        sent = 0
        while sent < allowed:
            chunk = min(frame_size, allowed - sent)
            last = end_stream and sent + chunk == size
            out += header.pack(chunk >> 8, chunk & 0xFF, f.DATA, int(last), stream_id)
            out += view[sent : sent + chunk]
            sent += chunk
        self._send_window -= allowed
        stream.send_window -= allowed
        if end_stream and allowed == size:
            if not size:
                out += header.pack(0, 0, f.DATA, f.END_STREAM, stream_id)
            self._local_ended(stream)
        return allowed

    def send_answer(self, stream_id: int, headers: list[Header], body: bytes) -> int:
        """:meth:`send_headers` of a final response head, then :meth:`send_data` of ``body``
        with END_STREAM, in one call: the frames and errors of the two (an answer that came
        whole); how much of ``body`` went. The usual case (a stream that may send its final
        head, a body of one frame, the windows open) is written here with one look-up (a
        block past one frame as HEADERS + CONTINUATION, the body then as ``send_data``);
        any other goes through the two calls."""
        stream = self._streams.get(stream_id)
        size = len(body)
        if (
            self._failed
            or stream is None
            or not stream.sending
            or stream.final_head_sent
            or not headers
            or (first := headers[0])[0] != b":status"
            or first[1][:1] == b"1"
            or size > _ONE_FRAME
            or size > self._send_window
            or size > stream.send_window
        ):
            H2Session.send_headers(self, stream_id, headers)  # (not a subclass's)
            return H2Session.send_data(self, stream_id, body, True)
        # Encoded once, and this block is the one sent: encoding changes the HPACK
        # encoder's dynamic table (and takes a pending table size update), so a second
        # encode would send a block naming entries of one the peer never got.
        codec = self._codec  # (``HeaderCodec.encode``'s repeated block without its call)
        block = codec.repeat_block
        if not block or headers != codec.repeat_fields:
            block = codec.encode(headers)
        length = len(block)
        stream.final_head_sent = True
        # (A block of one frame at the smallest MAX_FRAME_SIZE fits any peer's.)
        if length > _ONE_FRAME and length > self.peer_settings.max_frame_size:
            # HEADERS + CONTINUATION (rare), then the body as send_data
            f.write_header_block(
                self.outbound, stream_id, False, block, self.peer_settings.max_frame_size
            )
            return H2Session.send_data(self, stream_id, body, True)
        out = self.outbound
        out += _FRAME_HEAD.pack(length << 8 | 1, 4, stream_id)  # HEADERS, END_HEADERS
        out += block
        out += _FRAME_HEAD.pack(size << 8, 1, stream_id)  # DATA, END_STREAM
        out += body
        self._send_window -= size
        stream.send_window -= size
        stream.sending = False  # (``_local_ended``, in place)
        if not stream.receiving:  # the usual request: the client's side ended with it
            del self._streams[stream_id]  # (``_close``, in place)
            # ``ClosedStreams.add`` in place: an id in the table is in no closed memory.
            closed = self._closed_streams.closed
            closed[stream_id] = _BY_END_STREAM
            if len(closed) > CLOSED_MEMORY:
                closed.popitem(last=False)
        return size

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM on an empty DATA frame: our side of ``stream_id`` is done."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, code: ErrorCode | int = ErrorCode.CANCEL) -> None:
        """RST_STREAM with ``code``; nothing for a stream that is already closed."""
        stream = self._streams.get(stream_id)
        if self._failed or stream is None:
            return
        f.write_rst_stream(self.outbound, stream_id, code)
        self._close(stream, ClosedBy.LOCAL_RESET)

    def acknowledge_received_data(self, stream_id: int, size: int) -> None:
        """``size`` bytes of ``stream_id``'s DATA were consumed: return the credit, batched
        (see :mod:`.flow`). The connection's credit returns even if the stream is gone."""
        if self._failed or size <= 0:
            return
        if self._holding_credit:  # fed from a read still being parsed: receive_data_frames
            self._held_credit.append((stream_id, size))
            return
        self._credit(self._streams.get(stream_id), size)

    def _sendable(self, stream_id: int) -> Stream:
        self._check_open()
        stream = self._streams.get(stream_id)
        if stream is None or not stream.sending:
            raise StreamUnusable(f"stream {stream_id} cannot send")
        if not stream.final_head_sent:
            raise SessionUsageError("DATA before the final head (RFC 9113 §8.1)")
        return stream

    def _check_open(self) -> None:
        if self._failed:
            raise StreamUnusable("the connection is closed")

    # -- connection -----------------------------------------------------------------------

    def ping(self, data: bytes) -> None:
        """Send a PING with 8 bytes of ``data``; ``PingAcknowledged`` reports the answer."""
        if len(data) != _PING_BYTES:
            raise SessionUsageError("PING data is 8 bytes")
        self._check_open()
        f.write_frame(self.outbound, f.PING, 0, 0, data)

    def send_goaway(self, code: ErrorCode | int = ErrorCode.NO_ERROR, debug: bytes = b"") -> None:
        """Tell the peer we take no stream above the highest it opened so far (§6.8)."""
        self._check_open()
        last = self._goaway_last_stream_id()
        f.write_goaway(self.outbound, last, code, debug)
        self._goaway_sent_last_id = last

    def close(self, code: ErrorCode | int = ErrorCode.NO_ERROR, reason: str = "") -> None:
        """End the connection: GOAWAY with ``code`` (``reason`` as its debug data), then
        nothing more; the driver flushes and closes the socket."""
        if self._failed:
            return
        self._failed = True
        f.write_goaway(self.outbound, self._goaway_last_stream_id(), code, reason.encode())

    def update_settings(self, changes: dict[SettingCode, int]) -> None:
        """Advertise new values; a lowered limit binds once the peer ACKs it (§6.5.3)."""
        self._check_open()
        pairs = [(int(code), value) for code, value in changes.items()]
        f.write_frame(self.outbound, f.SETTINGS, 0, 0, encode_settings(pairs))
        self._send_settings_pairs(pairs)

    # -- queries --------------------------------------------------------------------------

    def local_window(self, stream_id: int) -> int:
        """How many DATA bytes we may send on ``stream_id`` now (0 if it cannot send)."""
        stream = self._streams.get(stream_id)
        if self._failed or stream is None or not stream.sending:
            return 0
        return max(0, min(self._send_window, stream.send_window))

    def stream_state(self, stream_id: int) -> StreamState | None:
        """The state of a stream in the table; None for idle or closed."""
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.state

    @property
    def open_stream_count(self) -> int:
        """Streams open or half-closed (what MAX_CONCURRENT_STREAMS counts, §5.1.2)."""
        return len(self._streams)

    @property
    def open_streams(self) -> Sized:
        """The streams :attr:`open_stream_count` counts, the same object for the session's
        life: for a reader per new stream, one ``len`` and no property call."""
        return self._streams

    @property
    def highest_peer_stream_id(self) -> int:
        return self._highest_peer_id

    @property
    def goaway_received(self) -> bool:
        return self._goaway_received_last_id is not None

    @property
    def goaway_sent(self) -> bool:
        return self._goaway_sent_last_id is not None

    @property
    def closed(self) -> bool:
        """True after a connection error or :meth:`close`: the driver closes the socket."""
        return self._failed

    @property
    def unacknowledged_settings(self) -> int:
        """Our SETTINGS frames the peer has not ACKed yet (the driver may time them out:
        SETTINGS_TIMEOUT, RFC 9113 §6.5.3)."""
        return len(self._pending_settings.frames)

    @property
    def max_outbound_frame_size(self) -> int:
        return self.peer_settings.max_frame_size
