"""TLS backends for tests: certificates (trustme's, an expired one, a self-signed one), the
backends' server contexts, and proxy configs that reach them over ``https://``."""

from __future__ import annotations

import dataclasses
import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import h11
import trustme

from h2ws_proxy.config import (
    BackendAddress,
    BackendGroup,
    BackendTLS,
    Limits,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
)
from tests.helpers.backends import BackendConnection
from tests.helpers.certificates import self_signed_pems as self_signed_for

#: The names the backends' certificates hold (besides 127.0.0.1, where the tests reach them).
BACKEND_NAME = "backend.test"


def write_leaf(leaf: trustme.LeafCert, directory: Path, stem: str) -> tuple[Path, Path]:
    """``leaf``'s chain and key as PEM files ``<stem>.pem`` and ``<stem>-key.pem``."""
    cert, key = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def expired_leaf(ca: trustme.CA) -> trustme.LeafCert:
    """A certificate from ``ca`` for the backend's names that expired yesterday."""
    now = datetime.datetime.now(datetime.UTC)
    return ca.issue_cert(
        BACKEND_NAME,
        "127.0.0.1",
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )


def self_signed_pems() -> tuple[bytes, bytes]:
    """A self-signed certificate for the backend's names (no CA at all): cert, key PEM."""
    return self_signed_for(BACKEND_NAME)


@dataclass
class Handshakes:
    """What a TLS backend saw of each handshake: the SNI sent (None: none)."""

    server_names: list[str | None] = field(default_factory=list)


def backend_server_context(
    cert: Path,
    key: Path,
    *,
    client_ca: trustme.CA | None = None,
    handshakes: Handshakes | None = None,
) -> ssl.SSLContext:
    """A backend's server context: ``client_ca`` makes it require a client certificate
    from that CA; ``handshakes`` records the SNI of each handshake. ALPN offers h2 too, so
    that a test sees the proxy pick http/1.1 by offering nothing else."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2", "http/1.1"])
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    if handshakes is not None:

        def record(_socket: object, server_name: str | None, _context: object) -> None:
            handshakes.server_names.append(server_name)

        context.sni_callback = record  # type: ignore[assignment]
    return context


def https_config(port: int, tls: BackendTLS | None, **limits: float) -> ProxyConfig:
    """A cleartext listener on port 0 whose one route goes to https://127.0.0.1:``port``."""
    server = BackendAddress("https", "127.0.0.1", port, tls=tls)
    return ProxyConfig(
        listeners=(ListenerConfig(bind=SocketAddress("127.0.0.1", 0)),),
        routes=(RouteConfig(path="/", backend=BackendGroup.of(server)),),
        limits=dataclasses.replace(Limits(), **limits),  # type: ignore[arg-type]
    )


async def serve_keepalive(conn: BackendConnection, alpn: list[str | None] | None = None) -> None:
    """Answer every request on the connection with 200 ``hi`` (keep-alive) until EOF;
    ``alpn`` gets the protocol ALPN chose for the connection."""
    h1 = h11.Connection(h11.SERVER)
    while True:
        event = h1.next_event()
        if event is h11.NEED_DATA:
            data = await conn.receive()
            if alpn is not None and len(alpn) < 1:
                alpn.append(conn.stream.selected_alpn_protocol())  # type: ignore[union-attr]
            h1.receive_data(data)
            continue
        if isinstance(event, h11.ConnectionClosed):
            return
        if isinstance(event, h11.EndOfMessage):
            answer = h11.Response(status_code=200, headers=[(b"content-length", b"2")])
            await conn.stream.send_all(
                h1.send(answer) + h1.send(h11.Data(data=b"hi")) + h1.send(h11.EndOfMessage())
            )
            h1.start_next_cycle()
