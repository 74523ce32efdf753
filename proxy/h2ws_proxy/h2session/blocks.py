"""Header blocks from the peer: HEADERS + CONTINUATION, decoded, then judged per stream.

Rules (RFC 9113):

* A block is HEADERS then CONTINUATION frames on the same stream up to END_HEADERS (§4.3,
  §6.10); the receive loop refuses any other frame in between. CONTINUATION without an
  open block is a connection PROTOCOL_ERROR. A block longer than
  ``4 * max(max_header_list_size, 16384)`` bytes is a connection ENHANCE_YOUR_CALM (§10.5:
  it cannot be skipped without desynchronising HPACK).
* Every block is decoded, even for a stream we then refuse, reset or ignore, to keep HPACK
  in step (§4.3); a decoding error is a connection COMPRESSION_ERROR (:mod:`.headers`).
* HEADERS opening a stream: it must be a client's odd id above every id it used (§5.1.1),
  else PROTOCOL_ERROR. Past our MAX_CONCURRENT_STREAMS it is refused with RST_STREAM
  (REFUSED_STREAM), reported as ``StreamReset(remote=False)`` (§5.1.2); after our GOAWAY,
  ids above its last-stream-id are ignored (§6.8). A priority on itself is a stream
  PROTOCOL_ERROR (§5.3.1). A list over our MAX_HEADER_LIST_SIZE opens the stream with
  ``RequestReceived.oversized`` (the proxy answers 431); over it in a trailer or response
  section the stream is reset with CANCEL.
* HEADERS on a half-closed (remote) stream, or on one closed by the peer's RST_STREAM:
  stream STREAM_CLOSED; on one closed by END_STREAM both ways: connection STREAM_CLOSED
  (§5.1 "closed"); after our RST_STREAM: ignored; on an id below the highest that was
  never opened (or is forgotten): connection PROTOCOL_ERROR (§5.1.1).
* A second head on a stream is a trailer section: it must carry END_STREAM and no
  pseudo-header, else a stream PROTOCOL_ERROR (§8.1). Client role: 1xx heads come before
  the final one and cannot end the stream (§8.1).
"""

from __future__ import annotations

from h2ws_proxy.h2session import frames as f
from h2ws_proxy.h2session.core import Role, SessionCore
from h2ws_proxy.h2session.errors import ConnectionFault, ErrorCode, StreamFault
from h2ws_proxy.h2session.events import (
    SET_REQUEST_FIELDS,
    Event,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    TrailersReceived,
)
from h2ws_proxy.h2session.settings import LocalSettings
from h2ws_proxy.h2session.streams import ClosedBy, Stream

_new_event = _new_stream = object.__new__

#: HEADERS flags whose fragment is the whole block as it is: END_HEADERS, no padding, no
#: priority fields.
WHOLE_PLAIN_BLOCK = f.END_HEADERS | f.PADDED | f.PRIORITY_FLAG


class HeaderBlocks(SessionCore):
    """The header-block half of the receive path (see the module rules)."""

    def __init__(self, role: Role, settings: LocalSettings) -> None:
        super().__init__(role, settings)
        # The open header block: stream (0 for none), HEADERS flags, fragments so far.
        self._block_stream = 0
        self._block_flags = 0
        self._block = bytearray()
        self._block_error: StreamFault | None = None

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if flags & WHOLE_PLAIN_BLOCK == f.END_HEADERS:  # a client's usual HEADERS: no calls
            self._block_error = None
            self._end_block(stream_id, flags, payload, events)
            return
        fragment = f.strip_padding(flags, payload)
        try:
            fragment = f.split_priority(stream_id, flags, fragment)
            self._block_error = None
        except StreamFault as error:
            self._block_error = error  # raised once the block is decoded
            fragment = fragment[5:]
        if flags & f.END_HEADERS:
            self._end_block(stream_id, flags, fragment, events)
            return
        self._block_stream = stream_id
        self._block_flags = flags
        self._block = bytearray(fragment)
        if len(self._block) > self._block_limit:
            raise ConnectionFault(ErrorCode.ENHANCE_YOUR_CALM, "header block too long")

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if not self._block_stream:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "CONTINUATION outside a block")
        self._block += payload
        if len(self._block) > self._block_limit:
            raise ConnectionFault(ErrorCode.ENHANCE_YOUR_CALM, "header block too long")
        if flags & f.END_HEADERS:
            block = bytes(self._block)
            self._block_stream = 0
            self._block = bytearray()
            self._end_block(stream_id, self._block_flags, block, events)

    def _end_block(self, stream_id: int, flags: int, block: bytes, events: list[Event]) -> None:
        """A whole header block for ``stream_id``: decode it, then judge the stream."""
        codec = self._codec
        if block == codec.kept_block and block:  # ``codec.decode(block)``'s first step
            headers, size = list(codec.kept_headers), codec.kept_size
        else:
            headers, size = codec.decode(block)
        ended = flags & f.END_STREAM != 0
        streams = self._streams
        # A client's odd id above every id it used is idle: this HEADERS opens it (§5.1.1).
        # (Such an id is in no table: a server's table holds only the client's streams.)
        if not (self._server and stream_id & 1 and stream_id > self._highest_peer_id):
            stream = streams.get(stream_id)
            if stream is None:
                self._headers_on_unknown_stream(stream_id)
                return
            if not stream.receiving:
                raise StreamFault(stream_id, ErrorCode.STREAM_CLOSED)
            if self._block_error is not None:
                raise self._block_error
            if size > self._max_list_in:
                raise StreamFault(stream_id, ErrorCode.CANCEL)
            self._on_head(stream, headers, ended, events)
            if ended:
                self._remote_ended(stream)
            return
        self._highest_peer_id = stream_id
        last = self._goaway_sent_last_id  # (``_ignored_after_goaway``, for a client's id)
        if last is not None and stream_id > last:
            return
        refused = self.refuse_over_limit and len(streams) >= self._max_streams_in
        if refused or self._block_error is not None:
            # Opened and at once reset by us: late frames on it are ignored (§5.1).
            self._closed_streams.add(stream_id, ClosedBy.LOCAL_RESET)
            raise self._block_error or StreamFault(stream_id, ErrorCode.REFUSED_STREAM)
        # ``Stream(stream_id, False, send_window, recv_window)`` without its call through the
        # type (one per new stream; a test holds the two equal), its head received, and its
        # remote side ended with it (``_remote_ended``: we have sent nothing yet).
        stream = streams[stream_id] = _new_stream(Stream)
        stream.stream_id, stream.local, stream.unacked = stream_id, False, 0
        stream.receiving, stream.sending = not ended, True
        stream.send_window = self.peer_settings.initial_window_size
        stream.recv_window = self._stream_recv_initial
        stream.final_head_received, stream.final_head_sent = True, False
        # ``request_received(stream_id, headers, ended, size, oversized)`` in place: one per
        # new stream.
        event = _new_event(RequestReceived)
        set_id, set_headers, set_end, set_size, set_oversized = SET_REQUEST_FIELDS
        set_id(event, stream_id)
        set_headers(event, headers)
        set_end(event, ended)
        set_size(event, size)
        set_oversized(event, size > self._max_list_in)
        events.append(event)

    def _headers_on_unknown_stream(self, stream_id: int) -> None:
        """HEADERS for a stream not in the table that does not open one."""
        if self._is_idle(stream_id) or (self._server and not stream_id & 1):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "HEADERS on an idle stream")
        how = self._closed_streams.how(stream_id)
        if how is ClosedBy.LOCAL_RESET or self._ignored_after_goaway(stream_id):
            return
        if how is ClosedBy.END_STREAM:  # §5.1 "closed": after the peer's END_STREAM
            raise ConnectionFault(ErrorCode.STREAM_CLOSED, "HEADERS on a closed stream")
        if how is None and self._server:  # §5.1.1: a lower id never opened
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "stream id not increasing")
        raise StreamFault(stream_id, ErrorCode.STREAM_CLOSED)

    def _on_head(
        self, stream: Stream, headers: list[tuple[bytes, bytes]], ended: bool, events: list[Event]
    ) -> None:
        """A head on an open stream: trailers, or (client role) the response."""
        stream_id = stream.stream_id
        if not stream.final_head_received:
            status = headers[0][1] if headers and headers[0][0] == b":status" else b""
            if status[:1] == b"1":
                if ended:  # §8.1: an informational response cannot end the stream
                    raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)
                events.append(InformationalResponseReceived(stream_id, headers))
                return
            stream.final_head_received = True
            events.append(ResponseReceived(stream_id, headers, ended))
            return
        if not ended or any(name[:1] == b":" for name, _ in headers):
            raise StreamFault(stream_id, ErrorCode.PROTOCOL_ERROR)  # §8.1
        events.append(TrailersReceived(stream_id, headers))

    def _ignored_after_goaway(self, stream_id: int) -> bool:
        """True for a peer stream above the last-stream-id of a GOAWAY we sent (§6.8)."""
        last = self._goaway_sent_last_id
        return last is not None and stream_id > last and (stream_id & 1) == int(self._server)
