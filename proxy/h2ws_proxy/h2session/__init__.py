"""A sans-IO HTTP/2 session (RFC 9113, HPACK by RFC 7541, RFC 8441 extended CONNECT).

:class:`H2Session` is the state machine; the driver feeds it bytes, handles its events,
calls its send methods, and writes what :meth:`H2Session.take_outbound` returns.

Driving it (one connection):

1. ``session = H2Session(Role.SERVER, LocalSettings(...))``; ``session.initiate()``; write
   ``take_outbound()``.
2. For each read: ``for event in session.receive_data(data)``, then write
   ``take_outbound()`` (PING and SETTINGS ACKs, RST_STREAM, WINDOW_UPDATE, GOAWAY are
   queued there). ``ConnectionFailed`` is the last event: write, then close the socket.
   ``StreamReset(remote=False)`` means the session reset that stream: end its work.
3. After any send call, write ``take_outbound()`` before the next ``await`` (R2).
4. ``DataReceived``: once the application has consumed ``len(event.data)`` bytes, call
   ``acknowledge_received_data(stream_id, n)``; the session batches the WINDOW_UPDATEs.
5. ``send_data`` returns how much went; wait for ``WindowUpdated`` (stream or 0) or
   ``RemoteSettingsChanged`` before sending the rest (``local_window(stream_id)``).

The session never raises for what the peer sent; it raises ``SessionUsageError``
subclasses for the caller's mistakes, writing nothing then.
"""

from h2ws_proxy.h2session.core import Role
from h2ws_proxy.h2session.errors import (
    ErrorCode,
    ProtocolNotNegotiated,
    SessionUsageError,
    StreamUnusable,
    TooManyStreams,
)
from h2ws_proxy.h2session.events import (
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
from h2ws_proxy.h2session.session import H2Session
from h2ws_proxy.h2session.settings import LocalSettings, PeerSettings, SettingCode
from h2ws_proxy.h2session.streams import StreamState

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
