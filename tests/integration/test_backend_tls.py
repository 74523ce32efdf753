"""TLS to ``https://`` backends, on loopback with real certificates (trustme).

Tunnels (HTTP/2 and HTTP/1.1 clients) and ordinary requests reach a TLS backend with
ALPN http/1.1, SNI as configured and verification; keep-alive reuses one TLS connection
and notices one the backend closed; every verification failure is a 502 whose log line
says why and names the backend; mutual TLS; ``verify = false`` with its startup warning.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trustme
from websockets.sync.client import connect as ws_connect

from h2ws_proxy.config import BackendTLS, CertificateConfig, load_config
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.conftest import StartProxy
from tests.helpers.backend_tls import (
    BACKEND_NAME,
    Handshakes,
    backend_server_context,
    expired_leaf,
    https_config,
    self_signed_pems,
    serve_keepalive,
    write_leaf,
)
from tests.helpers.backends import BackendConnection, ScriptedBackend, websockets_backend
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.records import ProxyRecords, capture_proxy_records

pytestmark = pytest.mark.socket

GET = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/page"),
    (b":authority", b"proxy.test"),
]


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PEM files: the backend's certificate (from the session CA), an expired one, a
    self-signed one, a client certificate (same CA), that CA and an unrelated one."""
    directory = tmp_path_factory.mktemp("backend-tls")
    files: dict[str, Path] = {}
    files["backend"], files["backend-key"] = write_leaf(
        ca.issue_cert(BACKEND_NAME, "127.0.0.1"), directory, "backend"
    )
    files["expired"], files["expired-key"] = write_leaf(expired_leaf(ca), directory, "expired")
    files["client"], files["client-key"] = write_leaf(
        ca.issue_cert("proxy-client.test"), directory, "client"
    )
    self_signed, self_signed_key = self_signed_pems()
    files["self-signed"] = directory / "self-signed.pem"
    files["self-signed"].write_bytes(self_signed)
    files["self-signed-key"] = directory / "self-signed-key.pem"
    files["self-signed-key"].write_bytes(self_signed_key)
    files["ca"] = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["other-ca"] = directory / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(files["other-ca"]))
    return files


@pytest.fixture
def records() -> Iterator[ProxyRecords]:
    with capture_proxy_records() as captured:
        yield captured


@pytest.fixture
def tls_ws_backend(certs: dict[str, Path]) -> Iterator[int]:
    """A ``websockets`` echo server over TLS (sync: torn down after the proxy)."""
    context = backend_server_context(certs["backend"], certs["backend-key"])
    with websockets_backend(ssl_context=context) as port:
        yield port


@contextlib.asynccontextmanager
async def h2_client(
    start_proxy: StartProxy, port: int, tls: BackendTLS | None, **limits: float
) -> AsyncIterator[H2TestClient]:
    address = await start_proxy(https_config(port, tls, **limits))
    stream = await trio.open_tcp_stream(address.host, address.port)
    async with open_h2_client(stream) as client:
        yield client


async def get(client: H2TestClient) -> StreamState:
    state = await client.request(GET, end_stream=True)
    with trio.fail_after(10):
        return await client.finished(state)


# ---- it works ----


async def test_h2_tunnel_to_a_tls_backend(
    start_proxy: StartProxy, tls_ws_backend: int, certs: dict[str, Path]
) -> None:
    async with h2_client(start_proxy, tls_ws_backend, BackendTLS(ca=certs["ca"])) as client:
        ws = await client.websocket("/chat")
        assert ws.status == 200
        await ws.send("over tls both ways")
        assert await ws.receive() == "over tls both ways"
        big = b"x" * 300_000  # many TLS records each way
        await ws.send(big)
        assert await ws.receive() == big
        # The client's close, then END_STREAM: the backend closes after its Close frame.
        assert await ws.close() == (1000, None)


async def test_http11_tunnel_to_a_tls_backend(
    start_proxy: StartProxy, tls_ws_backend: int, certs: dict[str, Path]
) -> None:
    address = await start_proxy(
        https_config(tls_ws_backend, BackendTLS(ca=certs["ca"], server_name=BACKEND_NAME))
    )

    def roundtrip() -> str:
        with ws_connect(f"ws://127.0.0.1:{address.port}/chat", open_timeout=10) as ws:
            ws.send("hello")
            return str(ws.recv(timeout=10))

    assert await trio.to_thread.run_sync(roundtrip) == "hello"


async def test_client_end_of_stream_keeps_the_backend_answer_coming(
    nursery: trio.Nursery, start_proxy: StartProxy, certs: dict[str, Path]
) -> None:
    """TLS has no half-close: the client's END_STREAM is not passed on as a close, and
    what the backend sends after it still reaches the client, then the backend's end."""

    async def late_answer(conn: BackendConnection) -> None:
        request = await conn.read_upgrade()
        await conn.accept(request)
        assert await conn.receive() == b"last"
        await trio.sleep(0.2)  # the client's END_STREAM has reached the proxy by now
        await conn.stream.send_all(b"late")
        await conn.stream.aclose()

    context = backend_server_context(certs["backend"], certs["backend-key"])
    backend = ScriptedBackend(late_answer, context)
    await nursery.start(backend.run)
    async with h2_client(start_proxy, backend.port, BackendTLS(ca=certs["ca"])) as client:
        ws = await client.websocket("/chat")
        assert ws.status == 200
        await client.send_data(ws.state, b"last", end_stream=True)
        with trio.fail_after(10):
            state = await client.finished(ws.state)
    assert (bytes(state.data), state.reset_code) == (b"late", None)


@pytest.mark.parametrize("server_name", [None, BACKEND_NAME])
async def test_requests_reuse_one_tls_connection(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    certs: dict[str, Path],
    server_name: str | None,
) -> None:
    """ALPN picks http/1.1 (the only one offered); SNI is ``server_name``, none for an IP
    address (127.0.0.1 is then verified against the certificate's IP SANs)."""
    handshakes, alpn = Handshakes(), []
    context = backend_server_context(certs["backend"], certs["backend-key"], handshakes=handshakes)

    async def keepalive(conn: BackendConnection) -> None:
        await serve_keepalive(conn, alpn)

    backend = ScriptedBackend(keepalive, context)
    await nursery.start(backend.run)
    tls = BackendTLS(ca=certs["ca"], server_name=server_name)
    async with h2_client(start_proxy, backend.port, tls) as client:
        for _ in range(2):
            state = await get(client)
            assert (state.status, bytes(state.data)) == (200, b"hi")
    assert len(backend.connections) == 1
    assert handshakes.server_names == [server_name]
    assert alpn == ["http/1.1"]


async def test_an_idle_tls_connection_the_backend_closed_is_not_reused(
    nursery: trio.Nursery, start_proxy: StartProxy, certs: dict[str, Path]
) -> None:
    async def one_request(conn: BackendConnection) -> None:
        with trio.move_on_after(0.3):  # then close the idle connection (close_notify, FIN)
            await serve_keepalive(conn)

    backend = ScriptedBackend(
        one_request, backend_server_context(certs["backend"], certs["backend-key"])
    )
    await nursery.start(backend.run)
    async with h2_client(start_proxy, backend.port, BackendTLS(ca=certs["ca"])) as client:
        assert (await get(client)).status == 200
        with trio.fail_after(10):
            await backend.connections[0].closed.wait()
        await trio.sleep(0.05)  # its close_notify and FIN reach the proxy's socket
        assert (await get(client)).status == 200
    assert len(backend.connections) == 2


# ---- verification failures: 502 and why ----


@pytest.mark.parametrize(
    ("leaf", "tls", "reason"),
    [
        ("backend", {"ca": "other-ca"}, "certificate verify failed: unknown CA"),
        ("backend", None, "certificate verify failed: unknown CA"),  # the system's CAs
        ("backend", {"ca": "ca", "server_name": "other.test"}, "hostname mismatch"),
        ("expired", {"ca": "ca"}, "certificate verify failed: certificate expired"),
        ("self-signed", {"ca": "ca"}, "self-signed certificate"),
    ],
    ids=["wrong-ca", "system-cas", "wrong-name", "expired", "self-signed"],
)
async def test_verification_failure_is_a_502_saying_why(
    nursery: trio.Nursery,
    start_proxy: StartProxy,
    certs: dict[str, Path],
    records: ProxyRecords,
    leaf: str,
    tls: dict[str, str] | None,
    reason: str,
) -> None:
    context = backend_server_context(certs[leaf], certs[f"{leaf}-key"])
    backend = ScriptedBackend(serve_keepalive, context)
    await nursery.start(backend.run)
    backend_tls = None
    if tls is not None:
        backend_tls = BackendTLS(
            ca=certs[tls["ca"]], server_name=tls.get("server_name", BACKEND_NAME)
        )
    async with h2_client(start_proxy, backend.port, backend_tls) as client:
        ws = await client.websocket("/chat")
        assert ws.status == 502
        assert (await get(client)).status == 502
    for event in ("tunnel.refused", "request.closed"):
        (line,) = records.named(event)
        assert line["status"] == 502
        assert (
            f"TLS handshake with backend https://127.0.0.1:{backend.port} failed" in (line["error"])
        )
        assert reason in line["error"]


async def test_tls_handshake_timeout_counts_as_connect_timeout(
    nursery: trio.Nursery, start_proxy: StartProxy, records: ProxyRecords
) -> None:
    async def silent(conn: BackendConnection) -> None:
        await trio.sleep_forever()  # takes the connection, never answers the ClientHello

    backend = ScriptedBackend(silent)
    await nursery.start(backend.run)
    async with h2_client(start_proxy, backend.port, None, connect_timeout_s=0.3) as client:
        ws = await client.websocket("/chat")
        assert ws.status == 504
        assert (await get(client)).status == 504
    (line,) = records.named("tunnel.refused")
    assert "did not accept and complete the TLS handshake within 0.3s" in line["error"]


# ---- mutual TLS ----


@pytest.mark.parametrize("with_client_cert", [True, False])
async def test_mutual_tls(
    start_proxy: StartProxy,
    certs: dict[str, Path],
    ca: trustme.CA,
    records: ProxyRecords,
    with_client_cert: bool,
) -> None:
    """The backend (``websockets`` on the stdlib's ssl, which sends its alert as it fails)
    requires a client certificate from the session CA."""
    context = backend_server_context(certs["backend"], certs["backend-key"], client_ca=ca)
    client_cert = CertificateConfig(certs["client"], certs["client-key"])
    tls = BackendTLS(ca=certs["ca"], client_cert=client_cert if with_client_cert else None)
    with websockets_backend(ssl_context=context) as port:
        async with h2_client(start_proxy, port, tls) as client:
            ws = await client.websocket("/chat")
            if with_client_cert:
                assert ws.status == 200
                await ws.send("mutual")
                assert await ws.receive() == "mutual"
                await ws.close()
                return
    assert ws.status == 502
    (line,) = records.named("tunnel.refused")
    # TLS 1.3: the client's handshake is over before the server checks it; its alert
    # comes with the first read, the upgrade's.
    assert "the backend requires a client certificate" in line["error"]


# ---- verify = false ----


async def test_verify_false_takes_a_self_signed_backend_and_warns_at_startup(
    nursery: trio.Nursery, tmp_path: Path, certs: dict[str, Path], records: ProxyRecords
) -> None:
    context = backend_server_context(certs["self-signed"], certs["self-signed-key"])
    backend = ScriptedBackend(serve_keepalive, context)
    await nursery.start(backend.run)
    config_file = tmp_path / "proxy.toml"
    config_file.write_text(
        f"""\
[[listener]]
bind = "127.0.0.1:0"

[[backend]]
name = "lab"
servers = ["https://127.0.0.1:{backend.port}"]
[backend.tls]
verify = false

[[route]]
path = "/"
backend = "lab"
"""
    )
    bound: BoundAddresses = await nursery.start(serve, load_config(config_file))
    (warning,) = records.named("backend.tls_unverified")
    assert warning["backend"] == "lab"
    stream = await trio.open_tcp_stream("127.0.0.1", bound.listeners[0].port)
    async with open_h2_client(stream) as client:
        state = await get(client)
    assert (state.status, bytes(state.data)) == (200, b"hi")
