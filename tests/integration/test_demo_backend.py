"""The demo backend (``--demo-backend``) runs in the proxy's own process: a peer that
vanishes must never take it (and so the proxy) down."""

from __future__ import annotations

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from h2ws_proxy.config import BackendAddress
from h2ws_proxy.server.demo import serve_demo_backend

pytestmark = pytest.mark.socket


async def open_websocket(port: int) -> tuple[trio.SocketStream, WSConnection]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host="demo", target="/")))
    while True:
        ws.receive_data(await stream.receive_some(65536))
        if any(isinstance(event, AcceptConnection) for event in ws.events()):
            return stream, ws


async def test_a_vanishing_client_does_not_stop_the_demo_backend(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    address = BackendAddress("http", "127.0.0.1", port)
    await nursery.start(serve_demo_backend, address)
    with trio.fail_after(10):
        gone, _ = await open_websocket(port)
        await gone.aclose()  # no Close frame: wsproto reports an abnormal closure (1006)
        stream, ws = await open_websocket(port)
        await stream.send_all(ws.send(TextMessage(data="still here")))
        echoed: list[str] = []
        while not echoed:
            ws.receive_data(await stream.receive_some(65536))
            echoed = [e.data for e in ws.events() if isinstance(e, TextMessage)]
        assert echoed == ["still here"]
        await stream.aclose()
