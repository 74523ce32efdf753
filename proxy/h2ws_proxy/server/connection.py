"""Decide which frontend serves a new client connection. No protocol logic lives here.

The listener's ``protocols`` say what it serves. With TLS, the handshake runs under the
client handshake timeout and ALPN decides: ``h2`` gets the HTTP/2 frontend, ``http/1.1``
the HTTP/1.1 one, and no ALPN the HTTP/1.1 one if the listener serves it (RFC 9113 §3.2:
HTTP/2 over TLS is negotiated), else the connection is closed. The frontend learns which
certificate's names the handshake served (``ClientInfo.certificate``).

Without TLS, a listener serving both takes both on one port: the first bytes are compared
with the HTTP/2 client preface (RFC 9113 §3.4) as they arrive; a mismatch means HTTP/1.1
(h11 then judges the request head and answers 400 to garbage), except that bytes opening
with the preface's request line (``PRI * HTTP/2.0``, a method RFC 9113 §3.4 reserves) are
a broken HTTP/2 preface: GOAWAY(PROTOCOL_ERROR), then the connection closes. A listener
serving ``h2`` alone treats any mismatch so; one serving ``http/1.1`` alone does not
sniff. A client that sends nothing in time is dropped. The bytes read while sniffing are
handed to the chosen frontend.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl

import trio

from h2ws_proxy.config import served_names
from h2ws_proxy.h2session.frames import PREFACE as CLIENT_PREFACE
from h2ws_proxy.h2session.frames import write_goaway
from h2ws_proxy.http1.frontend import H1Frontend
from h2ws_proxy.http2.frontend import H2Frontend
from h2ws_proxy.log import log_event
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.transport.capabilities import lean_accepted, tls_of
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.lingering import linger_before_close

logger = logging.getLogger(__name__)


async def sniff_h2_preface(stream: trio.abc.ReceiveStream) -> tuple[bool, bytes]:
    """Read until the bytes are the HTTP/2 preface or cannot be; (is_h2, bytes read)."""
    received = b""
    while len(received) < len(CLIENT_PREFACE):
        data = await stream.receive_some(len(CLIENT_PREFACE) - len(received))
        if not data:
            return False, received
        received += data
        if not CLIENT_PREFACE.startswith(received):
            return False, received
    return True, received


async def handle_client(
    stream: trio.abc.Stream,
    server: ServerContext,
    info: ClientInfo,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve one client connection to its end; never raises for client behaviour."""
    # Fewer scheduler trips per read and write (see socket_stream.py, tls_stream.py).
    stream = lean_accepted(stream, ssl_context)
    try:
        with server.stats.count_connection():
            await _serve(stream, server, info)
    except STREAM_GONE as error:
        log_event(
            logger,
            logging.DEBUG,
            "client.connection_lost",
            conn=info.connection_id,
            error=str(error),
        )
    except Exception as error:
        # A bug: one line and a counter (what a peer can trigger must not flood the log);
        # the traceback at debug level. The server keeps running.
        server.stats.unexpected_errors += 1
        log_event(
            logger,
            logging.ERROR,
            "connection.unexpected_error",
            conn=info.connection_id,
            error=f"{type(error).__name__}: {error}",
            count=server.stats.unexpected_errors,
        )
        logger.debug("unexpected error on connection %d", info.connection_id, exc_info=True)
    finally:
        await trio.aclose_forcefully(stream)


async def _serve(
    stream: trio.abc.Stream,
    server: ServerContext,
    info: ClientInfo,
) -> None:
    timeout_s = server.config.limits.client_handshake_timeout_s
    tls_stream = tls_of(stream)
    if tls_stream is not None:
        with trio.move_on_after(timeout_s) as scope:
            try:
                await tls_stream.do_handshake()
            except trio.BrokenResourceError as error:
                log_event(
                    logger,
                    logging.INFO,
                    "tls.handshake_failed",
                    conn=info.connection_id,
                    error=str(error.__cause__ or error),
                )
                return
        if scope.cancelled_caught:
            log_event(logger, logging.INFO, "tls.handshake_timeout", conn=info.connection_id)
            server.stats.counters.count_abuse("client_handshake_timeout")
            return
        alpn = tls_stream.selected_alpn_protocol()
        tls = info.listener.tls
        if alpn == "h2" and tls is not None and len(tls.all_certificates()) > 1:
            # The certificate served (SNI chose it among several): HTTP/2 answers requests
            # for hosts it does not cover with 421, as they belong on another connection.
            # With one certificate there is no other connection to send them to: served
            # as they come, as before (and as Caddy and Envoy do by default).
            served = served_names(tls_stream.server_context())
            info = dataclasses.replace(info, certificate=served)
        if alpn == "h2":
            await _run(H2Frontend(tls_stream, server, info), server, info, "h2")
        elif alpn == "http/1.1" or "http/1.1" in info.listener.protocols:
            await _run(H1Frontend(tls_stream, server, info), server, info, "h1")
        else:
            log_event(logger, logging.INFO, "tls.no_alpn_h2", conn=info.connection_id)
        return
    protocols = info.listener.protocols
    if "h2" not in protocols:
        await _run(H1Frontend(stream, server, info), server, info, "h1")
        return
    with trio.move_on_after(timeout_s) as scope:
        is_h2, received = await sniff_h2_preface(stream)
    if scope.cancelled_caught:
        log_event(logger, logging.INFO, "client.preface_timeout", conn=info.connection_id)
        server.stats.counters.count_abuse("client_handshake_timeout")
        return
    if is_h2:
        await _run(H2Frontend(stream, server, info, initial_data=received), server, info, "h2")
    elif not received:
        return  # closed before a byte
    elif "http/1.1" not in protocols or received.startswith(_PREFACE_LINE):
        await _refuse_preface(stream, info)
    else:
        await _run(H1Frontend(stream, server, info, initial_data=received), server, info, "h1")


async def _run(
    frontend: H2Frontend | H1Frontend, server: ServerContext, info: ClientInfo, protocol: str
) -> None:
    """Run ``frontend`` counted in ``h2ws_connections_active{listener,protocol}``."""
    counters, key = server.stats.counters, (str(info.listener.bind), protocol)
    counters.connection_opened(key)
    try:
        await frontend.run()
    finally:
        counters.connection_closed(key)


#: The request line that opens the HTTP/2 client preface (RFC 9113 §3.4).
_PREFACE_LINE = CLIENT_PREFACE[: CLIENT_PREFACE.index(b"\r\n")]


async def _refuse_preface(stream: trio.abc.Stream, info: ClientInfo) -> None:
    """Not the HTTP/2 client preface where one was due: a connection error PROTOCOL_ERROR
    (RFC 9113 §3.4), its GOAWAY, then the connection closes (our side first)."""
    log_event(logger, logging.INFO, "h2.invalid_preface", conn=info.connection_id)
    goaway = bytearray()
    write_goaway(goaway, 0, 0x1)  # PROTOCOL_ERROR
    await stream.send_all(goaway)
    await linger_before_close(stream, half_close=True)
