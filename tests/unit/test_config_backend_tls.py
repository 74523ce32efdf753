"""``[backend.tls]``: what it parses to, the client context it builds, and each error
(file, key path, line), at load and through ``--check``."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme

from h2ws_proxy.cli import main
from h2ws_proxy.config import (
    BackendAddress,
    BackendTLS,
    CertificateConfig,
    build_backend_ssl_context,
    load_config,
)
from tests.unit.test_config import load_error, write

GROUP = """\
[[listener]]
bind = "127.0.0.1:8080"

[[backend]]
name = "app"
servers = ["https://app.internal:8443", "http://127.0.0.1:9000"]
[backend.tls]
"""
ROUTE = """
[[route]]
path = "/"
backend = "app"
"""


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    """A CA, a client certificate and key from it, and a key that matches neither."""
    ca = trustme.CA()
    client = ca.issue_cert("proxy.internal")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "client", "client-key", "other")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["client"]))
    client.private_key_pem.write_to_path(str(files["client-key"]))
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(files["other"]))
    return files


def test_every_key_is_read(tmp_path: Path, pems: dict[str, Path]) -> None:
    text = GROUP + (
        'ca = "ca.pem"\nserver_name = "app.example"\ncert = "client.pem"\n'
        'key = "client-key.pem"\nverify = true\n'
    )
    (group,) = load_config(write(tmp_path, text + ROUTE)).backends
    tls = BackendTLS(
        ca=pems["ca"],
        server_name="app.example",
        client_cert=CertificateConfig(pems["client"], pems["client-key"]),
    )
    assert group.servers == (
        BackendAddress("https", "app.internal", 8443, tls=tls),
        BackendAddress("http", "127.0.0.1", 9000),  # the settings apply to https:// only
    )


def test_a_route_url_has_no_settings_system_cas(tmp_path: Path) -> None:
    text = '[[listener]]\nbind = "127.0.0.1:8080"\n[[route]]\npath = "/"\n'
    text += 'backend = "https://app.internal"\n'
    (server,) = load_config(write(tmp_path, text)).routes[0].backend.servers
    assert server == BackendAddress("https", "app.internal", 443, tls=None)


def test_tls_needs_an_https_server(tmp_path: Path) -> None:
    text = GROUP.replace('"https://app.internal:8443", ', "") + "verify = true\n" + ROUTE
    assert load_error(tmp_path, text) == (
        ":7: backend[0].tls: applies to https:// servers, and this group has none"
    )


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ('cert = "client.pem"\n', ": backend[0].tls.key: missing; mutual TLS needs both"),
        ('key = "client-key.pem"\n', ": backend[0].tls.cert: missing; mutual TLS needs both"),
        ('ca = "nope.pem"\n', ":8: backend[0].tls.ca: file not found: "),
        ('server_name = "a b"\n', ":8: backend[0].tls.server_name: must be a host name"),
        ('verify = "no"\n', ":8: backend[0].tls.verify: must be true or false"),
        ('sni = "x"\n', ":8: backend[0].tls.sni: unknown key"),
    ],
)
def test_parse_errors(tmp_path: Path, pems: dict[str, Path], written: str, message: str) -> None:
    assert load_error(tmp_path, GROUP + written + ROUTE).startswith(message)


def test_unreadable_ca(
    tmp_path: Path, pems: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Permission bits cannot make a file unreadable to root (CI runs as root): the check
    # asks os.access, so the test makes it say no for this one file.
    real_access = os.access
    unreadable = str(pems["ca"])
    monkeypatch.setattr(
        os, "access", lambda path, mode: str(path) != unreadable and real_access(path, mode)
    )
    message = load_error(tmp_path, GROUP + 'ca = "ca.pem"\n' + ROUTE)
    assert message == f":8: backend[0].tls.ca: {pems['ca']} is not readable; check its permissions"


def test_a_ca_file_without_certificates_is_an_error_at_load(
    tmp_path: Path, pems: dict[str, Path]
) -> None:
    pems["ca"].write_text("not a certificate\n")
    message = load_error(tmp_path, GROUP + 'ca = "ca.pem"\n' + ROUTE)
    assert message.startswith(
        f":8: backend[0].tls.ca: {pems['ca']}: cannot load the CA certificates ("
    )
    assert message.endswith("); give PEM certificates")


def test_a_key_that_does_not_match_is_an_error_at_load(
    tmp_path: Path, pems: dict[str, Path]
) -> None:
    text = GROUP + 'cert = "client.pem"\nkey = "other.pem"\n' + ROUTE
    message = load_error(tmp_path, text)
    assert message.startswith(
        f":8: backend[0].tls.cert: {pems['client']}, {pems['other']}: "
        "cannot load the client certificate and key ("
    )
    assert "KEY_VALUES_MISMATCH" in message


def test_check_reports_a_context_that_does_not_build(
    tmp_path: Path, pems: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pems["ca"].write_text("not a certificate\n")
    path = write(tmp_path, GROUP + 'ca = "ca.pem"\n' + ROUTE)
    assert main(["--config", str(path), "--check"]) == 2
    assert "backend[0].tls.ca" in capsys.readouterr().err


def test_check_shows_a_group_that_does_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GROUP + "verify = false\n" + ROUTE)
    assert main(["--config", str(path), "--check"]) == 0
    assert "backend app: verify = false (its servers' certificates are not checked)" in (
        capsys.readouterr().out
    )


def test_the_context(pems: dict[str, Path]) -> None:
    default = build_backend_ssl_context(None)
    assert (default.verify_mode, default.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert default.minimum_version == ssl.TLSVersion.TLSv1_2
    assert default.cert_store_stats()["x509_ca"] == len(
        ssl.create_default_context().get_ca_certs()
    )  # the system's CAs
    own = build_backend_ssl_context(BackendTLS(ca=pems["ca"]))
    assert own.cert_store_stats()["x509_ca"] == 1  # that file only
    unverified = build_backend_ssl_context(BackendTLS(verify=False))
    assert (unverified.verify_mode, unverified.check_hostname) == (ssl.CERT_NONE, False)


def test_example_toml_backend_tls_block_works_when_uncommented(
    tmp_path: Path, pems: dict[str, Path]
) -> None:
    example = (Path(__file__).parents[2] / "config" / "example.toml").read_text()
    tls_section = example.index("# --- TLS to a backend")
    end = example.index("# --- HTTP/2 backends")
    block = example[example.index("# [[backend]]", tls_section) : end]
    lines = []
    for line in block.splitlines():  # "# # x" is a comment of the block: keep it one
        lines.append(line[2:] if line.startswith("# ") else line.removeprefix("#"))
    text = '[[listener]]\nbind = "127.0.0.1:8080"\n' + "\n".join(lines)
    for name, pem in [
        ("backend-ca.pem", "ca"),
        ("proxy-client.pem", "client"),
        ("proxy-client-key.pem", "client-key"),
    ]:
        text = text.replace(f"/etc/h2ws-proxy/{name}", str(pems[pem]))
    (group,) = load_config(write(tmp_path, text)).backends
    assert group.name == "internal-tls"
    assert group.servers[0].tls == BackendTLS(
        ca=pems["ca"],
        server_name="app.internal",
        client_cert=CertificateConfig(pems["client"], pems["client-key"]),
    )
