"""Real RFC 8441 servers for the tests, each in its own process: Node's ``http2``
(``tests/node/h2_ws_echo_server.mjs``) and hypercorn serving ``asgi_echo.py``.

Both announce ``{"port": N}`` on their first stdout line once they accept connections, and
are started through :func:`tests.helpers.node.start_peer` (never a sleep). The ``start_*``
functions run the server as a task of the given nursery (it is terminated when that nursery
is cancelled; the pytest-trio ``nursery`` fixture is, at the end of the test); the
``*_server`` context managers give it a nursery of its own.

TLS: pass the ``tls_config`` fixture's :class:`TLSConfig` (a trustme leaf for localhost,
127.0.0.1 and proxy.test; clients trust the ``ca`` / ``ca_file`` fixtures).
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from h2ws_proxy.config import TLSConfig
from tests.helpers.h2_client import open_h2_client
from tests.helpers.node import NODE_DIR, NodePeer, start_node_peer, start_peer

NODE_H2_SCRIPT = NODE_DIR / "h2_ws_echo_server.mjs"
ASGI_ECHO_SCRIPT = Path(__file__).resolve().parent / "asgi_echo.py"


async def open_h2_stream(port: int, ssl_context: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """A connection to 127.0.0.1:``port``: cleartext, or TLS offering only ALPN h2 with
    ``ssl_context`` (which this sets up for that offer)."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    if ssl_context is None:
        return tcp
    ssl_context.set_alpn_protocols(["h2"])
    tls = trio.SSLStream(tcp, ssl_context, server_hostname="localhost")
    await tls.do_handshake()
    assert tls.selected_alpn_protocol() == "h2"
    return tls


def _tls_args(tls: TLSConfig | None) -> list[str]:
    return [] if tls is None else ["--cert", str(tls.cert), "--key", str(tls.key)]


async def start_node_h2_server(
    nursery: trio.Nursery,
    *,
    tls: TLSConfig | None = None,
    connect_protocol: bool = True,
    allow_http1: bool = False,
    protocols: tuple[str, ...] = (),
) -> NodePeer:
    """Node's ``http2`` server: h2c, or TLS with ``tls``; ``connect_protocol=False`` leaves
    SETTINGS_ENABLE_CONNECT_PROTOCOL out; ``allow_http1`` (TLS only) serves HTTP/1.1 too."""
    args = _tls_args(tls)
    if not connect_protocol:
        args.append("--no-connect-protocol")
    if allow_http1:
        args.append("--allow-http1")
    if protocols:
        args += ["--protocols", ",".join(protocols)]
    return await start_node_peer(nursery, NODE_H2_SCRIPT, *args)


async def start_hypercorn_server(
    nursery: trio.Nursery, *, tls: TLSConfig | None = None, protocols: tuple[str, ...] = ()
) -> NodePeer:
    """hypercorn with the ASGI echo app: HTTP/1.1 and h2c on one port, or TLS with ``tls``."""
    command = [sys.executable, str(ASGI_ECHO_SCRIPT), *_tls_args(tls)]
    if protocols:
        command += ["--protocols", ",".join(protocols)]
    return await start_peer(nursery, command)


@asynccontextmanager
async def node_h2_server(
    *,
    tls: TLSConfig | None = None,
    connect_protocol: bool = True,
    allow_http1: bool = False,
    protocols: tuple[str, ...] = (),
) -> AsyncIterator[NodePeer]:
    """:func:`start_node_h2_server` in a nursery of its own, stopped on exit."""
    async with trio.open_nursery() as nursery:
        yield await start_node_h2_server(
            nursery,
            tls=tls,
            connect_protocol=connect_protocol,
            allow_http1=allow_http1,
            protocols=protocols,
        )
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def hypercorn_server(
    *, tls: TLSConfig | None = None, protocols: tuple[str, ...] = ()
) -> AsyncIterator[NodePeer]:
    """:func:`start_hypercorn_server` in a nursery of its own, stopped on exit."""
    async with trio.open_nursery() as nursery:
        yield await start_hypercorn_server(nursery, tls=tls, protocols=protocols)
        nursery.cancel_scope.cancel()


async def node_h2_stats(port: int, ssl_context: ssl.SSLContext | None = None) -> dict[str, int]:
    """The Node server's own counts (``GET /stats`` over a fresh connection, h2c or TLS with
    ``ssl_context``; that connection itself counts as one more session and stream)."""
    stream = await open_h2_stream(port, ssl_context)
    async with open_h2_client(stream) as client:
        state = await client.request(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":path", b"/stats"),
                (b":authority", f"127.0.0.1:{port}".encode()),
            ],
            end_stream=True,
        )
        await client.finished(state)
    counts = json.loads(bytes(state.data))
    assert isinstance(counts, dict)
    return {str(key): int(value) for key, value in counts.items()}
