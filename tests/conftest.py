"""Shared fixtures: a proxy started in the test's nursery, TLS certificates."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy import log
from h2ws_proxy.config import ProxyConfig, SocketAddress, TLSConfig
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.backends import websockets_backend
from tests.helpers.records import ProxyRecords, capture_proxy_records

StartProxy = Callable[[ProxyConfig], Awaitable[SocketAddress]]


@pytest.fixture
def start_proxy(nursery: trio.Nursery) -> StartProxy:
    """Start the real server in the test's nursery; returns the listener's bound address."""

    async def start(config: ProxyConfig) -> SocketAddress:
        bound: BoundAddresses = await nursery.start(serve, config)
        return bound.listeners[0]

    return start


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_config(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TLSConfig:
    directory = tmp_path_factory.mktemp("tls")
    cert = ca.issue_cert("localhost", "127.0.0.1", "proxy.test")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for pem in cert.cert_chain_pems[1:]:
        cert_path.write_bytes(cert_path.read_bytes() + pem.bytes())
    cert.private_key_pem.write_to_path(str(key_path))
    return TLSConfig(cert=cert_path, key=key_path)


@pytest.fixture(scope="session")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


WebSocketsBackend = Callable[..., int]


@pytest.fixture
def ws_backend() -> Iterator[WebSocketsBackend]:
    """Start ``websockets`` echo servers (a real RFC 6455 peer); returns their ports.

    A sync fixture on purpose: it is torn down after the trio test and its proxy, so the
    backend never waits on tunnels that are still open.
    """
    with contextlib.ExitStack() as stack:

        def start(
            subprotocols: list[str] | None = None,
            closes: list[int | None] | None = None,
            *,
            deflate: bool = False,
        ) -> int:
            return stack.enter_context(websockets_backend(subprotocols, closes, deflate=deflate))

        yield start


@pytest.fixture
def proxy_records() -> Iterator[ProxyRecords]:
    """The proxy's log records of the test (tunnel and request lines), as dicts."""
    with capture_proxy_records() as records:
        yield records


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """The proxy's logging configuration (handlers, level, sink, process fields) as it was
    before the test: for tests that call ``configure_logging`` or set process fields."""
    root = logging.getLogger("h2ws_proxy")
    saved = (root.handlers[:], root.level, root.propagate, log._sink, log._sink_handler)
    process = dict(log._process_fields)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    log._sink, log._sink_handler = saved[3], saved[4]
    log.set_process_fields(**process)
