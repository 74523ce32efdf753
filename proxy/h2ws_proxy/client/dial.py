"""Dial the server for ``h2ws-proxy connect``: TCP, then TLS with ALPN for https/wss.

Rules: every way dialling fails becomes one :class:`ClientFailure` (exit 3) whose line
names the address and the reason (the TLS reasons are the transport's own, see
:func:`~h2ws_proxy.transport.tls_client.tls_failure_reason`); the whole dial is bounded by
``--connect-timeout-s``. The TLS context verifies the certificate and the host name unless
``--insecure``; ``--cacert`` replaces the system's trust store.
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass

import trio

from h2ws_proxy.client.options import ClientFailure, ConnectOptions, Exit
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.tls_client import start_tls_client, tls_failure_reason


@dataclass(frozen=True)
class Dialled:
    stream: trio.abc.Stream
    alpn: str | None  # the protocol TLS's ALPN chose; None without TLS (or no ALPN answer)


def client_ssl_context(options: ConnectOptions, alpn: list[str]) -> ssl.SSLContext:
    """The TLS context: verification as the options say, ``alpn`` offered."""
    context = ssl.create_default_context()
    if options.cacert:
        try:
            context.load_verify_locations(cafile=options.cacert)
        except (OSError, ssl.SSLError) as error:
            raise ClientFailure(
                Exit.CONNECTION, f"--cacert {options.cacert}: cannot load it ({error})"
            ) from None
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(alpn)
    return context


async def dial(options: ConnectOptions, alpn: list[str]) -> Dialled:
    """A connection to the URL's host and port; TLS (offering ``alpn``) for https/wss."""
    target = options.target
    where = f"{target.host}:{target.port}"
    context = client_ssl_context(options, alpn) if target.tls else None
    with trio.move_on_after(options.connect_timeout_s):
        try:
            tcp = await trio.open_tcp_stream(target.host, target.port)
        except socket.gaierror as error:
            raise ClientFailure(
                Exit.CONNECTION,
                f"cannot resolve {target.host}: {error.strerror}; check the host name",
            ) from None
        except OSError as error:
            raise ClientFailure(
                Exit.CONNECTION, f"cannot connect to {where}: {_why(error)}; is the server up?"
            ) from None
        if context is None:
            return Dialled(tcp, None)
        try:
            tls = await start_tls_client(tcp, context, target.host)
        except STREAM_GONE as error:
            # The transport words its reasons for backends; here the peer is the server.
            reason = tls_failure_reason(error.__cause__ or error).replace("backend", "server")
            hint = "use --cacert FILE or --insecure" if "verify" in reason else "is it TLS?"
            line = f"TLS with {where} failed: {reason}; {hint}"
            raise ClientFailure(Exit.CONNECTION, line) from None
        return Dialled(tls, tls.selected_alpn_protocol())
    raise ClientFailure(
        Exit.CONNECTION,
        f"connecting to {where} took more than {options.connect_timeout_s:g} s; "
        "is the address right (--connect-timeout-s to wait longer)?",
    )


def _why(error: OSError) -> str:
    """A short reason. trio raises one OSError for all the addresses it tried, each
    attempt's own error in an ExceptionGroup as its cause: the first one speaks for all."""
    cause: BaseException = error
    if isinstance(error.__cause__, BaseExceptionGroup) and error.__cause__.exceptions:
        cause = error.__cause__.exceptions[0]
    if isinstance(cause, OSError):
        if cause.errno == errno.ECONNREFUSED:
            return "connection refused"
        return cause.strerror or str(cause)
    return str(cause)
