"""Server certificates for the SNI tests: trustme leaves written as the config expects them,
and a TLS handshake in memory that reports what the server served."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from h2ws_proxy.config import CertificateConfig, served_names


def write_certificate(
    ca: trustme.CA,
    directory: Path,
    name: str,
    *identities: str,
    key_type: trustme.KeyType = trustme.KeyType.ECDSA,
) -> CertificateConfig:
    """A leaf for ``identities`` (subjectAltName; its common name is ``name``), chain and key
    in ``directory/name.pem`` and ``directory/name.key``."""
    leaf = ca.issue_cert(*identities, common_name=name, key_type=key_type)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return CertificateConfig(cert, key)


@dataclass(frozen=True)
class Served:
    """What one handshake served: the leaf's common name and key type as the client saw
    them, and the names the server's context says it served (``served_names``)."""

    common_name: str
    key_type: str
    names: str


def handshake(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None,
) -> Served:
    """A TLS handshake in memory (no sockets); what the server served."""
    client, server = handshake_in_memory(server_context, client_context, server_hostname)
    return Served(
        common_name=_common_name(client.getpeercert(binary_form=True)),
        key_type=_key_type(client.getpeercert(binary_form=True)),
        names=str(served_names(server.context)),
    )


def handshake_in_memory(
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A finished TLS handshake in memory (no sockets): the client's and the server's ends."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = 0
        for tls, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                tls.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
            peer_in.write(out.read())
        if done == 2:
            break
    else:
        raise AssertionError("the handshake did not finish")
    return client, server


def _common_name(der: bytes | None) -> str:
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    return str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _key_type(der: bytes | None) -> str:
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA"
    return "ECDSA" if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__


def client_context(ca: trustme.CA, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A client that trusts ``ca`` (and checks the server's name unless told not to)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    context.check_hostname = check_hostname
    return context


def self_signed_pems(name: str, *, with_san: bool = True) -> tuple[bytes, bytes]:
    """A self-signed ECDSA certificate for ``name`` (no CA at all), its subjectAltName
    naming it too unless ``with_san`` is false (then only the common name does): cert and
    key PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if with_san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem
