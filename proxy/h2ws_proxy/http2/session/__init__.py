"""A sans-IO HTTP/2 session (RFC 9113, HPACK by RFC 7541, RFC 8441 extended CONNECT).

:class:`H2Session` is the state machine; the driver feeds it bytes, handles its events,
calls its send methods, and writes what :meth:`H2Session.take_outbound` returns.
"""

from h2ws_proxy.http2.session.core import Role
from h2ws_proxy.http2.session.errors import (
    ErrorCode,
    ProtocolNotNegotiated,
    SessionUsageError,
    StreamUnusable,
    TooManyStreams,
)
from h2ws_proxy.http2.session.events import (
    ConnectionFailed,
    DataReceived,
    Event,
    GoAwayReceived,
    InformationalResponseReceived,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    SettingsAcknowledged,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2ws_proxy.http2.session.session import H2Session
from h2ws_proxy.http2.session.settings import LocalSettings, PeerSettings, SettingCode
from h2ws_proxy.http2.session.streams import StreamState

__all__ = [
    "ConnectionFailed",
    "DataReceived",
    "ErrorCode",
    "Event",
    "GoAwayReceived",
    "H2Session",
    "InformationalResponseReceived",
    "LocalSettings",
    "PeerSettings",
    "PingAcknowledged",
    "PingReceived",
    "ProtocolNotNegotiated",
    "RemoteSettingsChanged",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "SessionUsageError",
    "SettingCode",
    "SettingsAcknowledged",
    "StreamReset",
    "StreamState",
    "StreamUnusable",
    "TooManyStreams",
    "TrailersReceived",
    "WindowUpdated",
]
