"""config/routes.py: the route keys of issue 15 (x_forwarded "append", normalize_path,
strip_fields), what they parse to, and each error message (file, key path, line, hint)."""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ws_proxy.cli import describe
from h2ws_proxy.config import load_config
from h2ws_proxy.config.routes import HOP_BY_HOP_NAMES
from h2ws_proxy.http.fields import HOP_BY_HOP
from tests.unit.test_config import MINIMAL, load_error, write


def test_defaults(tmp_path: Path) -> None:
    (route,) = load_config(write(tmp_path, MINIMAL)).routes
    assert route.x_forwarded is True
    assert route.normalize_path is True
    assert route.strip_fields == frozenset()


@pytest.mark.parametrize(
    ("written", "parsed"), [("true", True), ("false", False), ('"append"', "append")]
)
def test_x_forwarded_values(tmp_path: Path, written: str, parsed: object) -> None:
    (route,) = load_config(write(tmp_path, MINIMAL + f"x_forwarded = {written}\n")).routes
    assert route.x_forwarded == parsed


@pytest.mark.parametrize(
    ("written", "given"), [('"yes"', '"yes"'), ('"Append"', '"Append"'), ("1", "an integer")]
)
def test_x_forwarded_refuses_anything_else(tmp_path: Path, written: str, given: str) -> None:
    assert load_error(tmp_path, MINIMAL + f"x_forwarded = {written}\n") == (
        f':7: route[0].x_forwarded: must be true, false or "append", not {given}; '
        "write e.g. x_forwarded = true"
    )


def test_normalize_path(tmp_path: Path) -> None:
    (route,) = load_config(write(tmp_path, MINIMAL + "normalize_path = false\n")).routes
    assert route.normalize_path is False


def test_normalize_path_is_a_boolean(tmp_path: Path) -> None:
    assert load_error(tmp_path, MINIMAL + 'normalize_path = "no"\n') == (
        ":7: route[0].normalize_path: must be true or false, not a string; write it unquoted"
    )


def test_strip_fields_are_lowercase_bytes(tmp_path: Path) -> None:
    text = MINIMAL + 'strip_fields = ["X-Internal-Auth", "x_debug", "x-internal-auth"]\n'
    (route,) = load_config(write(tmp_path, text)).routes
    assert route.strip_fields == frozenset({b"x-internal-auth", b"x-debug"})


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (
            '"x-internal-auth"',
            "must be an array of field names, not a string; "
            'write e.g. strip_fields = ["x-internal-auth"]',
        ),
        (
            "[1]",
            "must list field names as strings, not an integer; "
            'write e.g. strip_fields = ["x-internal-auth"]',
        ),
        (
            '["x internal"]',
            '"x internal" is not a field name (letters, digits and !#$%&\'*+-.^_`|~ only); '
            'write e.g. strip_fields = ["x-internal-auth"]',
        ),
        (
            '[""]',
            '"" is not a field name (letters, digits and !#$%&\'*+-.^_`|~ only); '
            'write e.g. strip_fields = ["x-internal-auth"]',
        ),
        (
            '["x-ok", ":path"]',
            '":path" is a pseudo-header, not a field; the proxy writes the request line itself',
        ),
        (
            '["Connection"]',
            '"Connection" is hop-by-hop: the proxy never forwards the client\'s; '
            "remove it from the list",
        ),
        (
            '["transfer-encoding"]',
            '"transfer-encoding" is hop-by-hop: the proxy never forwards the client\'s; '
            "remove it from the list",
        ),
        (
            '["upgrade"]',
            '"upgrade" is hop-by-hop: the proxy never forwards the client\'s; '
            "remove it from the list",
        ),
        (
            '["Host"]',
            '"Host" is set by the proxy itself on the backend request; remove it from the list',
        ),
        (
            '["content-length"]',
            '"content-length" is set by the proxy itself on the backend request; '
            "remove it from the list",
        ),
        (
            '["sec-websocket-protocol"]',
            '"sec-websocket-protocol" is set by the proxy itself on the backend request; '
            "remove it from the list",
        ),
    ],
)
def test_strip_fields_refused(tmp_path: Path, written: str, problem: str) -> None:
    text = MINIMAL + "websocket = true\nstrip_fields = " + written + "\n"
    assert load_error(tmp_path, text) == f":8: route[0].strip_fields: {problem}"


def test_the_config_knows_every_hop_by_hop_field() -> None:
    # config sits below http and keeps its own copy of the list.
    assert {name.encode() for name in HOP_BY_HOP_NAMES} == set(HOP_BY_HOP)


def test_check_shows_the_settings_that_change_what_reaches_the_backend(tmp_path: Path) -> None:
    text = MINIMAL + (
        'x_forwarded = "append"\nnormalize_path = false\nstrip_fields = ["X-B", "x-a"]\n'
        '\n[[route]]\npath = "/plain"\nbackend = "http://127.0.0.1:9001"\n'
    )
    lines = describe(load_config(write(tmp_path, text))).splitlines()
    assert (
        'route / -> http://127.0.0.1:9000 (normalize_path = false, x_forwarded = "append", '
        'strip_fields = ["x-a", "x-b"])'
    ) in lines
    assert "route /plain -> http://127.0.0.1:9001" in lines
