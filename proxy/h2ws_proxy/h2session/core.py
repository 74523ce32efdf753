"""The session's state, and the few steps both its halves (receive and send) share.

Rules:

* Stream ids (RFC 9113 §5.1.1): a client opens odd ids, a server even ones (only by push,
  which we never enable, so a server role never opens a stream and a client role never sees
  the server open one). Ids only grow. An id of the peer's parity above the highest it
  opened is *idle*; so is one of ours at or above the next we would open.
* Our settings bind the peer once it ACKs them; until then the session accepts the more
  lenient of the old and new value (:meth:`SessionCore._refresh_limits`), except
  MAX_CONCURRENT_STREAMS, which applies from our first SETTINGS (refusing a stream early
  costs the peer a retry, REFUSED_STREAM, §8.7).
* A connection error (:meth:`SessionCore._fail`) queues GOAWAY with the highest peer stream
  id we processed (§6.8) and the error code, reports :class:`ConnectionFailed` once, and
  turns the session off: later input is ignored and sending raises ``StreamUnusable``.
* A stream error (:meth:`SessionCore._reset_for_error`) queues RST_STREAM, closes the stream
  as reset by us (so late frames on it are ignored, §5.1), and reports ``StreamReset``
  with ``remote=False``.
* Credit the application returns, and credit for bytes nobody will consume (padding,
  DATA on streams that are gone), goes through :meth:`SessionCore._credit`, which follows
  :func:`~h2ws_proxy.h2session.flow.credit_due`.
"""

from __future__ import annotations

from enum import Enum

from h2ws_proxy.h2session.errors import ConnectionFault, StreamFault
from h2ws_proxy.h2session.events import ConnectionFailed, Event, StreamReset
from h2ws_proxy.h2session.flow import credit_due
from h2ws_proxy.h2session.frames import (
    MAX_WINDOW,
    write_goaway,
    write_rst_stream,
    write_window_update,
)
from h2ws_proxy.h2session.headers import HARD_LIST_LIMIT_FACTOR, HeaderCodec
from h2ws_proxy.h2session.settings import (
    DEFAULT_HEADER_TABLE_SIZE,
    DEFAULT_WINDOW,
    MIN_MAX_FRAME_SIZE,
    LocalSettings,
    PeerSettings,
    PendingSettings,
    SettingCode,
)
from h2ws_proxy.h2session.streams import ClosedBy, ClosedStreams, Stream


class Role(Enum):
    """Which end of the connection the session is."""

    #: Sends the preface, opens odd streams.
    CLIENT = "client"
    #: Expects the preface, answers the client's streams.
    SERVER = "server"


_UNLIMITED = 2**32  # above any 32-bit SETTINGS value


class SessionCore:
    """Connection state shared by :mod:`.inbound` and :mod:`.session`; not used alone."""

    #: False: a new peer stream over our MAX_CONCURRENT_STREAMS is reported
    #: (``RequestReceived``) for the driver to refuse, e.g. because it rations its answers
    #: to a flood one event at a time (RFC 9113 §5.1.2 lets either end refuse it).
    refuse_over_limit = True

    def __init__(self, role: Role, settings: LocalSettings) -> None:
        self.role = role
        self.local_settings = settings
        self.peer_settings = PeerSettings()
        #: Bytes for the peer; see ``take_outbound``.
        self.outbound = bytearray()
        self._server = role is Role.SERVER
        self._streams: dict[int, Stream] = {}
        self._closed_streams = ClosedStreams()
        self._pending_settings = PendingSettings()
        #: Our settings the peer ACKed (RFC 9113 §6.5.2 defaults until then).
        self._acked: dict[int, int] = {
            SettingCode.HEADER_TABLE_SIZE: DEFAULT_HEADER_TABLE_SIZE,
            SettingCode.INITIAL_WINDOW_SIZE: DEFAULT_WINDOW,
            SettingCode.MAX_FRAME_SIZE: MIN_MAX_FRAME_SIZE,
            SettingCode.MAX_HEADER_LIST_SIZE: _UNLIMITED,
            SettingCode.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
        }
        self._codec = HeaderCodec(settings.max_header_list_size, DEFAULT_HEADER_TABLE_SIZE)
        self._max_frame_in = MIN_MAX_FRAME_SIZE
        self._max_streams_in = settings.max_concurrent_streams
        self._max_list_in = settings.max_header_list_size
        self._block_limit = HARD_LIST_LIMIT_FACTOR * max(settings.max_header_list_size, 16384)
        #: A new stream's receive window: our INITIAL_WINDOW_SIZE once the peer can follow it.
        self._stream_recv_initial = DEFAULT_WINDOW
        # Connection flow control (stream 0): what we may send, what the peer may send,
        # bytes consumed and not credited back yet.
        self._send_window = DEFAULT_WINDOW
        self._recv_window = DEFAULT_WINDOW
        self._unacked = 0
        #: Credit returned while ``receive_data_frames`` feeds a read's DATA frames, held
        #: until the whole read is parsed (see there): (stream id, bytes), in order.
        self._holding_credit = False
        self._held_credit: list[tuple[int, int]] = []
        self._highest_peer_id = 0
        self._next_local_id = 1 if role is Role.CLIENT else 2
        self._goaway_sent_last_id: int | None = None
        self._goaway_received_last_id: int | None = None
        self._failed = False

    # -- settings -------------------------------------------------------------------------

    def _send_settings_pairs(self, pairs: list[tuple[int, int]]) -> None:
        """Note ``pairs`` as sent (the caller writes the frame) and loosen limits now."""
        self._pending_settings.sent(pairs)
        self._refresh_limits()
        raised = self._pending_settings.highest(
            SettingCode.INITIAL_WINDOW_SIZE, self._stream_recv_initial
        )
        self._change_stream_recv_initial(raised)

    def _settings_acknowledged(self) -> dict[int, int]:
        """Apply our oldest pending SETTINGS, now ACKed; returns its values."""
        changes = self._pending_settings.acknowledged()
        self._acked.update(changes)
        self._refresh_limits()
        if SettingCode.INITIAL_WINDOW_SIZE in changes:
            self._change_stream_recv_initial(
                self._pending_settings.highest(
                    SettingCode.INITIAL_WINDOW_SIZE, self._acked[SettingCode.INITIAL_WINDOW_SIZE]
                )
            )
        return changes

    def _refresh_limits(self) -> None:
        pending, acked = self._pending_settings, self._acked
        self._max_frame_in = pending.highest(
            SettingCode.MAX_FRAME_SIZE, acked[SettingCode.MAX_FRAME_SIZE]
        )
        table = pending.highest(SettingCode.HEADER_TABLE_SIZE, acked[SettingCode.HEADER_TABLE_SIZE])
        self._codec.set_decoder_table_limit(table)
        self._max_list_in = pending.highest(
            SettingCode.MAX_HEADER_LIST_SIZE, acked[SettingCode.MAX_HEADER_LIST_SIZE]
        )
        # Enforced from the first SETTINGS on: the most recent value we sent.
        for frame in pending.frames:
            if SettingCode.MAX_CONCURRENT_STREAMS in frame:
                self._max_streams_in = frame[SettingCode.MAX_CONCURRENT_STREAMS]

    def _change_stream_recv_initial(self, value: int) -> None:
        """Move every stream's receive window by the change of INITIAL_WINDOW_SIZE (§6.9.2)."""
        delta = value - self._stream_recv_initial
        if delta:
            self._stream_recv_initial = value
            for stream in self._streams.values():
                stream.recv_window += delta

    # -- streams --------------------------------------------------------------------------

    def _is_idle(self, stream_id: int) -> bool:
        """True if ``stream_id`` was never opened by either side (§5.1.1, module rules)."""
        if (stream_id & 1) == (0 if self._server else 1):
            return stream_id >= self._next_local_id
        return stream_id > self._highest_peer_id

    def _close(self, stream: Stream, how: ClosedBy) -> None:
        del self._streams[stream.stream_id]
        self._closed_streams.add(stream.stream_id, how)

    def _remote_ended(self, stream: Stream) -> None:
        stream.receiving = False
        if not stream.sending:
            self._close(stream, ClosedBy.END_STREAM)

    def _local_ended(self, stream: Stream) -> None:
        stream.sending = False
        if not stream.receiving:
            self._close(stream, ClosedBy.END_STREAM)

    def _reset_for_error(self, error: StreamFault, events: list[Event]) -> None:
        """Queue RST_STREAM for a stream error (§5.4.2) and report it."""
        write_rst_stream(self.outbound, error.stream_id, error.code)
        stream = self._streams.get(error.stream_id)
        if stream is not None:
            self._close(stream, ClosedBy.LOCAL_RESET)
        events.append(StreamReset(error.stream_id, error.code, remote=False))

    # -- flow control ---------------------------------------------------------------------

    def _credit(self, stream: Stream | None, size: int) -> None:
        """``size`` bytes consumed: WINDOW_UPDATEs per the credit policy (connection first)."""
        self._unacked += size
        if credit_due(self._unacked, self.local_settings.connection_window, self._recv_window):
            increment = min(self._unacked, MAX_WINDOW - self._recv_window)
            self._unacked = 0
            if increment > 0:
                self._recv_window += increment
                write_window_update(self.outbound, 0, increment)
        if stream is None or not stream.receiving:
            return
        stream.unacked += size
        if credit_due(stream.unacked, self._stream_recv_initial, stream.recv_window):
            increment = min(stream.unacked, MAX_WINDOW - stream.recv_window)
            stream.unacked = 0
            if increment > 0:
                stream.recv_window += increment
                write_window_update(self.outbound, stream.stream_id, increment)

    def _release_held_credit(self) -> None:
        """Return the credit held while a read's DATA frames were fed, in the order it
        came, as the application returning it then would (none once the session failed)."""
        self._holding_credit = False
        held = self._held_credit
        if not self._failed:
            for stream_id, size in held:
                self._credit(self._streams.get(stream_id), size)
        held.clear()

    # -- connection end -------------------------------------------------------------------

    def _fail(self, error: ConnectionFault, events: list[Event]) -> None:
        """Queue GOAWAY for a connection error (§5.4.1), report it, stop (module rules)."""
        if self._failed:
            return
        self._failed = True
        write_goaway(self.outbound, self._goaway_last_stream_id(), error.code)
        events.append(ConnectionFailed(error.code, error.reason))

    def _goaway_last_stream_id(self) -> int:
        """The highest peer stream we processed, never more than a GOAWAY we sent said
        (§6.8: the last-stream-id of successive GOAWAYs never grows)."""
        last = self._goaway_sent_last_id
        return self._highest_peer_id if last is None else min(last, self._highest_peer_id)
