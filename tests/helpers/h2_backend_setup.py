"""Shared steps of the tests that put a :class:`ScriptedH2Backend` behind the real proxy."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from h2ws_proxy.config import SocketAddress
from tests.conftest import StartProxy
from tests.helpers.h2_client import H2TestClient, WebSocketStream, open_h2_client
from tests.helpers.scripted_h2_backend import GOAWAY, H2Peer, ScriptedH2Backend
from tests.helpers.setup import make_config

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR = 0x0, 0x1, 0x2
REFUSED_STREAM, CANCEL, CONNECT_ERROR = 0x7, 0x8, 0xA


async def proxy_to(
    nursery: trio.Nursery, start_proxy: StartProxy, backend: ScriptedH2Backend, **limits: float
) -> SocketAddress:
    """Start ``backend``, then the proxy with one route ``/`` to it; the proxy's address."""
    await nursery.start(backend.run)
    return await start_proxy(make_config(("/", backend.url), **limits))


@asynccontextmanager
async def h2_client(
    address: SocketAddress, settings: dict[int, int] | None = None
) -> AsyncIterator[H2TestClient]:
    """An HTTP/2 client of the proxy (``settings``: its SETTINGS by code)."""
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream, settings) as client:
        yield client


async def echoes(ws: WebSocketStream, message: str = "ping") -> None:
    """The tunnel is open and a message comes back."""
    assert ws.status == 200, ws.state.headers
    await ws.send(message)
    assert await ws.receive() == message


def goaway_code(peer: H2Peer) -> int | None:
    """The error code of the first GOAWAY the peer read, if any."""
    frames = peer.frames_of(GOAWAY)
    return struct.unpack(">I", frames[0].payload[4:8])[0] if frames else None
