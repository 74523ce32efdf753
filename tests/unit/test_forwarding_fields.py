"""Forwarding fields nobody can spoof: with ``x_forwarded`` on, the proxy is the edge."""

from __future__ import annotations

from typing import Literal

import pytest

from h2ws_proxy.config import BackendGroup, RouteConfig, parse_backend
from h2ws_proxy.http.fields import is_forwarding_field, with_forwarding_fields
from h2ws_proxy.http.message import trailer_fields

SPOOFED = [
    b"x-forwarded-for",
    b"x-forwarded-proto",
    b"x-forwarded-host",
    b"x-forwarded-port",
    b"x-forwarded-prefix",
    b"x-forwarded-ssl",
    b"x-forwarded-scheme",
    b"x-forwarded-server",
    b"x-forwarded-uri",
    b"x-forwarded-client-cert",
    b"forwarded",
    b"x-real-ip",
    b"true-client-ip",
    b"x-client-ip",
    b"cf-connecting-ip",
    # WSGI/CGI read these as HTTP_X_FORWARDED_FOR, HTTP_X_REAL_IP: the same variables.
    b"x_forwarded_for",
    b"x-real_ip",
    b"x_forwarded_host",
]


@pytest.mark.parametrize("name", SPOOFED)
def test_every_spelling_of_a_forwarding_claim_is_one(name: bytes) -> None:
    assert is_forwarding_field(name)


@pytest.mark.parametrize("name", [b"x-forward", b"accept", b"x_request_id", b"xforwarded-for"])
def test_other_fields_are_not(name: bytes) -> None:
    assert not is_forwarding_field(name)


def route(*, x_forwarded: bool) -> RouteConfig:
    return RouteConfig(
        path="/",
        backend=BackendGroup.of(parse_backend("http://127.0.0.1:9")),
        x_forwarded=x_forwarded,
    )


def test_the_edge_drops_every_claim_and_adds_its_own() -> None:
    headers = (*[(name, b"10.6.6.6") for name in SPOOFED], (b"accept", b"*/*"))
    sent = with_forwarding_fields(
        headers, route(x_forwarded=True), "127.0.0.1", b"https", b"a.test"
    )
    assert sent == [
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"127.0.0.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"a.test"),
    ]


def test_behind_a_trusted_proxy_the_claims_pass() -> None:
    headers = ((b"x-forwarded-for", b"10.0.0.1"), (b"x_real_ip", b"10.0.0.1"))
    sent = with_forwarding_fields(headers, route(x_forwarded=False), "127.0.0.1", b"http", None)
    assert sent == list(headers)


def test_trailers_never_carry_a_forwarding_claim() -> None:
    trailers = [(b"X-Forwarded-For", b"10.6.6.6"), (b"X_Real_IP", b"10.6.6.6"), (b"x-sum", b"1")]
    assert trailer_fields(trailers) == [(b"x-sum", b"1")]


# --- x_forwarded = "append": behind a trusted proxy -------------------------------------------


def appending() -> RouteConfig:
    return RouteConfig(
        path="/", backend=BackendGroup.of(parse_backend("http://127.0.0.1:9")), x_forwarded="append"
    )


def test_append_joins_the_chain_and_adds_the_peer() -> None:
    headers = (
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.1"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b" 10.0.0.2 "),
        (b"x-forwarded-for", b""),  # an empty field is no entry
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"app.test"),
        (b"x-forwarded-port", b"443"),
        (b"x-real-ip", b"203.0.113.7"),
        (b"true-client-ip", b"203.0.113.7"),
    )
    assert with_forwarding_fields(headers, appending(), "192.0.2.1", b"http", b"proxy.test") == [
        (b"accept", b"*/*"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"app.test"),
        (b"x-forwarded-port", b"443"),
        (b"x-real-ip", b"203.0.113.7"),
        (b"true-client-ip", b"203.0.113.7"),
        (b"x-forwarded-for", b"203.0.113.7, 10.0.0.1, 10.0.0.2, 192.0.2.1"),
    ]


def test_append_with_none_sets_ours() -> None:
    assert with_forwarding_fields((), appending(), "192.0.2.1", b"https", b"proxy.test") == [
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"proxy.test"),
    ]


@pytest.mark.parametrize(
    ("peer", "element"), [("192.0.2.1", b"for=192.0.2.1"), ("2001:db8::1", b'for="[2001:db8::1]"')]
)
def test_append_extends_a_forwarded_chain(peer: str, element: bytes) -> None:
    # RFC 7239 §6: an IPv6 node is bracketed and quoted. The quoted comma stays whole.
    headers = ((b"forwarded", b'for=203.0.113.7;by="a,b"'), (b"forwarded", b"for=10.0.0.1"))
    sent = with_forwarding_fields(headers, appending(), peer, b"http", None)
    assert (b"forwarded", b'for=203.0.113.7;by="a,b", for=10.0.0.1, ' + element) in sent


def test_append_adds_no_forwarded_field_when_none_came() -> None:
    sent = with_forwarding_fields((), appending(), "192.0.2.1", b"http", None)
    assert [name for name, _ in sent] == [b"x-forwarded-for", b"x-forwarded-proto"]


def test_append_without_a_peer_address_keeps_the_chain() -> None:
    headers = ((b"x-forwarded-for", b"203.0.113.7"), (b"forwarded", b"for=203.0.113.7"))
    sent = with_forwarding_fields(headers, appending(), None, b"http", None)
    assert sent == [
        (b"x-forwarded-for", b"203.0.113.7"),
        (b"forwarded", b"for=203.0.113.7"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_append_drops_the_underscore_spellings() -> None:
    # No proxy sets X_Forwarded_For; a WSGI backend would read it as X-Forwarded-For.
    headers = ((b"x_forwarded_for", b"10.6.6.6"), (b"x-real_ip", b"10.6.6.6"))
    sent = with_forwarding_fields(headers, appending(), "192.0.2.1", b"http", None)
    assert sent == [(b"x-forwarded-for", b"192.0.2.1"), (b"x-forwarded-proto", b"http")]


# --- strip_fields -----------------------------------------------------------------------------

STRIP = frozenset({b"x-internal-auth", b"x-debug"})


@pytest.mark.parametrize("x_forwarded", [True, False, "append"])
def test_strip_fields_go_in_every_mode_and_spelling(
    x_forwarded: bool | Literal["append"],
) -> None:
    route = RouteConfig(
        path="/",
        backend=BackendGroup.of(parse_backend("http://127.0.0.1:9")),
        x_forwarded=x_forwarded,
        strip_fields=STRIP,
    )
    headers = (
        (b"x-internal-auth", b"forged"),
        (b"x_internal_auth", b"forged"),
        (b"x-debug", b"1"),
        (b"accept", b"*/*"),
    )
    sent = with_forwarding_fields(headers, route, "192.0.2.1", b"http", None)
    assert [field for field in sent if not field[0].startswith(b"x-forwarded-")] == [
        (b"accept", b"*/*")
    ]


def test_strip_fields_go_from_trailers() -> None:
    trailers = [(b"X-Internal-Auth", b"forged"), (b"X_Debug", b"1"), (b"x-sum", b"1")]
    assert trailer_fields(trailers, STRIP) == [(b"x-sum", b"1")]
    assert trailer_fields(trailers) == [
        (b"x-internal-auth", b"forged"),
        (b"x_debug", b"1"),
        (b"x-sum", b"1"),
    ]
