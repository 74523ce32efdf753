"""The receive half: bytes from the peer to events, stream errors and connection errors.

Rules (RFC 9113), beyond the per-type frame checks of :mod:`.frames`:

* The server role first expects the 24-byte client preface, compared as it arrives (a
  wrong byte is a connection PROTOCOL_ERROR at once, §3.4); either role's first frame from
  the peer must be a SETTINGS without ACK (§3.4), else PROTOCOL_ERROR.
* Buffering is bounded: a frame whose declared length exceeds our SETTINGS_MAX_FRAME_SIZE
  is a connection FRAME_SIZE_ERROR as soon as its 9-byte header is here (§4.2), so at most
  one frame plus one read is held (header blocks: see :mod:`.blocks`).
* Inside a header block only CONTINUATION on the same stream may come (§6.10); anything
  else is a connection PROTOCOL_ERROR.
* Client role: DATA before the final response head is a stream PROTOCOL_ERROR (§8.1).
* DATA, HEADERS, RST_STREAM, WINDOW_UPDATE on an idle stream: connection PROTOCOL_ERROR
  (§5.1). DATA or HEADERS on a half-closed (remote) stream, or on a stream the peer
  reset: stream STREAM_CLOSED (§5.1, §6.1); on a stream closed by END_STREAM both ways:
  connection STREAM_CLOSED (§5.1 "closed"). After our RST_STREAM, everything on that
  stream is ignored. WINDOW_UPDATE, RST_STREAM and PRIORITY on closed streams are
  ignored.
* A stream error on an idle stream (PRIORITY depending on itself or of a bad length) is
  made a connection error of the same code: RST_STREAM must not name an idle stream (§6.4).
* WINDOW_UPDATE of 0: PROTOCOL_ERROR, a stream error on a stream, a connection error on
  stream 0 (§6.9). PUSH_PROMISE: connection PROTOCOL_ERROR (we never enable push, §8.4).
* A GOAWAY from the peer does not end the session (§6.8): streams up to its last-stream-id
  go on; ours above it are closed and reported reset (REFUSED_STREAM, remote).
* Unknown frame types are ignored outside header blocks (§5.5).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from h2ws_proxy.h2session import frames as f
from h2ws_proxy.h2session.blocks import WHOLE_PLAIN_BLOCK as _WHOLE_PLAIN_BLOCK
from h2ws_proxy.h2session.blocks import HeaderBlocks
from h2ws_proxy.h2session.core import Role
from h2ws_proxy.h2session.errors import (
    ConnectionFault,
    ErrorCode,
    StreamFault,
    error_code_of,
)
from h2ws_proxy.h2session.events import (
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    SettingsAcknowledged,
    StreamReset,
    WindowUpdated,
    data_received,
)
from h2ws_proxy.h2session.flow import window_overflows
from h2ws_proxy.h2session.settings import (
    LocalSettings,
    SettingCode,
    apply_peer_settings,
    encode_settings,
    parse_settings,
)
from h2ws_proxy.h2session.streams import ClosedBy

# Module globals for the receive loop (a global is cheaper than a module attribute).
_HEADER = f.FRAME_HEADER
#: A frame header as (length << 8 | type, flags, stream id): one test finds a DATA frame.
_UNPACK_LENGTH_KIND_FLAGS_ID = struct.Struct(">LBL").unpack_from
assert f.DATA == 0
_FRAME_HEADER_BYTES = f.FRAME_HEADER_BYTES
_STREAM_ID_MASK = f.STREAM_ID_MASK
_DATA, _PADDED, _END_STREAM = f.DATA, f.PADDED, f.END_STREAM
_PADDED_OR_END = f.PADDED | f.END_STREAM
_HEADERS, _END_HEADERS = f.HEADERS, f.END_HEADERS


class Receiver(HeaderBlocks):
    """:meth:`receive_data` and the frame handlers behind it."""

    def __init__(self, role: Role, settings: LocalSettings) -> None:
        super().__init__(role, settings)
        self._preface_left = f.PREFACE if self._server else b""
        self._settings_expected = True
        self._partial: list[bytes] = []
        self._partial_bytes = 0
        self._needed = 0  # bytes the buffered frame needs before it can be read

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Take bytes from the peer; returns what happened. Never raises for the peer's
        mistakes (see the module rules); after ``ConnectionFailed``, returns []."""
        if self._failed:
            if self._holding_credit:
                self._release_held_credit()  # (drops it: no credit after our GOAWAY)
            return []
        if type(data) is not bytes:  # events carry slices: bytes, never a view
            data = bytes(data)
        events: list[Event] = []
        if self._partial:
            self._partial.append(data)
            self._partial_bytes += len(data)
            if self._partial_bytes < self._needed:
                return events
            data = b"".join(self._partial)
            self._partial.clear()
        try:
            if self._preface_left:
                data = self._take_preface(data)
            self._receive_frames(data, events)
        except ConnectionFault as error:
            self._fail(error, events)
        if self._holding_credit:  # the rest of a read ``receive_data_frames`` began
            self._release_held_credit()
        return events

    def receive_data_frames(self, data: bytes, feed: Callable[[int, bytes], bool]) -> int:
        """:meth:`receive_data` for the DATA frames that open a read, the common read of
        tunnels' messages: each whole DATA frame that carries bytes, without padding or
        END_STREAM, on a stream open for receiving and within both receive windows, is
        taken as ``receive_data`` takes it and its payload handed to
        ``feed(stream_id, payload)`` at once, with no event object made. Returns how many
        bytes of ``data`` were taken this way (whole frames from its start); the rest, from
        the first frame that is not such a frame on, is ``receive_data``'s, and must be
        given to it next. The outcome is ``receive_data``'s for the whole read, its events
        handled after it returned.

        So every frame of the read is judged against the windows as they stood when the
        read came (RFC 9113 §6.9.1: the peer may not send past the window it was given; a
        WINDOW_UPDATE we only queued is not given yet): credit ``feed`` returns
        (``acknowledge_received_data``) is held until the read is parsed, by this call when
        it took the whole read, else by the ``receive_data`` of the rest, after its frames'
        own output (PING and SETTINGS ACKs, RST_STREAM, GOAWAY: none after a GOAWAY).

        ``feed`` returns False when it did nothing at all with the frame: the frame is then
        not taken (its windows are as they were) and is the first of the rest. It may
        return credit and queue output, and must not do anything else to the session.
        Nothing is taken while a frame is buffered, the preface or the peer's first SETTINGS
        is due, a header block is open, or after a connection error.
        """
        if (
            self._partial
            or self._preface_left
            or self._block_stream
            or self._settings_expected
            or self._failed
        ):
            return 0
        pos, end = 0, len(data)
        # Read once: ``feed`` changes none of them, and the connection's window is kept in a
        # local until the loop ends, however it ends (``feed`` only holds credit here).
        streams, max_frame, window = self._streams, self._max_frame_in, self._recv_window
        self._holding_credit = True  # (so the windows below move only by what is read)
        try:
            while end - pos > _FRAME_HEADER_BYTES:
                # The 24-bit length and the type in one 32-bit number: DATA is type 0.
                length_kind, flags, stream_id = _UNPACK_LENGTH_KIND_FLAGS_ID(data, pos)
                length = length_kind >> 8
                start = pos + _FRAME_HEADER_BYTES
                frame_end = start + length
                if (
                    length_kind & 0xFF  # not DATA
                    or flags & _PADDED_OR_END
                    or not length
                    or frame_end > end
                    or length > max_frame
                    or length > window
                ):
                    break
                stream_id &= _STREAM_ID_MASK
                stream = streams.get(stream_id)
                if (
                    stream is None
                    or not stream.receiving
                    or not stream.final_head_received
                    or length > stream.recv_window
                ):
                    break
                window -= length
                stream.recv_window -= length
                if not feed(stream_id, data[start:frame_end]):
                    window += length
                    stream.recv_window += length
                    break
                pos = frame_end
        finally:
            self._recv_window = window
        if pos == end:  # the whole read: its credit now (else ``receive_data``'s, see above)
            if self._held_credit:
                self._release_held_credit()
            else:
                self._holding_credit = False
        return pos

    def _take_preface(self, data: bytes) -> bytes:
        expected = self._preface_left
        if data[: len(expected)] != expected[: len(data)]:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
        self._preface_left = expected[len(data) :]
        return data[len(expected) :]

    def _receive_frames(self, data: bytes, events: list[Event]) -> None:
        pos, end = 0, len(data)
        streams = self._streams
        while end - pos >= _FRAME_HEADER_BYTES:
            high, low, kind, flags, stream_id = _HEADER.unpack_from(data, pos)
            length = high << 8 | low
            if length > self._max_frame_in:
                raise ConnectionFault(ErrorCode.FRAME_SIZE_ERROR, "frame over MAX_FRAME_SIZE")
            frame_end = pos + _FRAME_HEADER_BYTES + length
            if frame_end > end:
                break
            payload = data[pos + _FRAME_HEADER_BYTES : frame_end]
            pos = frame_end
            stream_id &= _STREAM_ID_MASK
            if kind == _DATA and not self._block_stream and not self._settings_expected:
                # The hot path: DATA on an open stream, within both windows, no padding.
                stream = streams.get(stream_id)
                if (
                    stream is not None
                    and stream.receiving
                    and stream.final_head_received
                    and not flags & _PADDED
                    and length <= self._recv_window
                    and length <= stream.recv_window
                ):
                    self._recv_window -= length
                    stream.recv_window -= length
                    ended = flags & _END_STREAM != 0  # (no bool() call)
                    events.append(data_received(stream_id, payload, length, ended))
                    if ended:
                        self._remote_ended(stream)
                    continue
            try:
                if (
                    kind == _HEADERS
                    and flags & _WHOLE_PLAIN_BLOCK == _END_HEADERS
                    and stream_id
                    and not self._block_stream
                    and not self._settings_expected
                ):
                    # A client's usual HEADERS, its fragment the whole block: ``check_length``
                    # and ``_on_headers`` would find nothing to check or strip.
                    self._block_error = None
                    self._end_block(stream_id, flags, payload, events)
                else:
                    self._receive_frame(kind, flags, stream_id, payload, events)
            except StreamFault as error:
                if self._is_idle(error.stream_id):  # §6.4: no RST_STREAM on an idle stream
                    raise ConnectionFault(error.code, "stream error on an idle stream") from None
                self._reset_for_error(error, events)
        if pos < end:
            rest = data[pos:]
            self._partial.append(rest)
            self._partial_bytes = len(rest)
            if len(rest) < _FRAME_HEADER_BYTES:
                self._needed = _FRAME_HEADER_BYTES
            else:
                self._needed = _FRAME_HEADER_BYTES + (rest[0] << 16 | rest[1] << 8 | rest[2])

    def _receive_frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        # (A whole plain HEADERS block never comes here: ``_receive_frames`` takes it.)
        if self._settings_expected:
            if kind != f.SETTINGS or flags & f.ACK:
                raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
            self._settings_expected = False
        if self._block_stream and (kind != f.CONTINUATION or stream_id != self._block_stream):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "frame inside a header block")
        f.check_length(kind, flags, stream_id, len(payload))
        if kind == f.DATA:
            self._on_data(flags, stream_id, payload, events)
        elif kind == f.HEADERS:
            self._on_headers(flags, stream_id, payload, events)
        elif kind == f.CONTINUATION:
            self._on_continuation(flags, stream_id, payload, events)
        elif kind == f.PRIORITY:
            if f.priority_depends_on(payload) == stream_id:  # §5.3.1
                raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)
        elif kind == f.RST_STREAM:
            self._on_rst_stream(stream_id, payload, events)
        elif kind == f.SETTINGS:
            self._on_settings(flags, payload, events)
        elif kind == f.PING:
            if flags & f.ACK:
                events.append(PingAcknowledged(payload))
            else:
                f.write_frame(self.outbound, f.PING, f.ACK, 0, payload)
                events.append(PingReceived(payload))
        elif kind == f.GOAWAY:
            self._on_goaway(payload, events)
        elif kind == f.WINDOW_UPDATE:
            self._on_window_update(stream_id, payload, events)
        elif kind == f.PUSH_PROMISE:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        length = len(payload)
        if self._is_idle(stream_id):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "DATA on an idle stream")
        if length > self._recv_window:
            raise ConnectionFault(ErrorCode.FLOW_CONTROL_ERROR, "DATA over connection window")
        self._recv_window -= length
        data = f.strip_padding(flags, payload)
        stream = self._streams.get(stream_id)
        if stream is None or not stream.receiving or length > stream.recv_window:
            self._credit(None, length)  # nobody will consume it (§6.9)
            if stream is None and self._closed_streams.how(stream_id) is ClosedBy.LOCAL_RESET:
                return
            if stream is None and self._ignored_after_goaway(stream_id):
                return
            if stream is None and self._closed_streams.how(stream_id) is ClosedBy.END_STREAM:
                # §5.1 "closed": any frame after the peer's END_STREAM (bar WINDOW_UPDATE,
                # PRIORITY, RST_STREAM) is a connection error.
                raise ConnectionFault(ErrorCode.STREAM_CLOSED, "DATA on a closed stream")
            code = ErrorCode.STREAM_CLOSED
            if stream is not None and stream.receiving:
                code = ErrorCode.FLOW_CONTROL_ERROR
            raise StreamFault(stream_id, code)
        if not stream.final_head_received:  # §8.1: a response opens with its final head
            self._credit(None, length)
            raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)
        stream.recv_window -= length
        if length != len(data):
            self._credit(stream, length - len(data))  # padding: credited at once
        ended = bool(flags & f.END_STREAM)
        events.append(DataReceived(stream_id, data, length, ended))
        if ended:
            self._remote_ended(stream)

    def _on_rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if self._is_idle(stream_id):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # closed: ignored (§5.1)
        self._close(stream, ClosedBy.REMOTE_RESET)
        events.append(StreamReset(stream_id, error_code_of(f.read_u32(payload)), remote=True))

    def _on_settings(self, flags: int, payload: bytes, events: list[Event]) -> None:
        if flags & f.ACK:
            events.append(SettingsAcknowledged(self._settings_acknowledged()))
            return
        pairs = parse_settings(payload, peer_is_server=not self._server)
        peer = self.peer_settings
        old_window = peer.initial_window_size
        changes = apply_peer_settings(peer, pairs)
        delta = peer.initial_window_size - old_window
        if delta:  # §6.9.2: every stream's send window moves by the change
            for stream in self._streams.values():
                if window_overflows(stream.send_window, delta):
                    raise ConnectionFault(ErrorCode.FLOW_CONTROL_ERROR, "window over 2^31-1")
                stream.send_window += delta
        if SettingCode.HEADER_TABLE_SIZE in changes:
            for code, value in pairs:  # every value, in order (RFC 7541 §4.2)
                if code == SettingCode.HEADER_TABLE_SIZE:
                    self._codec.peer_table_size(value)
        f.write_frame(self.outbound, f.SETTINGS, f.ACK, 0, encode_settings([]))
        events.append(RemoteSettingsChanged(changes))

    def _on_goaway(self, payload: bytes, events: list[Event]) -> None:
        last_stream_id, code, debug = f.read_goaway(payload)
        previous = self._goaway_received_last_id
        if previous is None or last_stream_id < previous:
            self._goaway_received_last_id = last_stream_id
        events.append(GoAwayReceived(error_code_of(code), last_stream_id, debug))
        for stream in list(self._streams.values()):
            if stream.local and stream.stream_id > last_stream_id:
                self._close(stream, ClosedBy.REMOTE_RESET)
                events.append(StreamReset(stream.stream_id, ErrorCode.REFUSED_STREAM, remote=True))

    def _on_window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        increment = f.read_u32(payload) & f.STREAM_ID_MASK
        if stream_id == 0:
            if not increment:
                raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if window_overflows(self._send_window, increment):
                raise ConnectionFault(ErrorCode.FLOW_CONTROL_ERROR, "window over 2^31-1")
            self._send_window += increment
            events.append(WindowUpdated(0, increment))
            return
        if self._is_idle(stream_id):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # closed: ignored (§5.1)
        if not increment:
            raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)
        if window_overflows(stream.send_window, increment):
            raise StreamFault(stream_id, ErrorCode.FLOW_CONTROL_ERROR)
        stream.send_window += increment
        events.append(WindowUpdated(stream_id, increment))
