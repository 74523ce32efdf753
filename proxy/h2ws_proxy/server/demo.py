"""A demo WebSocket echo backend (HTTP/1.1 only), so a first run shows something working.

``h2ws-proxy --config config/example.toml --demo-backend`` starts one of these on every
``http://`` backend address of the config, then the proxy in front of them. It speaks only
the classic RFC 6455 handshake, like the legacy servers the proxy is for. It picks the
first subprotocol a client offers, echoes every message, answers pings and closes cleanly.
A plain GET gets a small page that opens a WebSocket back to it (through the proxy, when
the page was loaded through it).
"""

from __future__ import annotations

import logging

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from h2ws_proxy.config import BackendAddress
from h2ws_proxy.errors import ConfigError
from h2ws_proxy.log import log_event
from h2ws_proxy.transport.errors import STREAM_GONE

logger = logging.getLogger(__name__)

_HTML = b"""<!doctype html>
<meta charset="utf-8"><title>h2ws-proxy demo</title>
<h1>h2ws-proxy demo</h1>
<p>This page came through the proxy from its demo backend, which echoes WebSocket messages.
<p><input id="text" value="hello"> <button id="send">send</button>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + "/");
ws.onopen = () => log("open");
ws.onmessage = (event) => log("echo: " + event.data);
ws.onclose = (event) => log("closed " + event.code);
document.getElementById("send").onclick = () => ws.send(document.getElementById("text").value);
</script>
"""
_PAGE = (
    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/html; charset=utf-8\r\n"
    b"content-length: " + str(len(_HTML)).encode() + b"\r\n\r\n" + _HTML
)


async def serve_demo_backend(
    address: BackendAddress, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the echo backend on ``address`` (an ``http://`` one) until cancelled."""
    if address.scheme != "http":
        raise ConfigError(f"--demo-backend serves http:// backends only, not {address}")
    try:
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as error:
        raise ConfigError(
            f"demo backend {address}: cannot listen: {error.strerror or error}"
        ) from error
    log_event(logger, logging.INFO, "demo_backend.listening", address=str(address))
    task_status.started()
    await trio.serve_listeners(_echo_connection, listeners)


async def _echo_connection(stream: trio.SocketStream) -> None:
    ws = WSConnection(ConnectionType.SERVER)
    try:
        while True:
            data = await stream.receive_some(65536)
            ws.receive_data(data or None)
            closing = False
            for event in ws.events():
                outgoing, closing = _respond(ws, event)
                if outgoing:
                    await stream.send_all(outgoing)
            if closing or not data:
                return
    except RemoteProtocolError:
        await stream.send_all(_PAGE)
    except STREAM_GONE:
        return
    except LocalProtocolError as error:
        # A bug here must not take the proxy (same process) down with it.
        log_event(logger, logging.WARNING, "demo_backend.error", error=str(error))
    finally:
        await trio.aclose_forcefully(stream)


def _respond(ws: WSConnection, event: object) -> tuple[bytes, bool]:
    """The bytes to send for ``event``, and whether the connection is done."""
    if isinstance(event, Request):
        subprotocol = event.subprotocols[0] if event.subprotocols else None
        return ws.send(AcceptConnection(subprotocol=subprotocol)), False
    if isinstance(event, TextMessage):
        return ws.send(TextMessage(data=event.data, message_finished=event.message_finished)), False
    if isinstance(event, BytesMessage):
        return ws.send(
            BytesMessage(data=event.data, message_finished=event.message_finished)
        ), False
    if isinstance(event, Ping):
        return ws.send(event.response()), False
    if isinstance(event, CloseConnection):
        if ws.state is not ConnectionState.REMOTE_CLOSING:
            return b"", True  # the peer vanished (wsproto reports 1006): nothing to answer
        return ws.send(event.response()), True
    return b"", False
