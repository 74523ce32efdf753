"""What :meth:`H2Session.receive_data` reports: past-tense, frozen, slotted events.

Rules:

* The end of the peer's side of a stream is the ``end_stream`` flag of the event that
  carried END_STREAM (:class:`RequestReceived`, :class:`ResponseReceived`,
  :class:`DataReceived`; :class:`TrailersReceived` always ends it). There is no separate
  "stream ended" event: one frame, one event.
* :class:`StreamReset` ends a stream either way: ``remote=True`` for the peer's RST_STREAM,
  ``remote=False`` for one the session sent because the peer broke a stream rule (the
  driver ends that stream's work; nothing more to send on it).
* :class:`ConnectionFailed` is always the last event: a GOAWAY is queued, all further input
  is ignored; the driver flushes :meth:`H2Session.take_outbound` and closes the socket.
* Error codes are :class:`ErrorCode` when known, else the plain int (RFC 9113 §7).
"""

from __future__ import annotations

from dataclasses import dataclass

from h2ws_proxy.h2session.errors import ErrorCode

Header = tuple[bytes, bytes]

_new = object.__new__


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every session event."""


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    """Server role: the peer opened ``stream_id`` with this request head.

    ``header_list_size`` is the head's size as SETTINGS_MAX_HEADER_LIST_SIZE counts it;
    ``oversized`` says it exceeds what we advertised (RFC 9113 §10.5.1): the stream is open
    and the driver answers 431 (or resets it).
    """

    stream_id: int
    headers: list[Header]
    end_stream: bool
    header_list_size: int = 0
    oversized: bool = False


#: The slots' setters of :class:`RequestReceived`, in its fields' order (a frozen dataclass:
#: its instances are made by setting them, as :func:`request_received` does).
SET_REQUEST_FIELDS = tuple(
    RequestReceived.__dict__[name].__set__
    for name in ("stream_id", "headers", "end_stream", "header_list_size", "oversized")
)


def request_received(
    stream_id: int, headers: list[Header], end_stream: bool, size: int, oversized: bool
) -> RequestReceived:
    """``RequestReceived(stream_id, headers, end_stream, size, oversized)``, the same object,
    made as :func:`data_received` makes its event: one per new stream."""
    event = _new(RequestReceived)
    set_id, set_headers, set_end, set_size, set_oversized = SET_REQUEST_FIELDS
    set_id(event, stream_id)
    set_headers(event, headers)
    set_end(event, end_stream)
    set_size(event, size)
    set_oversized(event, oversized)
    return event


@dataclass(frozen=True, slots=True)
class InformationalResponseReceived(Event):
    """Client role: a 1xx response head on ``stream_id`` (more heads follow)."""

    stream_id: int
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class ResponseReceived(Event):
    """Client role: the final response head on ``stream_id``."""

    stream_id: int
    headers: list[Header]
    end_stream: bool


@dataclass(frozen=True, slots=True)
class TrailersReceived(Event):
    """A trailer section; the peer's side of ``stream_id`` has ended."""

    stream_id: int
    headers: list[Header]


@dataclass(frozen=True, slots=True)
class DataReceived(Event):
    """DATA on ``stream_id``. Return credit with ``acknowledge_received_data(stream_id,
    len(data))`` once consumed; padding (``flow_controlled_length - len(data)``) was
    credited by the session already."""

    stream_id: int
    data: bytes
    flow_controlled_length: int
    end_stream: bool


_SET_DATA_FIELDS = tuple(
    DataReceived.__dict__[name].__set__
    for name in ("stream_id", "data", "flow_controlled_length", "end_stream")
)


def data_received(stream_id: int, data: bytes, length: int, end_stream: bool) -> DataReceived:
    """``DataReceived(stream_id, data, length, end_stream)``, the same object, made faster:
    the receive loop makes one per DATA frame. A frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__`` (a look-up and a generic call each); this sets
    the slots through their own descriptors."""
    event = _new(DataReceived)
    set_id, set_data, set_length, set_end = _SET_DATA_FIELDS
    set_id(event, stream_id)
    set_data(event, data)
    set_length(event, length)
    set_end(event, end_stream)
    return event


@dataclass(frozen=True, slots=True)
class StreamReset(Event):
    """``stream_id`` was reset: by the peer (``remote``) or by us for a stream error."""

    stream_id: int
    error_code: ErrorCode | int
    remote: bool


@dataclass(frozen=True, slots=True)
class WindowUpdated(Event):
    """The peer gave ``delta`` bytes of send credit on ``stream_id`` (0: the connection)."""

    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class RemoteSettingsChanged(Event):
    """The peer's SETTINGS (already ACKed): {identifier: new value}, as sent."""

    changes: dict[int, int]


@dataclass(frozen=True, slots=True)
class SettingsAcknowledged(Event):
    """The peer ACKed our oldest pending SETTINGS: {identifier: value} now in force."""

    changes: dict[int, int]


@dataclass(frozen=True, slots=True)
class PingReceived(Event):
    """The peer pinged; the ACK is queued already."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PingAcknowledged(Event):
    """The peer answered one of our PINGs."""

    data: bytes


@dataclass(frozen=True, slots=True)
class GoAwayReceived(Event):
    """The peer will not take streams above ``last_stream_id``; those up to it go on
    (RFC 9113 §6.8). Our streams above it (client role) are reported next as
    ``StreamReset(REFUSED_STREAM, remote=True)``: the peer never processed them."""

    error_code: ErrorCode | int
    last_stream_id: int
    debug_data: bytes


@dataclass(frozen=True, slots=True)
class ConnectionFailed(Event):
    """The connection is over: the peer broke a connection rule (GOAWAY with ``error_code``
    queued) or we closed it. Always the last event."""

    error_code: ErrorCode | int
    reason: str
