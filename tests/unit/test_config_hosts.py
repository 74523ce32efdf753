"""config/hosts.py and the route keys host, allowed_origins, require_origin: the canonical
forms (at load and per request), what parses, and each error message (file, key, line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ws_proxy.cli import describe
from h2ws_proxy.config import load_config
from h2ws_proxy.config.hosts import (
    authority_host,
    canonical_host,
    canonical_origin,
    origin_allowed,
    parent_domain,
)
from tests.unit.test_config import MINIMAL, load_error, write

# --- the canonical forms ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("chat.example.com", "chat.example.com"),
        ("Chat.Example.COM", "chat.example.com"),
        ("chat.example.com.", "chat.example.com"),
        ("localhost", "localhost"),
        ("internal_name.lan", "internal_name.lan"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "[::1]"),
        ("[0:0:0:0:0:0:0:1]", "[::1]"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_canonical_host(written: str, canonical: str) -> None:
    assert canonical_host(written) == canonical
    assert canonical_host(written, wildcard=True) == canonical


@pytest.mark.parametrize(
    "written",
    [
        "",
        ".",
        "a..b",
        ".example.com",
        "example.com..",
        "-a.example.com",
        "a-.example.com",
        "exa mple.com",
        "example.com:8443",
        "::1",
        "[::1",
        "[zz::1]",
        "[fe80::1%eth0]",
        "*",
        "*.",
        "*example.com",
        "a.*.example.com",
        "*.*.example.com",
        "*.[::1]",
        "café.example",
    ],
)
def test_not_a_host(written: str) -> None:
    assert canonical_host(written, wildcard=True) is None


def test_a_wildcard_only_where_asked() -> None:
    assert canonical_host("*.Example.com", wildcard=True) == "*.example.com"
    assert canonical_host("*.example.com") is None


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("chat.example.com", "chat.example.com"),
        ("Chat.Example.COM:8443", "chat.example.com"),
        ("chat.example.com.", "chat.example.com"),
        ("chat.example.com.:443", "chat.example.com"),
        ("chat.example.com:", "chat.example.com"),
        ("[::1]:8443", "[::1]"),
        ("[0::1]", "[::1]"),
        ("[::FFFF:127.0.0.1]:1", "[::ffff:7f00:1]"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[not-v6]:1", "[not-v6]"),  # no route names it: it matches none
    ],
)
def test_authority_host(authority: str, host: str) -> None:
    assert authority_host(authority) == host


def test_config_and_requests_agree_on_hosts() -> None:
    # The config's form of a host is what a request naming it comes to.
    for written in ["Chat.Example.com.", "[0:0::1]", "LOCALHOST", "[::ffff:1.2.3.4]"]:
        canonical = canonical_host(written)
        assert canonical is not None
        assert authority_host(written) == canonical
        assert authority_host(written + ":8443") == canonical


@pytest.mark.parametrize(
    ("host", "parent"),
    [
        ("a.example.com", "example.com"),
        ("a.b.example.com", "b.example.com"),
        ("example.com", "com"),
        ("localhost", None),
        ("[::1]", None),
        ("[::ffff:1.2.3.4]", None),
    ],
)
def test_parent_domain(host: str, parent: str | None) -> None:
    assert parent_domain(host) == parent


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("https://app.example.com", "https://app.example.com"),
        ("HTTPS://App.Example.COM", "https://app.example.com"),
        ("https://app.example.com:443", "https://app.example.com"),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://app.example.com:443", "http://app.example.com:443"),
        ("https://app.example.com:80", "https://app.example.com:80"),
        ("https://app.example.com:08443", "https://app.example.com:8443"),
        ("https://app.example.com.", "https://app.example.com"),
        ("http://[0::1]:8080", "http://[::1]:8080"),
        ("http://localhost:3000", "http://localhost:3000"),
    ],
)
def test_canonical_origin(written: str, canonical: str) -> None:
    assert canonical_origin(written) == canonical


@pytest.mark.parametrize(
    "written",
    [
        "null",
        "",
        "*",
        "app.example.com",
        "https://",
        "https://app.example.com/",
        "https://app.example.com/path",
        "https://app.example.com?x",
        "https://user@app.example.com",
        "https://app.example.com:",
        "https://app.example.com:0",
        "https://app.example.com:65536",
        "https://app.example.com:123456",
        "ws://app.example.com",
        "chrome-extension://abcdef",
        "file://",
        "https://a.example https://b.example",
        "https://*.example.com",  # a request's origin is never a wildcard
        "https://[::1",
    ],
)
def test_not_an_origin(written: str) -> None:
    assert canonical_origin(written) is None


ALLOWED = (
    "https://app.example.com",
    "https://*.example.org",
    "http://localhost:3000",
    "https://*.example.net:8443",
)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:8443", False),  # another port too
        ("https://other.example.com", False),
        ("https://example.com", False),
        ("https://a.example.org", True),
        ("https://b.example.org", True),
        ("https://example.org", False),  # the wildcard wants one label more
        ("https://a.b.example.org", False),  # exactly one
        ("https://a.example.org:8443", False),
        ("http://a.example.org", False),
        ("https://a.example.net:8443", True),
        ("https://a.example.net", False),
        ("http://localhost:3000", True),
        ("http://localhost", False),
        ("https://[::1]", False),
    ],
)
def test_origin_allowed(origin: str, allowed: bool) -> None:
    assert canonical_origin(origin) == origin
    assert origin_allowed(origin, ALLOWED) is allowed


# --- route keys: what parses --------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    (route,) = load_config(write(tmp_path, MINIMAL)).routes
    assert (route.host, route.allowed_origins, route.require_origin) == ((), (), False)


@pytest.mark.parametrize(
    ("written", "parsed"),
    [
        ('"chat.example.com"', ("chat.example.com",)),
        ('["Chat.Example.com."]', ("chat.example.com",)),
        ('["chat.example.com", "*.Example.com"]', ("chat.example.com", "*.example.com")),
        ('["[0::1]", "127.0.0.1"]', ("[::1]", "127.0.0.1")),
    ],
)
def test_hosts(tmp_path: Path, written: str, parsed: tuple[str, ...]) -> None:
    (route,) = load_config(write(tmp_path, MINIMAL + f"host = {written}\n")).routes
    assert route.host == parsed


def test_origins(tmp_path: Path) -> None:
    text = MINIMAL + (
        'allowed_origins = ["https://App.example.com/", "https://*.example.org:443", '
        '"http://localhost:3000"]\nrequire_origin = true\n'
    )
    (route,) = load_config(write(tmp_path, text)).routes
    assert route.allowed_origins == (
        "https://app.example.com",
        "https://*.example.org",
        "http://localhost:3000",
    )
    assert route.require_origin is True


def test_two_routes_may_share_a_path_on_different_hosts(tmp_path: Path) -> None:
    text = MINIMAL + (
        'host = "a.example.com"\n'
        '\n[[route]]\npath = "/"\nhost = "*.example.com"\nbackend = "http://127.0.0.1:9001"\n'
        '\n[[route]]\npath = "/"\nbackend = "http://127.0.0.1:9002"\n'
    )
    assert [route.host for route in load_config(write(tmp_path, text)).routes] == [
        ("a.example.com",),
        ("*.example.com",),
        (),
    ]


def test_the_same_host_and_path_twice(tmp_path: Path) -> None:
    # Written differently, the same host: the canonical forms meet.
    text = MINIMAL + (
        'host = ["a.example.com", "*.example.com"]\n'
        '\n[[route]]\npath = "/"\nhost = "A.Example.com."\nbackend = "http://127.0.0.1:9001"\n'
    )
    assert load_error(tmp_path, text) == (
        ":10: route[1].path: '/' for host 'a.example.com' is already the path of route[0]; "
        "give each route its own path or host"
    )


# --- route keys: each error ----------------------------------------------------------------

HOST_HINT = 'write e.g. host = ["chat.example.com", "*.example.com"]'


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("1", f"must be a host name or a list of them, not an integer; {HOST_HINT}"),
        ("[]", f"must be a host name or a list of them, not an array; {HOST_HINT}"),
        ('["a.com", 2]', f"must be a host name or a list of them, not an integer; {HOST_HINT}"),
        ("[[]]", f"must be a host name or a list of them, not an array; {HOST_HINT}"),
        ('"*"', f'"*": serving any host is leaving host out of the route; {HOST_HINT}'),
        (
            '"*example.com"',
            '"*example.com": a wildcard may only be the whole first label '
            f"(*.example.com: one label more); {HOST_HINT}",
        ),
        (
            '"a.*.example.com"',
            '"a.*.example.com": a wildcard may only be the whole first label '
            f"(*.example.com: one label more); {HOST_HINT}",
        ),
        (
            '"*.*.example.com"',
            '"*.*.example.com": a wildcard may only be the whole first label '
            f"(*.example.com: one label more); {HOST_HINT}",
        ),
        (
            '"chat.example.com:8443"',
            '"chat.example.com:8443": takes no port (hosts match whatever port the client '
            f"named); {HOST_HINT}",
        ),
        (
            '"::1"',
            f'"::1": an IPv6 address goes in brackets, as in a Host field ([::1]); {HOST_HINT}',
        ),
        ('"[::g]"', f'"[::g]": is not a host name; {HOST_HINT}'),
        (
            '"*.[::1]"',
            f'"*.[::1]": a wildcard may only be the whole first label '
            f"(*.example.com: one label more); {HOST_HINT}",
        ),
        ('"a..example.com"', f'"a..example.com": is not a host name; {HOST_HINT}'),
        (
            '"https://a.com"',
            f'"https://a.com": is a URL; write the host name alone; {HOST_HINT}',
        ),
        ('"-a.com"', f'"-a.com": is not a host name; {HOST_HINT}'),
        (
            '["a.com", "A.com."]',
            '"A.com." is listed twice; list each host once',
        ),
    ],
)
def test_host_refused(tmp_path: Path, written: str, problem: str) -> None:
    assert load_error(tmp_path, MINIMAL + f"host = {written}\n") == (
        f":7: route[0].host: {problem}"
    )


ORIGIN_HINT = 'write e.g. allowed_origins = ["https://app.example.com", "https://*.example.com"]'
NOT_AN_ORIGIN = (
    "is not an origin (http:// or https://, a host, an optional port, no path); " + ORIGIN_HINT
)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        (
            '"https://app.example.com"',
            f"must be a list of origins, not a string; {ORIGIN_HINT}",
        ),
        ('["https://a.com", 1]', f"must be a list of origins, not an integer; {ORIGIN_HINT}"),
        ("true", f"must be a list of origins, not a boolean; {ORIGIN_HINT}"),
        (
            '["null"]',
            '"null" cannot be allowed: sandboxed frames and file: pages send it, so any site '
            "can; remove it",
        ),
        ('["*"]', '"*" is not an origin; to allow any origin, leave allowed_origins out'),
        ('["app.example.com"]', f'"app.example.com" {NOT_AN_ORIGIN}'),
        ('["https://app.example.com/app"]', f'"https://app.example.com/app" {NOT_AN_ORIGIN}'),
        ('["wss://app.example.com"]', f'"wss://app.example.com" {NOT_AN_ORIGIN}'),
        ('["https://app.example.com:65536"]', f'"https://app.example.com:65536" {NOT_AN_ORIGIN}'),
        ('["https://app.example.com:0"]', f'"https://app.example.com:0" {NOT_AN_ORIGIN}'),
        ('["https://a..example.com"]', f'"https://a..example.com" {NOT_AN_ORIGIN}'),
        ('["https://*.*.example.com"]', f'"https://*.*.example.com" {NOT_AN_ORIGIN}'),
        ('["https://*.[::1]"]', f'"https://*.[::1]" {NOT_AN_ORIGIN}'),
        ('["https://[::g]"]', f'"https://[::g]" {NOT_AN_ORIGIN}'),
        (
            '["https://a.example.com", "https://A.example.com:443"]',
            '"https://A.example.com:443" is listed twice; list each origin once',
        ),
    ],
)
def test_origin_refused(tmp_path: Path, written: str, problem: str) -> None:
    assert load_error(tmp_path, MINIMAL + f"allowed_origins = {written}\n") == (
        f":7: route[0].allowed_origins: {problem}"
    )


def test_require_origin_is_a_boolean(tmp_path: Path) -> None:
    assert load_error(tmp_path, MINIMAL + 'require_origin = "yes"\n') == (
        ":7: route[0].require_origin: must be true or false, not a string; write it unquoted"
    )


def test_check_shows_hosts_and_the_origin_policy(tmp_path: Path) -> None:
    text = MINIMAL + (
        'host = ["chat.example.com", "*.Example.com"]\n'
        'allowed_origins = ["https://app.example.com:443"]\nrequire_origin = true\n'
        '\n[[route]]\npath = "/"\nbackend = "http://127.0.0.1:9001"\n'
    )
    lines = describe(load_config(write(tmp_path, text))).splitlines()
    assert (
        'route / -> http://127.0.0.1:9000 (host = ["chat.example.com", "*.example.com"], '
        'allowed_origins = ["https://app.example.com"], require_origin = true)'
    ) in lines
    assert "route / -> http://127.0.0.1:9001" in lines
