"""ALPN of an ``https://`` backend spoken to with ``protocol = "h2"`` or ``"auto"``: the
HTTP/2 pool reads what the handshake chose through ``capabilities.tls_of``. A backend that
only speaks HTTP/1.1 (ALPN http/1.1) is, with "auto", reached over an HTTP/1.1 upgrade,
and with "h2" a 502 that says ALPN did not agree."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy.config import BackendTLS, parse_backend
from tests.conftest import StartProxy
from tests.helpers.backend_tls import BACKEND_NAME, write_leaf
from tests.helpers.backends import websockets_backend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.setup import make_config

pytestmark = pytest.mark.socket


@pytest.fixture
def backend_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    cert, key = write_leaf(ca.issue_cert(BACKEND_NAME, "127.0.0.1"), tmp_path, "backend")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return cert, key, ca_file


@pytest.fixture
def http11_only_tls_backend(backend_files: tuple[Path, Path, Path]) -> Iterator[int]:
    """A websockets echo server over TLS whose ALPN offers http/1.1 only."""
    cert, key, _ = backend_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    with websockets_backend(ssl_context=context) as port:
        yield port


def _config(port: int, ca_file: Path, protocol: str):  # type: ignore[no-untyped-def]
    server = dataclasses.replace(
        parse_backend(f"https://127.0.0.1:{port}"),
        tls=BackendTLS(ca=ca_file, server_name=BACKEND_NAME),
        protocol=protocol,
    )
    config = make_config(("/", f"https://127.0.0.1:{port}"))
    route = dataclasses.replace(config.routes[0], backend=config.routes[0].backend.of(server))
    return dataclasses.replace(config, routes=(route,))


async def test_auto_falls_back_to_http11_when_alpn_picks_it(
    start_proxy: StartProxy,
    http11_only_tls_backend: int,
    backend_files: tuple[Path, Path, Path],
) -> None:
    address = await start_proxy(_config(http11_only_tls_backend, backend_files[2], "auto"))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        with trio.fail_after(10):
            ws = await client.websocket("/chat")
            assert ws.status == 200
            await ws.send("auto, over http/1.1")
            assert await ws.receive() == "auto, over http/1.1"


async def test_h2_refuses_a_backend_whose_alpn_picks_http11(
    start_proxy: StartProxy,
    http11_only_tls_backend: int,
    backend_files: tuple[Path, Path, Path],
) -> None:
    address = await start_proxy(_config(http11_only_tls_backend, backend_files[2], "h2"))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        with trio.fail_after(10):
            ws = await client.websocket("/chat")
            await client.finished(ws.state)
    assert ws.status == 502
    assert b"ALPN" in bytes(ws.state.data), bytes(ws.state.data)
