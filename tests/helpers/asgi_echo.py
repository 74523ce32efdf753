"""An ASGI WebSocket echo app served by hypercorn, an RFC 8441 server in its own process:
``python -m tests.helpers.asgi_echo [--port N] [--cert FILE --key FILE] [--protocols a,b]``.

Hypercorn answers extended CONNECT over HTTP/2 (it advertises SETTINGS_ENABLE_CONNECT_PROTOCOL)
and classic upgrades over HTTP/1.1: cleartext serves HTTP/1.1 and h2c by prior knowledge on
the same port, TLS offers ALPN h2 and http/1.1.

The launcher binds and listens on 127.0.0.1 itself and hands the socket to hypercorn
(``fd://N``): the port is known before hypercorn starts, and a connection made as soon as
the ``{"port": N}`` line is out waits in the backlog instead of being refused. It exits when
its stdin closes (so a killed test leaves no orphan) or on SIGTERM.

The app: WebSockets echo text and binary messages with their type; the first offered
subprotocol that is in ``--protocols`` is selected; the text ``__close__`` makes it close
with 1000 "bye"; the path ``/__status/NNN`` is refused with status NNN and body
``backend status NNN``. HTTP: ``GET /hello`` → 200 ``hello``; ``POST`` → 200 echoing the
body; anything else 404.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REFUSED_PATH = re.compile(r"^/__status/(\d{3})(?:[/?]|$)")


def make_app(protocols: list[str]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI app; ``protocols`` are the subprotocols it may select."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await _websocket(scope, receive, send, protocols)
        elif scope["type"] == "http":
            await _http(scope, receive, send)
        elif scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": f"{message['type']}.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    return app


async def _websocket(scope: Scope, receive: Receive, send: Send, protocols: list[str]) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    refused = REFUSED_PATH.match(scope["path"])
    if refused:
        # The ASGI "websocket.http.response" extension (hypercorn has it) answers with a
        # chosen status and body instead of the plain 403 of a close before accept.
        status = int(refused.group(1))
        headers = [(b"content-type", b"text/plain")]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        body = f"backend status {status}".encode()
        await send({"type": "websocket.http.response.body", "body": body})
        return
    chosen = next((p for p in scope.get("subprotocols", []) if p in protocols), None)
    await send({"type": "websocket.accept", "subprotocol": chosen})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "__close__":
            await send({"type": "websocket.close", "code": 1000, "reason": "bye"})
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _http(scope: Scope, receive: Receive, send: Send) -> None:
    body = bytearray()
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        status, answer = 200, bytes(body)
    elif scope["method"] == "GET" and scope["path"] == "/hello":
        status, answer = 200, b"hello"
    else:
        status, answer = 404, b"not found"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


async def _stdin_closed() -> None:
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--protocols", default="")
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.certfile, config.keyfile = args.cert, args.key
    config.accesslog = None
    config.errorlog = "-"  # stderr: stdout carries only the port line
    config.loglevel = "WARNING"
    print(json.dumps({"port": listener.getsockname()[1]}), flush=True)
    protocols = [p for p in args.protocols.split(",") if p]
    await serve(make_app(protocols), config, shutdown_trigger=_stdin_closed)


if __name__ == "__main__":
    asyncio.run(main())
