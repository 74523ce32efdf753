"""Reload tests' building blocks: config files written as an operator would, the admin
server's ``POST /reload``, and TLS connections that tell which certificate they got."""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trustme
from cryptography import x509
from cryptography.x509.oid import NameOID

from h2ws_proxy.config import SocketAddress, load_config
from h2ws_proxy.server.reload import Reloader
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.backends import ScriptedBackend


@dataclass
class ConfigFile:
    """A proxy config file, rewritten whole for each reload."""

    path: Path
    #: ``[[route]]`` (path, backend URL) pairs.
    routes: list[tuple[str, str]]
    #: The binds of the ``[[listener]]`` tables, in order.
    listeners: list[str] = field(default_factory=lambda: ["127.0.0.1:0"])
    #: ``cert``/``key`` of every listener (None: cleartext).
    tls: tuple[Path, Path] | None = None
    admin: str | None = "127.0.0.1:0"
    workers: int = 1
    limits: str = "graceful_timeout_s = 5.0\n"

    def write(self) -> None:
        parts = [f"workers = {self.workers}\n"]
        for bind in self.listeners:
            parts.append(f'[[listener]]\nbind = "{bind}"\n')
            if self.tls is not None:
                cert, key = self.tls
                parts.append(f'[listener.tls]\ncert = "{cert}"\nkey = "{key}"\n')
        for path, backend in self.routes:
            parts.append(f'[[route]]\npath = "{path}"\nbackend = "{backend}"\n')
        if self.admin is not None:
            parts.append(f'[admin]\nbind = "{self.admin}"\n')
        parts.append(f"[limits]\n{self.limits}")
        self.path.write_text("\n".join(parts))


async def serve_reloadable(nursery: trio.Nursery, file: ConfigFile) -> BoundAddresses:
    """Write ``file`` and serve it in-process, with a reloader that reads it again."""
    file.write()
    reloader = Reloader(functools.partial(load_config, file.path))
    started = functools.partial(serve, load_config(file.path), reloader=reloader)
    bound: BoundAddresses = await nursery.start(started)
    return bound


async def serve_between(
    nursery: trio.Nursery, directory: Path, first: ScriptedBackend, second: ScriptedBackend
) -> tuple[ConfigFile, BoundAddresses, trio.SocketStream]:
    """Both backends started, a reloadable proxy routing ``/`` to ``first`` (its config file
    in ``directory``, for a reload to move the route), its addresses and a connection to its
    listener."""
    await nursery.start(first.run)
    await nursery.start(second.run)
    file = ConfigFile(directory / "proxy.toml", routes=[("/", first.url)])
    bound = await serve_reloadable(nursery, file)
    address = bound.listeners[0]
    return file, bound, await trio.open_tcp_stream(address.host, address.port)


def issue_certificate(ca: trustme.CA, directory: Path, common_name: str) -> tuple[Path, Path]:
    """A leaf for 127.0.0.1 and proxy.test, named ``common_name``, written at
    ``directory/proxy.pem`` and ``.key`` (the same paths each time: a renewal)."""
    leaf = ca.issue_cert("127.0.0.1", "proxy.test", common_name=common_name)
    cert, key = directory / "proxy.pem", directory / "proxy.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


async def post_reload(
    admin: SocketAddress, *, method: str = "POST", body: bytes = b""
) -> tuple[int, str]:
    """``<method> /reload`` on the admin server: (status, body)."""
    stream = await trio.open_tcp_stream(admin.host, admin.port)
    async with stream:
        head = (
            f"{method} /reload HTTP/1.1\r\nhost: admin\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        await stream.send_all(head + body)
        answer = b""
        with trio.fail_after(60):
            while data := await stream.receive_some(65536):
                answer += data
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, content.decode()


async def tls_connect(
    address: SocketAddress, ca: trustme.CA
) -> tuple[trio.SSLStream[trio.SocketStream], str]:
    """An h2 TLS connection to the proxy, and the common name of the certificate it got."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.set_alpn_protocols(["h2"])
    tcp = await trio.open_tcp_stream(address.host, address.port)
    stream = trio.SSLStream(tcp, context, server_hostname="proxy.test")
    await stream.do_handshake()
    der = stream.getpeercert(binary_form=True)
    assert der is not None
    return stream, common_name(der)


def common_name(der: bytes) -> str:
    certificate = x509.load_der_x509_certificate(der)
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
