"""A TLS connection to a backend: :class:`LeanTLSStream` in client mode, half-closeable.

Rules:

* The context decides ALPN and verification, ``server_hostname`` the SNI and the name
  verified (an IP address: no SNI, the certificate's IP SANs are verified); both come
  from the backend's configuration (``backend/tls.py``).
* Not pollable (:func:`~h2ws_proxy.transport.capabilities.as_pollable` gives None): a
  readable socket does not mean a readable TLS stream (a record may be partial, or not
  application data), nor the reverse (OpenSSL may hold bytes already read). A tunnel to a
  TLS backend runs its two pumps as tasks.
* Half-close: TLS has no FIN of its own, and :meth:`send_eof` sends nothing. close_notify
  would be the TLS 1.3 equivalent (RFC 8446 §6.1), but a TLS 1.2 peer must answer it by
  closing at once and dropping what it still had to send (RFC 5246 §7.2.1), and Python's
  ``ssl`` sends it only inside an ``SSL_shutdown`` that also reads on for the peer's and
  fails on the application data already on its way (the backend's last bytes, lost). A
  WebSocket has its own closing handshake, after which the backend closes the connection:
  the tunnel keeps reading until it does, bounded by ``half_closed_timeout_s``, and then
  closes. Sends after ``send_eof`` raise ``trio.ClosedResourceError``, as on a socket.
* ``aclose`` sends close_notify if the socket takes it at once and never waits for the
  peer's (:class:`LeanTLSStream`): closing a pooled connection does not block.
* Errors are ``trio.BrokenResourceError`` whose message is a short reason
  (:func:`tls_failure_reason`: expired, hostname mismatch, unknown CA...), the ssl error
  as ``__cause__``.
"""

from __future__ import annotations

import socket
import ssl

import trio

from h2ws_proxy.transport.socket_stream import LeanSocketStream, socket_is_quiet
from h2ws_proxy.transport.tls_stream import LeanTLSStream

#: OpenSSL's X509_V_ERR_* codes a certificate verification fails with, as short reasons.
_VERIFY_REASONS = {
    2: "unknown CA (the issuer's certificate is not available)",
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "self-signed certificate (unknown CA)",
    19: "self-signed certificate in the chain (unknown CA)",
    20: "unknown CA (the issuer is not trusted)",
    21: "unknown CA (cannot verify the certificate)",
    23: "certificate revoked",
    26: "certificate not meant for a TLS server",
    62: "hostname mismatch",
    64: "IP address mismatch",
}
#: Codes whose ``verify_message`` says more than the short reason (the name looked for).
_NAMING_REASONS = frozenset({62, 64})
#: Other OpenSSL reasons (``SSLError.reason``) a backend connection meets, as short reasons.
_SSL_REASONS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the backend requires a client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (
        "the backend refused the handshake (no common protocol or cipher, or a client "
        "certificate required)"
    ),
    "TLSV1_ALERT_UNKNOWN_CA": "the backend does not trust our client certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the backend refused our client certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the backend says our client certificate expired",
    "WRONG_VERSION_NUMBER": "the backend does not speak TLS (an http:// server?)",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common (1.2 or newer is needed)",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common (1.2 or newer is needed)",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "the backend does not take http/1.1 (ALPN)",
    "UNEXPECTED_EOF_WHILE_READING": "the backend closed the connection in the TLS handshake",
}

#: ``SSLError.reason`` of an alert the peer sent.
_ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")


def tls_failure_reason(error: BaseException | None) -> str:
    """A short reason for a failed TLS connection (the handshake's, or a later read's)."""
    if isinstance(error, ssl.SSLCertVerificationError):
        short = _VERIFY_REASONS.get(error.verify_code)
        detail = str(error.verify_message)
        if short is None:
            return f"certificate verify failed: {detail}"
        if error.verify_code in _NAMING_REASONS:  # the detail names what was looked for
            return f"certificate verify failed: {short} ({detail})"
        return f"certificate verify failed: {short}"
    if isinstance(error, ssl.SSLError):
        reason = str(error.reason) if error.reason else ""
        if reason in _SSL_REASONS:
            return _SSL_REASONS[reason]
        if isinstance(error, ssl.SSLEOFError):
            return "the backend closed the connection without close_notify"
        return f"TLS error: {reason.lower().replace('_', ' ') or error}"
    if isinstance(error, OSError):
        return f"socket error: {error.strerror or error}"
    return str(error)


class LeanTLSClientStream(LeanTLSStream, trio.abc.HalfCloseableStream):
    """A TLS client connection over a connected TCP socket (handshake not done yet)."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        super().__init__(sock, context, server_hostname)
        self._eof_sent = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._check_not_ended()
        try:
            await super().send_all(data)
        except trio.BrokenResourceError:
            alert = self._alert_received()
            if alert is None:
                raise
            raise trio.BrokenResourceError(
                f"TLS connection error: {tls_failure_reason(alert)}"
            ) from alert

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        self._check_not_ended()
        return super().send_nowait(data)

    async def send_eof(self) -> None:
        """Our side is done; nothing is sent (see the module's rules on half-close)."""
        self._check_open()
        self._eof_sent = True
        await trio.lowlevel.checkpoint()

    def is_quiet(self) -> bool:
        """True if an idle connection has nothing to be read: no bytes OpenSSL holds, and
        none (no record, no EOF, no error) on the socket."""
        return not self._tls.pending() and socket_is_quiet(self._tls)

    def _alert_received(self) -> ssl.SSLError | None:
        """After a failed write: the peer's alert, if one came before its close, as the
        better reason. A TLS 1.3 server checks our certificate after our side of the
        handshake ended, then sends its alert and closes: our first write (the request)
        may meet that close before anything reads the alert."""
        if self._receiving or self._closed:
            return None  # a reader meets the alert itself
        try:
            self._tls.recv(1)  # the stream is broken: nothing read here is wanted
        except ssl.SSLError as error:
            if str(error.reason or "").startswith(_ALERT_PREFIXES):
                return error
        except OSError:
            pass
        return None

    def _check_not_ended(self) -> None:
        if self._eof_sent:
            raise trio.ClosedResourceError("send_eof was called on this stream")

    def _broken(self, error: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        if self._closed:
            return trio.ClosedResourceError("the stream was closed")
        return trio.BrokenResourceError(f"TLS connection error: {tls_failure_reason(error)}")


async def start_tls_client(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str
) -> LeanTLSClientStream:
    """TLS over a dialled socket stream (ours or trio's; it must not be used afterwards).

    Raises ``trio.BrokenResourceError`` (message: :func:`tls_failure_reason`, cause: the
    ssl error) if the handshake fails; the connection is closed then.
    """
    sock = _take_socket(stream)
    tls = LeanTLSClientStream(sock, context, server_hostname)
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tls)
        raise
    return tls


def _take_socket(stream: trio.abc.Stream) -> socket.socket:
    if isinstance(stream, LeanSocketStream):
        return stream.detach()
    if isinstance(stream, trio.SocketStream):
        family, kind, proto = stream.socket.family, stream.socket.type, stream.socket.proto
        return socket.socket(family, kind, proto, fileno=stream.socket.detach())
    raise TypeError(f"TLS to a backend runs on a socket, not on {type(stream).__name__}")
