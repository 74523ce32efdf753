"""The ``websockets`` library's echo server as a process of its own, for tests that kill
and restart backends: ``python -m tests.helpers.ws_echo_process [--port N]``.

It prints one JSON line, ``{"port": N}``, once listening on 127.0.0.1. WebSockets are
echoed; the text ``__whoami__`` is answered with ``{"port", "peer"}``. Plain ``GET
/healthz`` gets 200 and ``GET /whoami`` 200 with the same JSON; other plain requests 426.
It exits when its stdin closes (so a killed test leaves no orphan) or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import json
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port
    identity: dict[str, object] = {}

    def plain_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if request.path == "/whoami":
            return connection.respond(http.HTTPStatus.OK, json.dumps(identity) + "\n")
        return connection.respond(http.HTTPStatus.UPGRADE_REQUIRED, "upgrade required\n")

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            if message == "__whoami__":
                await connection.send(json.dumps(identity))
            else:
                await connection.send(message)

    async with serve(
        echo, "127.0.0.1", port, process_request=plain_request, compression=None
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        identity.update(port=bound, peer="python-websockets")
        print(json.dumps({"port": bound}), flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
