"""Several certificates on one TLS listener, over real sockets: the certificate each server
name gets (Python's ssl and ``openssl s_client``), RSA or ECDSA by the client's signature
algorithms, and 421 for an HTTP/2 request whose host the connection's certificate does not
cover (RFC 9110 §15.5.20), the connection staying up."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import h11
import pytest
import trio
import trustme

from h2ws_proxy.config import SocketAddress, TLSConfig
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.certificates import client_context, write_certificate
from tests.helpers.h2_client import H2TestClient, StreamState, open_h2_client
from tests.helpers.records import capture_proxy_records
from tests.helpers.setup import make_config

pytestmark = pytest.mark.socket

Header = tuple[bytes, bytes]


@pytest.fixture
def certificates(ca: trustme.CA, tmp_path: Path) -> TLSConfig:
    """chat.example.test (ECDSA, the default), *.api.example.test with 127.0.0.1, and
    chat.example.test again with an RSA key."""
    return TLSConfig(
        certificates=(
            write_certificate(ca, tmp_path, "chat", "chat.example.test"),
            write_certificate(ca, tmp_path, "api", "*.api.example.test", "127.0.0.1"),
            write_certificate(
                ca, tmp_path, "chat-rsa", "chat.example.test", key_type=trustme.KeyType.RSA
            ),
        )
    )


@pytest.fixture
async def heads(
    nursery: trio.Nursery, start_proxy: StartProxy, certificates: TLSConfig
) -> tuple[SocketAddress, list[h11.Request]]:
    """The proxy with those certificates, before a backend that records each request head:
    204 to a request (and closes), 101 to an upgrade (and stays)."""
    received: list[h11.Request] = []

    async def behaviour(connection: BackendConnection) -> None:
        request = await connection.read_upgrade()
        received.append(request)
        if any(name.lower() == b"upgrade" for name, _ in request.headers):
            await connection.accept(request)
            await trio.sleep_forever()
        await connection.stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    backend = ScriptedBackend(behaviour)
    await nursery.start(backend.run)
    return await start_proxy(make_config(("/", backend.url), tls=certificates)), received


# --- which certificate ---------------------------------------------------------------------


def _common_name(address: SocketAddress, ca: trustme.CA, server_name: str | None) -> str:
    """The common name of the certificate a Python ssl client gets for ``server_name``."""
    context = client_context(ca, check_hostname=server_name is not None)
    raw = socket.create_connection((address.host, address.port), timeout=10)
    with context.wrap_socket(raw, server_hostname=server_name) as tls:
        certificate = tls.getpeercert()
    assert certificate is not None
    subject = dict(item[0] for item in certificate["subject"])
    return str(subject["commonName"])


async def test_python_ssl_gets_the_certificate_of_each_server_name(
    heads: tuple[SocketAddress, list[h11.Request]], ca: trustme.CA
) -> None:
    address, _ = heads
    for server_name, served in [
        ("chat.example.test", "chat"),
        ("x.api.example.test", "api"),
        ("Other.API.example.test", "api"),
        (None, "chat"),  # no SNI: the first
    ]:
        got = await trio.to_thread.run_sync(_common_name, address, ca, server_name)
        assert got == served, server_name


def _s_client(address: SocketAddress, ca_file: Path, *options: str) -> tuple[str, str]:
    """``openssl s_client`` against the proxy, verifying the chain: the leaf's subject
    line and the peer's signature type."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl; .ci/run does)")
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"{address.host}:{address.port}",
         "-CAfile", str(ca_file), "-verify_return_error", *options],
        input=b"", capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    output = result.stdout.decode("utf-8", "replace")
    assert result.returncode == 0, output + result.stderr.decode("utf-8", "replace")
    subject = re.search(r"^subject=.*CN ?= ?([\w.-]+)", output, re.MULTILINE)
    signature = re.search(r"^Peer signature type: (\S+)", output, re.MULTILINE)
    assert subject is not None, output
    assert signature is not None, output
    return subject.group(1), signature.group(1)


async def test_openssl_s_client_gets_each_names_certificate_and_key_type(
    heads: tuple[SocketAddress, list[h11.Request]], ca_file: Path
) -> None:
    address, _ = heads
    ecdsa_only = ("-sigalgs", "ecdsa_secp256r1_sha256")
    rsa_only = ("-sigalgs", "rsa_pss_rsae_sha256:rsa_pkcs1_sha256")
    for options, served in [
        (("-servername", "x.api.example.test"), ("api", "ECDSA")),
        (("-servername", "chat.example.test", *ecdsa_only), ("chat", "ECDSA")),
        (("-servername", "chat.example.test", *rsa_only), ("chat-rsa", "RSA-PSS")),
        (("-noservername", *ecdsa_only), ("chat", "ECDSA")),  # no SNI: the first
        (("-noservername", *rsa_only), ("chat-rsa", "RSA-PSS")),  # ... which has both
        (("-servername", "unknown.example.test", *ecdsa_only), ("chat", "ECDSA")),
    ]:
        got = await trio.to_thread.run_sync(_s_client, address, ca_file, *options)
        assert got == served, options


# --- 421 -------------------------------------------------------------------------------------


async def _h2_connection(
    address: SocketAddress, ca: trustme.CA, server_name: str
) -> trio.SSLStream[trio.SocketStream]:
    context = client_context(ca)
    context.set_alpn_protocols(["h2"])
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, context, server_hostname=server_name)
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == "h2"
    return stream


async def _get(client: H2TestClient, authority: str) -> StreamState:
    headers: list[Header] = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/"),
        (b":authority", authority.encode()),
    ]
    state = await client.request(headers, end_stream=True)
    with trio.fail_after(10):
        return await client.finished(state)


async def test_http2_request_for_a_host_the_certificate_does_not_cover_gets_421(
    heads: tuple[SocketAddress, list[h11.Request]], ca: trustme.CA
) -> None:
    address, received = heads
    port = address.port
    with capture_proxy_records() as records:
        stream = await _h2_connection(address, ca, "chat.example.test")
        async with open_h2_client(stream) as client:
            assert (await _get(client, f"chat.example.test:{port}")).status == 204
            # Another certificate's host, and one no certificate covers: misdirected.
            misdirected = await _get(client, f"x.api.example.test:{port}")
            assert misdirected.status == 421
            assert misdirected.reset_code is None  # an answer, not a reset
            assert (await _get(client, "elsewhere.test")).status == 421
            assert (await _get(client, f"127.0.0.1:{port}")).status == 421
            tunnel = await client.websocket("/ws", authority="x.api.example.test", scheme="https")
            assert tunnel.status == 421
            # Case, a trailing dot and no port: the same host. The connection is still up.
            assert (await _get(client, "CHAT.Example.Test.")).status == 204
    assert [head.target for head in received] == [b"/", b"/"]
    assert {dict(head.headers)[b"host"] for head in received} == {
        f"chat.example.test:{port}".encode(),
        b"CHAT.Example.Test.",
    }
    refused = records.named("h2.request_refused")
    assert [str(fields.get("status")) for fields in refused] == ["421"] * 4, refused


async def test_421_follows_the_certificate_sni_chose(
    heads: tuple[SocketAddress, list[h11.Request]], ca: trustme.CA
) -> None:
    address, _ = heads
    stream = await _h2_connection(address, ca, "x.api.example.test")
    async with open_h2_client(stream) as client:
        assert (await _get(client, f"x.api.example.test:{address.port}")).status == 204
        assert (await _get(client, f"y.api.example.test:{address.port}")).status == 204
        assert (await _get(client, f"127.0.0.1:{address.port}")).status == 204  # its IP
        assert (await _get(client, f"chat.example.test:{address.port}")).status == 421
        assert (await _get(client, f"a.b.api.example.test:{address.port}")).status == 421
        tunnel = await client.websocket("/ws", authority="z.api.example.test", scheme="https")
        assert tunnel.status == 200


async def test_with_one_certificate_every_host_is_served(
    nursery: trio.Nursery, start_proxy: StartProxy, ca: trustme.CA, tmp_path: Path
) -> None:
    """No other connection to send them to: hosts the one certificate does not cover are
    served as they come (a client that skipped verification, an IP address)."""

    async def behaviour(connection: BackendConnection) -> None:
        await connection.read_upgrade()
        await connection.stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    backend = ScriptedBackend(behaviour)
    await nursery.start(backend.run)
    one = TLSConfig(certificates=(write_certificate(ca, tmp_path, "one", "chat.example.test"),))
    address = await start_proxy(make_config(("/", backend.url), tls=one))
    stream = await _h2_connection(address, ca, "chat.example.test")
    async with open_h2_client(stream) as client:
        assert (await _get(client, "elsewhere.test")).status == 204
        assert (await _get(client, f"127.0.0.1:{address.port}")).status == 204


async def test_http11_over_tls_is_not_checked(
    heads: tuple[SocketAddress, list[h11.Request]], ca: trustme.CA
) -> None:
    """Only HTTP/2 coalesces connections across hosts; HTTP/1.1 requests are proxied."""
    address, received = heads
    context = client_context(ca)
    context.set_alpn_protocols(["http/1.1"])
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, context, server_hostname="chat.example.test")
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target="/", headers=[(b"host", b"x.api.example.test")])
    with trio.fail_after(10):
        await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
        while (event := connection.next_event()) is h11.NEED_DATA:
            connection.receive_data(bytes(await stream.receive_some(65536)))
    await trio.aclose_forcefully(stream)
    assert isinstance(event, h11.Response)
    assert event.status_code == 204
    assert dict(received[0].headers)[b"host"] == b"x.api.example.test"
