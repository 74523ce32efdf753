"""What a backend server is spoken to with: ``h2c://`` URLs and a group's ``protocol``
(HTTP/2 backends, RFC 8441 on the backend side)."""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ws_proxy.config import load_config, parse_backend
from tests.unit.test_config import load_error, write

LISTENER = '[[listener]]\nbind = "127.0.0.1:8080"\n\n'
ROUTE = '\n[[route]]\npath = "/"\nbackend = "app"\n'


def test_h2c_is_cleartext_http2_by_prior_knowledge() -> None:
    address = parse_backend("h2c://127.0.0.1:9000")
    assert (address.scheme, address.protocol, address.speaks_h2) == ("http", "h2", True)
    assert str(address) == "h2c://127.0.0.1:9000"
    assert address.host_header == "127.0.0.1:9000"
    assert parse_backend("h2c://[::1]").port == 80
    plain = parse_backend("http://127.0.0.1:9000")
    assert (plain.protocol, plain.speaks_h2) == ("http/1.1", False)
    assert plain != address


@pytest.mark.parametrize("protocol", ["h2", "auto", "http/1.1"])
def test_a_group_protocol_applies_to_its_https_servers(tmp_path: Path, protocol: str) -> None:
    text = (
        LISTENER
        + '[[backend]]\nname = "app"\nservers = ["https://127.0.0.1:9443", "h2c://127.0.0.1:9001",'
        + ' "http://127.0.0.1:9002"]\n'
        + f'protocol = "{protocol}"\n'
        + ROUTE
    )
    secure, cleartext, plain = load_config(write(tmp_path, text)).routes[0].backend.servers
    assert secure.protocol == protocol
    assert str(secure) == "https://127.0.0.1:9443"
    assert cleartext.protocol == "h2"  # h2c:// whatever the group says
    assert plain.protocol == "http/1.1"


@pytest.mark.parametrize(
    ("servers", "protocol", "message"),
    [
        (
            '["https://127.0.0.1:9443"]',
            '"h3"',
            ':7: backend[0].protocol: must be one of "http/1.1", "h2", "auto", not "h3"',
        ),
        (
            '["https://127.0.0.1:9443"]',
            "2",
            ':7: backend[0].protocol: must be one of "http/1.1", "h2", "auto", not an integer',
        ),
        (
            '["http://127.0.0.1:9001"]',
            '"h2"',
            ":7: backend[0].protocol: applies to https:// servers, and this group has none; "
            "for HTTP/2 in cleartext write the servers as h2c://host:port",
        ),
    ],
    ids=["unknown", "not-a-string", "no-https-server"],
)
def test_bad_protocols_are_one_line_errors(
    tmp_path: Path, servers: str, protocol: str, message: str
) -> None:
    text = LISTENER + f'[[backend]]\nname = "app"\nservers = {servers}\nprotocol = {protocol}\n'
    assert load_error(tmp_path, text + ROUTE) == message
