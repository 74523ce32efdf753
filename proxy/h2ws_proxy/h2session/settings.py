"""SETTINGS: what we advertise, what the peer advertised, and the checks on its values.

Rules (RFC 9113 §6.5, RFC 8441 §3):

* Each setting is a 16-bit identifier and a 32-bit value (§6.5.1); identifiers we do not
  know are ignored (§6.5.2).
* The peer's values are checked as its SETTINGS frame is read (§6.5.2): ENABLE_PUSH other
  than 0/1 is a PROTOCOL_ERROR, so is ENABLE_PUSH=1 from a server (§8.4);
  INITIAL_WINDOW_SIZE above 2^31-1 a FLOW_CONTROL_ERROR; MAX_FRAME_SIZE outside
  [2^14, 2^24-1] a PROTOCOL_ERROR; ENABLE_CONNECT_PROTOCOL other than 0/1, or going from
  1 back to 0, a PROTOCOL_ERROR (RFC 8441 §3). All are connection errors.
* The peer's values take effect as its frame is read (we ACK at once). Ours take effect for
  the peer when it ACKs them: :class:`PendingSettings` keeps each frame we sent until its
  ACK comes, in order (§6.5.3), so the session applies a *lowered* limit only once ACKed
  and a raised one at once (a peer can only have followed the old value or the new).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum

from h2ws_proxy.h2session.errors import ConnectionFault, ErrorCode
from h2ws_proxy.h2session.frames import MAX_WINDOW

_SETTING = struct.Struct(">HL")
MIN_MAX_FRAME_SIZE = 2**14  # RFC 9113 §6.5.2: also the default
MAX_MAX_FRAME_SIZE = 2**24 - 1
DEFAULT_WINDOW = 65535  # RFC 9113 §6.9.2
DEFAULT_HEADER_TABLE_SIZE = 4096  # RFC 9113 §6.5.2


class SettingCode(IntEnum):
    """RFC 9113 §6.5.2 and RFC 8441 §3 identifiers."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8


_KNOWN_CODES = frozenset(int(code) for code in SettingCode)


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """What we advertise, plus the connection receive window we raise to at start.

    ``connection_window`` is the connection-level window (stream 0) the session opens with a
    WINDOW_UPDATE right after its SETTINGS; at least the RFC's 65535. Set it to
    ``max_concurrent_streams * initial_window_size`` so a stalled stream holds only its own
    credit. ``enable_connect_protocol`` is sent only in the server role (RFC 8441 §3).
    """

    max_concurrent_streams: int = 100
    initial_window_size: int = DEFAULT_WINDOW
    max_frame_size: int = MIN_MAX_FRAME_SIZE
    max_header_list_size: int = 65536
    header_table_size: int = DEFAULT_HEADER_TABLE_SIZE
    enable_push: bool = False
    enable_connect_protocol: bool = False
    connection_window: int = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if self.enable_push:
            raise ValueError("server push is not supported: enable_push must be False")
        if not 0 <= self.initial_window_size <= MAX_WINDOW:
            raise ValueError("initial_window_size must be in [0, 2**31-1]")
        if not MIN_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ValueError("max_frame_size must be in [16384, 2**24-1]")
        if not DEFAULT_WINDOW <= self.connection_window <= MAX_WINDOW:
            raise ValueError("connection_window must be in [65535, 2**31-1]")
        for value in (self.max_concurrent_streams, self.max_header_list_size):
            if not 0 <= value < 2**32:
                raise ValueError("settings are 32-bit unsigned values")

    def to_pairs(self, *, server: bool) -> list[tuple[int, int]]:
        """The (identifier, value) pairs of our first SETTINGS frame."""
        pairs = [
            (SettingCode.HEADER_TABLE_SIZE, self.header_table_size),
            (SettingCode.ENABLE_PUSH, int(self.enable_push)),
            (SettingCode.MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (SettingCode.INITIAL_WINDOW_SIZE, self.initial_window_size),
            (SettingCode.MAX_FRAME_SIZE, self.max_frame_size),
            (SettingCode.MAX_HEADER_LIST_SIZE, self.max_header_list_size),
        ]
        if server and self.enable_connect_protocol:
            pairs.append((SettingCode.ENABLE_CONNECT_PROTOCOL, 1))
        return [(int(code), value) for code, value in pairs]


@dataclass(slots=True)
class PeerSettings:
    """The peer's current values (RFC 9113 §6.5.2 defaults until its SETTINGS arrive).

    ``max_concurrent_streams`` and ``max_header_list_size`` are unlimited by default
    (``None``).
    """

    header_table_size: int = DEFAULT_HEADER_TABLE_SIZE
    enable_push: bool = True
    max_concurrent_streams: int | None = None
    initial_window_size: int = DEFAULT_WINDOW
    max_frame_size: int = MIN_MAX_FRAME_SIZE
    max_header_list_size: int | None = None
    enable_connect_protocol: bool = False


def encode_settings(pairs: list[tuple[int, int]]) -> bytes:
    """A SETTINGS payload."""
    return b"".join(_SETTING.pack(code, value) for code, value in pairs)


def parse_settings(payload: bytes, *, peer_is_server: bool) -> list[tuple[int, int]]:
    """The (identifier, value) pairs of a peer's SETTINGS payload, each checked (see module
    rules); identifiers we do not know are dropped. The length was checked already."""
    pairs: list[tuple[int, int]] = []
    for code, value in _SETTING.iter_unpack(payload):
        if code == SettingCode.ENABLE_PUSH and (value > 1 or (peer_is_server and value)):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
        if code == SettingCode.INITIAL_WINDOW_SIZE and value > MAX_WINDOW:
            raise ConnectionFault(ErrorCode.FLOW_CONTROL_ERROR, "bad INITIAL_WINDOW_SIZE")
        if code == SettingCode.MAX_FRAME_SIZE and not (
            MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE
        ):
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
        if code == SettingCode.ENABLE_CONNECT_PROTOCOL and value > 1:
            raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "bad ENABLE_CONNECT_PROTOCOL")
        if code in _KNOWN_CODES:
            pairs.append((code, value))
    return pairs


def apply_peer_settings(peer: PeerSettings, pairs: list[tuple[int, int]]) -> dict[int, int]:
    """Store ``pairs`` in ``peer``; returns {identifier: new value} for what was sent."""
    changes: dict[int, int] = {}
    for code, value in pairs:
        if code == SettingCode.HEADER_TABLE_SIZE:
            peer.header_table_size = value
        elif code == SettingCode.ENABLE_PUSH:
            peer.enable_push = bool(value)
        elif code == SettingCode.MAX_CONCURRENT_STREAMS:
            peer.max_concurrent_streams = value
        elif code == SettingCode.INITIAL_WINDOW_SIZE:
            peer.initial_window_size = value
        elif code == SettingCode.MAX_FRAME_SIZE:
            peer.max_frame_size = value
        elif code == SettingCode.MAX_HEADER_LIST_SIZE:
            peer.max_header_list_size = value
        elif code == SettingCode.ENABLE_CONNECT_PROTOCOL:
            if peer.enable_connect_protocol and not value:  # RFC 8441 §3
                raise ConnectionFault(ErrorCode.PROTOCOL_ERROR, "ENABLE_CONNECT_PROTOCOL 1 to 0")
            peer.enable_connect_protocol = bool(value)
        changes[code] = value
    return changes


@dataclass(slots=True)
class PendingSettings:
    """Our SETTINGS frames sent and not yet ACKed, oldest first (RFC 9113 §6.5.3)."""

    frames: deque[dict[int, int]] = field(default_factory=deque)

    def sent(self, pairs: list[tuple[int, int]]) -> None:
        self.frames.append(dict(pairs))

    def acknowledged(self) -> dict[int, int]:
        """The values of the oldest unACKed frame (empty for an ACK we did not ask for)."""
        return self.frames.popleft() if self.frames else {}

    def highest(self, code: int, current: int) -> int:
        """The largest of ``current`` and every pending value for ``code``."""
        return max([current, *(frame[code] for frame in self.frames if code in frame)])
