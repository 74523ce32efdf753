"""Several certificates on one listener: the names each covers, which one SNI picks (TLS
handshakes in memory, no sockets), and every certificate problem as a located config error
(at load, so ``--check`` reports it too)."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from h2ws_proxy.config import (
    CertificateConfig,
    CertificateNames,
    TLSConfig,
    build_server_ssl_context,
    load_config,
    read_certificate,
)
from h2ws_proxy.config.certificates import host_of_authority
from h2ws_proxy.errors import ConfigError, MisdirectedRequest
from h2ws_proxy.http.request_head import parse_h2_request_head
from h2ws_proxy.http2.admission import check_authority
from tests.helpers.certificates import (
    client_context,
    handshake,
    self_signed_pems,
    write_certificate,
)

# --- the names a certificate covers -------------------------------------------------------

NAMES = CertificateNames.of(
    ["Chat.Example.Test.", "*.api.example.test", "a*.bad.test", "*", "*.test.*"],
    [ipaddress.ip_address("10.1.2.3"), ipaddress.ip_address("::1")],
)


@pytest.mark.parametrize(
    ("host", "covered"),
    [
        ("chat.example.test", True),
        ("CHAT.example.TEST.", True),  # case and a trailing dot do not matter
        ("x.api.example.test", True),  # a wildcard: one whole label
        ("X-1.API.example.test", True),
        ("api.example.test", False),  # not the parent itself
        ("a.b.api.example.test", False),  # nor two labels
        (".api.example.test", False),  # nor an empty one
        ("example.test", False),
        ("ab.bad.test", False),  # partial wildcards cover nothing
        ("anything", False),  # nor does a lone *
        ("10.1.2.3", True),  # IP addresses from iPAddress entries
        ("::1", True),
        ("[::1]", True),
        ("10.1.2.4", False),
        ("0:0:0:0:0:0:0:1", True),  # IPv6 compared as addresses, not text
    ],
)
def test_names_a_certificate_covers(host: str, covered: bool) -> None:
    assert NAMES.covers(host) is covered


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        (b"chat.example.test", "chat.example.test"),
        (b"Chat.Example.Test.:8443", "chat.example.test"),
        (b"chat.example.test:", "chat.example.test"),
        (b"127.0.0.1:443", "127.0.0.1"),
        (b"[::1]:8443", "::1"),
        (b"[::1]", "::1"),
    ],
)
def test_host_of_authority(authority: bytes, host: str) -> None:
    assert host_of_authority(authority) == host


def test_names_come_from_the_alt_names_else_the_common_name(ca: trustme.CA, tmp_path: Path) -> None:
    with_san = read_certificate(write_certificate(ca, tmp_path, "ignored.test", "a.test"))
    assert not with_san.names.covers("ignored.test")  # RFC 6125 §6.4.4
    assert with_san.names.covers("a.test")
    # trustme always writes a subjectAltName: build a CN-only certificate by hand.
    assert read_certificate(_cn_only(tmp_path, "cn-only.test")).names.covers("cn-only.test")


def _cn_only(tmp_path: Path, name: str) -> CertificateConfig:
    cert_pem, key_pem = self_signed_pems(name, with_san=False)
    cert, key_path = tmp_path / "cn.pem", tmp_path / "cn.key"
    cert.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return CertificateConfig(cert, key_path)


# --- which certificate a handshake gets ---------------------------------------------------


@pytest.fixture
def two_certificates(ca: trustme.CA, tmp_path: Path) -> TLSConfig:
    """chat.example.test first (the default), then *.api.example.test and an IP address."""
    chat = write_certificate(ca, tmp_path, "chat", "chat.example.test")
    api = write_certificate(ca, tmp_path, "api", "*.api.example.test", "10.1.2.3")
    return TLSConfig(certificates=(chat, api))


@pytest.mark.parametrize(
    ("server_name", "served", "covered"),
    [
        ("chat.example.test", "chat", True),
        ("x.api.example.test", "api", True),
        ("Y.Api.Example.Test", "api", True),
        (None, "chat", False),  # no SNI: the first
        ("unknown.example.test", "chat", False),  # no certificate covers it: the first
        ("api.example.test", "chat", False),  # the wildcard does not cover its parent
    ],
)
def test_sni_picks_the_certificate_covering_the_name(
    ca: trustme.CA,
    two_certificates: TLSConfig,
    server_name: str | None,
    served: str,
    covered: bool,
) -> None:
    server = build_server_ssl_context(two_certificates)
    result = handshake(server, client_context(ca, check_hostname=covered), server_name)
    assert result.common_name == served
    # What the connection knows it served (the 421 check): the same certificate.
    assert result.names == (
        "chat.example.test" if served == "chat" else "*.api.example.test, 10.1.2.3"
    )


def test_an_exact_name_beats_a_wildcard_and_the_first_beats_a_later_one(
    ca: trustme.CA, tmp_path: Path
) -> None:
    wildcard = write_certificate(ca, tmp_path, "wildcard", "*.example.test")
    exact = write_certificate(ca, tmp_path, "exact", "chat.example.test", "other.test")
    later = write_certificate(ca, tmp_path, "later", "other.test")
    server = build_server_ssl_context(TLSConfig(certificates=(wildcard, exact, later)))
    for name, served in [
        ("chat.example.test", "exact"),
        ("news.example.test", "wildcard"),
        ("other.test", "exact"),
    ]:
        assert handshake(server, client_context(ca), name).common_name == served


def test_rsa_and_ecdsa_for_the_same_names_are_chosen_by_the_client(
    ca: trustme.CA, tmp_path: Path
) -> None:
    ecdsa = write_certificate(ca, tmp_path, "ecdsa", "chat.example.test")
    rsa = write_certificate(ca, tmp_path, "rsa", "chat.example.test", key_type=trustme.KeyType.RSA)
    other = write_certificate(ca, tmp_path, "other", "other.test")
    server = build_server_ssl_context(TLSConfig(certificates=(other, rsa, ecdsa)))
    for suites, key_type in [("ECDHE+aRSA+AESGCM", "RSA"), ("ECDHE+aECDSA+AESGCM", "ECDSA")]:
        client = client_context(ca)
        client.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2 suites name the key type
        client.set_ciphers(suites)
        served = handshake(server, client, "chat.example.test")
        assert (served.common_name, served.key_type) == (key_type.lower(), key_type)
    # TLS 1.3 offers both signature kinds; the openssl s_client test limits them.
    assert handshake(server, client_context(ca), "chat.example.test").common_name in (
        "rsa",
        "ecdsa",
    )


def test_one_certificate_keeps_its_context_without_an_sni_callback(
    ca: trustme.CA, tmp_path: Path
) -> None:
    only = write_certificate(ca, tmp_path, "only", "chat.example.test")
    server = build_server_ssl_context(TLSConfig(only.cert, only.key))
    assert server.sni_callback is None
    assert handshake(server, client_context(ca), "chat.example.test").common_name == "only"


# --- problems, located at load ------------------------------------------------------------

TWO_CERTIFICATES = """\
[[listener]]
bind = "127.0.0.1:8443"
[[listener.tls.certificate]]
cert = "chat.pem"
key = "chat.key"
[[listener.tls.certificate]]
cert = "api.pem"
key = "api.key"

[[route]]
path = "/"
backend = "http://127.0.0.1:9000"
"""


def load_error(tmp_path: Path, text: str = TWO_CERTIFICATES) -> str:
    """The ConfigError of loading ``text`` from tmp_path/proxy.toml, without the file name."""
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.message
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message.removeprefix(str(path))


@pytest.fixture
def written(ca: trustme.CA, tmp_path: Path) -> tuple[CertificateConfig, CertificateConfig]:
    chat = write_certificate(ca, tmp_path, "chat", "chat.example.test")
    api = write_certificate(ca, tmp_path, "api", "*.api.example.test")
    return chat, api


def test_two_certificates_load(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    (tmp_path / "proxy.toml").write_text(TWO_CERTIFICATES)
    tls = load_config(tmp_path / "proxy.toml").listeners[0].tls
    assert tls == TLSConfig(certificates=written)


def test_junk_certificate_pem(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    written[1].cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    assert load_error(tmp_path) == (
        f":7: listener[0].tls.certificate[1].cert: {written[1].cert} holds no PEM certificate "
        "(Unable to load PEM file); give the certificate chain as PEM "
        "(-----BEGIN CERTIFICATE-----), leaf first"
    )


def test_junk_key_pem(tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]) -> None:
    written[0].key.write_text("not a key\n")
    assert load_error(tmp_path) == (
        f":5: listener[0].tls.certificate[0].key: {written[0].key} holds no usable PEM private "
        "key (Unable to load PEM file); give the certificate's private key as PEM "
        "(-----BEGIN PRIVATE KEY-----)"
    )


def test_a_certificate_given_as_the_key(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    written[0].key.write_bytes(written[0].cert.read_bytes())
    assert "certificate[0].key: " in load_error(tmp_path)
    assert "holds no usable PEM private key" in load_error(tmp_path)


def test_encrypted_key(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    key = serialization.load_pem_private_key(written[1].key.read_bytes(), password=None)
    written[1].key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert load_error(tmp_path) == (
        f":8: listener[0].tls.certificate[1].key: {written[1].key}: the private key is "
        "encrypted; give an unencrypted key (the server cannot ask for a password), e.g. "
        "openssl pkey -in encrypted.pem -out key.pem"
    )


def test_key_of_another_certificate(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    written[1].key.write_bytes(written[0].key.read_bytes())
    assert load_error(tmp_path) == (
        f":8: listener[0].tls.certificate[1].key: {written[1].key} is not the private key of "
        f"the certificate {written[1].cert} (the first certificate of the file, the leaf); "
        "give the leaf's key, or put the leaf first in the chain"
    )


def test_the_default_certificate_is_located_at_listener_tls(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    text = TWO_CERTIFICATES.replace(
        '[[listener.tls.certificate]]\ncert = "chat.pem"', '[listener.tls]\ncert = "chat.pem"'
    )
    written[1].key.write_bytes(written[0].key.read_bytes())
    assert load_error(tmp_path, text).startswith(":8: listener[0].tls.certificate[0].key: ")
    written[0].key.write_text("junk\n")
    assert load_error(tmp_path, text).startswith(":5: listener[0].tls.key: ")


def test_two_certificates_of_one_key_type_for_the_same_names(
    ca: trustme.CA, tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    write_certificate(ca, tmp_path, "api", "chat.example.test")  # overwrites api.pem/.key
    assert load_error(tmp_path) == (
        f":7: listener[0].tls.certificate[1].cert: {written[1].cert} covers the same names "
        f"(chat.example.test) with the same kind of key (ECDSA) as {written[0].cert}; give "
        "one of them (one RSA and one ECDSA certificate for the same names is fine)"
    )
    write_certificate(ca, tmp_path, "api", "chat.example.test", key_type=trustme.KeyType.RSA)
    (tmp_path / "proxy.toml").write_text(TWO_CERTIFICATES)
    assert load_config(tmp_path / "proxy.toml").listeners[0].tls is not None


def test_a_key_spoiled_after_load_is_refused_at_start(
    tmp_path: Path, written: tuple[CertificateConfig, CertificateConfig]
) -> None:
    written[0].key.write_text("gone bad after the config was loaded\n")
    with pytest.raises(ConfigError, match=r"holds no usable PEM private key"):
        build_server_ssl_context(TLSConfig(certificates=written))


# --- the 421 check on a request head --------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "misdirected"),
    [
        ([(b":authority", b"chat.example.test:8443")], False),
        ([(b":authority", b"x.api.example.test")], False),
        ([(b":authority", b"[::1]:8443")], False),
        ([(b":authority", b"other.test")], True),
        ([(b"host", b"other.test")], True),  # no :authority: the Host field is the host
        ([(b"host", b"CHAT.example.test")], False),
        ([], False),  # no host at all: nothing to check (routing decides)
    ],
)
def test_check_authority(headers: list[tuple[bytes, bytes]], misdirected: bool) -> None:
    head = parse_h2_request_head(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), *headers]
    )
    if misdirected:
        with pytest.raises(MisdirectedRequest) as info:
            check_authority(head, NAMES)
        assert info.value.status_hint == 421
    else:
        check_authority(head, NAMES)
    check_authority(head, None)  # without TLS: never


def test_plain_connect_names_a_tunnel_target_not_this_origin() -> None:
    head = parse_h2_request_head([(b":method", b"CONNECT"), (b":authority", b"other.test:443")])
    check_authority(head, NAMES)  # refused later as plain CONNECT (501), not as 421
