"""HTTP/2 error codes, and the two kinds of error the session knows.

Rules:

* Error codes are RFC 9113 §7's, as :class:`ErrorCode`. A code we do not know is legal on
  the wire (§7: "MUST NOT trigger any special behavior") and is carried as a plain ``int``
  wherever a peer's code is reported.
* *Local* errors (:class:`SessionUsageError` and its subclasses) are raised to the caller
  when it misuses the session: sending on a stream that cannot carry frames, opening a
  stream the peer would refuse. They never change what is on the wire.
* *Remote* errors never leave :meth:`H2Session.receive_data`: the peer's mistakes become
  a stream error (RST_STREAM) or a connection error (GOAWAY) plus an event. The two
  exceptions here that carry them (:class:`StreamFault`, :class:`ConnectionFault`) are
  internal: raised by a frame handler, caught once by the receive loop.
"""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """RFC 9113 §7 error codes."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def error_code_of(value: int) -> ErrorCode | int:
    """``value`` as an :class:`ErrorCode` when we know it, else the plain int (RFC 9113 §7)."""
    try:
        return ErrorCode(value)
    except ValueError:
        return value


class SessionUsageError(Exception):
    """The caller asked for something the session cannot do (a local error)."""


class StreamUnusable(SessionUsageError):
    """The stream cannot carry this frame from us: it is closed, reset, never opened by the
    peer, or the connection itself is closed. The caller ends its work on that stream."""


class ProtocolNotNegotiated(SessionUsageError):
    """Extended CONNECT (``:protocol``) before the server's SETTINGS_ENABLE_CONNECT_PROTOCOL=1
    arrived (RFC 8441 §4): the caller waits for ``RemoteSettingsChanged`` or falls back."""


class TooManyStreams(SessionUsageError):
    """Opening one more stream would exceed the peer's SETTINGS_MAX_CONCURRENT_STREAMS
    (RFC 9113 §5.1.2): the caller waits for a stream to end."""


class StreamFault(Exception):
    """Internal: the peer broke a rule that ends one stream (RFC 9113 §5.4.2)."""

    def __init__(self, stream_id: int, code: ErrorCode) -> None:
        super().__init__(stream_id, code)
        self.stream_id = stream_id
        self.code = code


class ConnectionFault(Exception):
    """Internal: the peer broke a rule that ends the connection (RFC 9113 §5.4.1)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
