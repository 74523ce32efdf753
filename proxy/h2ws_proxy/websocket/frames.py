"""Where WebSocket frames begin and end in a relayed byte stream, from their headers only.

A tunnel relays bytes unchanged. A :class:`FrameTracker` watches one direction of them and
knows, after every chunk, whether the bytes so far end at a frame boundary, and the status
code of the first Close frame that went by. That lets the proxy log each side's close code,
and put a frame of its own (the drain's Close 1001, :func:`close_frame`) between two frames,
never inside one.

Rules:

* Headers only (RFC 6455 §5.2): FIN, opcode, the mask bit, the 7/16/64-bit payload length,
  the masking key. Payload bytes are skipped arithmetically; the only payload bytes read are
  a Close frame's first two (its status code, unmasked with the frame's key).
* :meth:`FrameTracker.feed` costs O(frame headers in the chunk): a chunk that lies inside one
  frame's payload is one comparison; a header split across chunks is kept (at most 15 bytes)
  and completed by the next chunk.
* RSV bits are not checked: an extension the peers negotiated (permessage-deflate, RFC 7692)
  defines them, and the frame boundaries do not depend on them.
* Continuation state is kept (§5.4): a continuation frame needs an open fragmented message,
  a new data frame needs none; control frames may come between fragments.
* Anything else that is not a frame stream of the expected direction (the wrong mask bit:
  clients mask, servers do not, §5.1; a reserved opcode; a fragmented control frame or one
  over 125 bytes, §5.5; a 64-bit length with its top bit set; a Close payload of one byte,
  §5.5.1) stops the tracking for good: :attr:`FrameTracker.lost` says why (and
  :meth:`FrameTracker.tracking_lost` is called once), each later chunk costs one comparison,
  and nothing else changes. The tracker never raises for the peer's
  bytes, and the caller relays them unchanged whatever it says.
"""

from __future__ import annotations

import struct

#: RFC 6455 §7.4.1: "an endpoint is going away, such as a server going down".
GOING_AWAY = 1001
#: RFC 6455 §7.4.1: the code reported for a Close frame that carried none (never sent).
NO_STATUS = 1005

#: A chunk is "inside a payload" past any real stream's length once tracking is lost.
_LOST_SKIP = 1 << 62
#: The most header bytes a frame needs looked at: 2 + 8 (64-bit length) + 4 (mask key);
#: a Close frame's 2 + 4 + 2 (its code) is less.
_MAX_HEADER = 14
#: A 64-bit payload length (RFC 6455 §5.2: network byte order), read in place.
_UINT64_AT = struct.Struct(">Q").unpack_from
#: ``feed``'s result for a header not all there yet.
_PARTIAL = -1
#: ... and for bytes that are not frames (tracking lost).
_LOST = -2


def _is_whole_data_frame(first_byte: int) -> bool:
    """FIN set, opcode text (1) or binary (2), any RSV bits: the one-frame message."""
    return first_byte & 0x80 != 0 and first_byte & 0x0F in (1, 2)


#: Indexed by a frame's first byte: True for :func:`_is_whole_data_frame` (the fast path,
#: taken while no fragmented message is open).
_WHOLE_DATA_FRAME = tuple(_is_whole_data_frame(byte) for byte in range(256))
#: ... and while one is open: no fast path.
_NONE = (False,) * 256


def _short_sizes(mask_bit: int) -> tuple[int, ...]:
    """Indexed by a frame's second byte: the whole frame's size when its mask bit is
    ``mask_bit`` and its length fits those 7 bits (under 126); else 0."""
    base = 6 if mask_bit else 2
    return tuple(
        base + (byte & 0x7F) if byte & 0x80 == mask_bit and byte & 0x7F < 126 else 0
        for byte in range(256)
    )


#: :func:`_short_sizes` for masked (client to server) and unmasked frames.
_MASKED_SIZES, _UNMASKED_SIZES = _short_sizes(0x80), _short_sizes(0)


class FrameTracker:
    """The frame boundaries of one direction of a WebSocket connection (see the module).

    ``masked``: frames in this direction carry a mask (client to server).

    Built once per tunnel direction and fed once per chunk: both are on the proxy's hot
    paths (bench/README.md), so the state is a few slots and the common chunk, one whole
    short data frame at a boundary, takes one straight path through :meth:`feed`.
    """

    __slots__ = ("_fast", "_head", "_mask_bit", "_sizes", "_skip", "close_code", "lost")

    def __init__(self, *, masked: bool) -> None:
        self._start(0x80 if masked else 0)

    def _start(self, mask_bit: int) -> None:
        """The state of a direction before its first byte (``mask_bit``: 0x80 or 0)."""
        #: Payload bytes of the current frame still to pass.
        self._skip = 0
        #: The start of a frame header split across chunks (empty when none).
        self._head = b""
        self._mask_bit = mask_bit
        #: A short frame's size by its second byte (:func:`_short_sizes`).
        self._sizes = _MASKED_SIZES if mask_bit else _UNMASKED_SIZES
        #: Which first bytes make a whole data frame the fast path takes: none while a
        #: fragmented message is open (``_NONE``; continuation frames are due then).
        self._fast = _WHOLE_DATA_FRAME
        #: The status code of the first Close frame that went by (1005 if it had none),
        #: known once its header and code have passed; None before.
        self.close_code: int | None = None
        #: Why tracking stopped (None while it goes on).
        self.lost: str | None = None

    @property
    def at_boundary(self) -> bool:
        """The bytes fed so far end exactly at a frame's end (never true once lost)."""
        return self._skip == 0 and not self._head and self.lost is None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """The next bytes of this direction, in order; any chunking."""
        end = len(data)
        if (
            not self._skip
            and not self._head
            and end > 1
            and self._sizes[data[1]] == end
            and self._fast[data[0]]
        ):
            # The chunk is one whole short data frame at a boundary (a ping-pong message,
            # each tunnel's message of a many-tunnel read): it ends at a boundary too, and
            # no state changes (not a Close, no fragment; lost tracking has ``_skip`` set).
            return
        pos = self._skip
        if pos < end - 1 and not self._head:
            # A frame header starts in this chunk, with its first two bytes: the common
            # case is a whole short data frame (ping-pong messages), checked straight.
            size = self._sizes[data[pos + 1]]  # 0: a long frame, or masked the wrong way
            if size and self._fast[data[pos]]:
                pos += size
            else:
                pos = self._frame(data, pos, end)  # a control frame, a long one...
                if pos < 0:
                    return  # a partial header (kept), or lost
            if pos >= end:
                self._skip = pos - end
                return
        elif pos >= end:  # inside one payload (or lost): the common bulk case
            self._skip = pos - end
            return
        self._scan(data, pos, end)

    def _scan(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> None:
        """``feed`` past its straight path: the frame headers from ``data[pos]`` on."""
        if self._head:
            pos = self._resume_header(data)
            if pos < 0:
                return
        sizes, fast = self._sizes, self._fast
        while pos < end:
            if end - pos > 1:
                size = sizes[data[pos + 1]]
                if size and fast[data[pos]]:
                    pos += size
                    continue
            pos = self._frame(data, pos, end)
            if pos < 0:
                return  # a partial header (kept), or lost
            fast = self._fast
        self._skip = pos - end

    def pass_to_boundary(self, data: bytes | bytearray | memoryview) -> int | None:
        """Feed ``data`` only up to the end of the frame in progress: how many of its bytes
        that took (0 at a boundary already), or None if the frame goes on past ``data``
        (all of it fed) or tracking is lost. Feed the rest with :meth:`feed`."""
        if self.lost is not None:
            return None
        if self.at_boundary:
            return 0
        taken = 0
        while self._head and taken < len(data):  # a split header: byte by byte, at most 14
            self.feed(data[taken : taken + 1])
            taken += 1
            if self.lost is not None:
                return None
        if self._head:
            return None
        remaining = len(data) - taken
        if self._skip > remaining:
            self._skip -= remaining
            return None
        taken += self._skip
        self._skip = 0
        return taken

    def _resume_header(self, data: bytes | bytearray | memoryview) -> int:
        """Complete the split header with ``data``'s first bytes: where in ``data`` the
        frame ends, or a negative result (still partial: kept; or lost)."""
        head = self._head
        self._head = b""
        joined = head + bytes(data[: _MAX_HEADER + 2])
        after = self._frame(joined, 0, len(joined))  # a partial header: kept whole again
        return after if after < 0 else after - len(head)

    def _frame(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """The frame whose header starts at ``data[pos]``: where it ends (maybe past
        ``end``); ``_PARTIAL`` if its header (or a Close's code) is not all there (then
        kept for the next chunk), or ``_LOST``. State changes only for a whole header."""
        if end - pos < 2:
            return self._partial(data, pos, end)
        first = data[pos]
        length = data[pos + 1] ^ self._mask_bit
        if length > 127:
            return self._lose("a frame masked the wrong way for its direction")
        opcode = first & 0x0F
        if opcode >= 8:  # control frames first: a Close ends every tunnel, both ways
            if opcode > 10:
                return self._lose(f"reserved control opcode {opcode}")
            if length > 125 or not first & 0x80:
                return self._lose("a fragmented or over-long control frame")
            at = pos + (6 if self._mask_bit else 2)
            if opcode == 8 and self.close_code is None:
                if length < 2:
                    if length:
                        return self._lose("a Close frame with a one-byte payload")
                    self.close_code = NO_STATUS
                elif end - at < 2:  # its code (and key) in the next chunk
                    return self._partial(data, pos, end)
                elif self._mask_bit:  # the key is the 4 bytes before the payload
                    self.close_code = (data[at] ^ data[at - 4]) << 8 | data[at + 1] ^ data[at - 3]
                else:
                    self.close_code = data[at] << 8 | data[at + 1]
            elif opcode == 8 and length == 1:
                return self._lose("a Close frame with a one-byte payload")
            return at + length
        at = pos + 2
        if length == 126:
            if end - at < 2:
                return self._partial(data, pos, end)
            length = data[at] << 8 | data[at + 1]
            at += 2
        elif length == 127:
            if end - at < 8:
                return self._partial(data, pos, end)
            (length,) = _UINT64_AT(data, at)
            at += 8
            if length >> 63:
                return self._lose("a 64-bit payload length with its top bit set")
        if self._mask_bit:
            at += 4
        if opcode == 0:
            if self._fast is not _NONE:
                return self._lose("a continuation frame with no message open")
            if first & 0x80:
                self._fast = _WHOLE_DATA_FRAME
        elif opcode <= 2:
            if self._fast is _NONE:
                return self._lose("a new message inside a fragmented one")
            if not first & 0x80:
                self._fast = _NONE
        else:
            return self._lose(f"reserved data opcode {opcode}")
        return at + length

    def _partial(self, data: bytes | bytearray | memoryview, pos: int, end: int) -> int:
        """Keep the start of a header that the next chunk completes."""
        self._head = bytes(data[pos:end])
        self._skip = 0
        return _PARTIAL

    def _lose(self, reason: str) -> int:
        self.lost = reason
        self._skip = _LOST_SKIP
        self._head = b""
        self.tracking_lost(reason)
        return _LOST

    def tracking_lost(self, reason: str) -> None:
        """Called once when the bytes turn out not to be frames (a subclass may report it)."""


def close_frame(code: int, reason: bytes, mask_key: bytes | None = None) -> bytes:
    """A Close frame (RFC 6455 §5.5.1): FIN, no RSV bit (control frames are never
    compressed, RFC 7692 §6.1), ``code`` and ``reason``; masked with ``mask_key`` (4 fresh
    random bytes: toward a server, §5.3) or not (toward a client)."""
    payload = code.to_bytes(2, "big") + reason
    if len(payload) > 125:
        raise ValueError("a control frame's payload is at most 125 bytes")
    if mask_key is None:
        return bytes((0x88, len(payload))) + payload
    if len(mask_key) != 4:
        raise ValueError("a masking key is 4 bytes")
    masked = bytes(byte ^ mask_key[index % 4] for index, byte in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask_key + masked
