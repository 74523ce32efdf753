"""Forwarding fields nobody can spoof: with ``x_forwarded`` on, the proxy is the edge."""

from __future__ import annotations

import pytest

from h2ws_proxy.config import RouteConfig, parse_backend
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
        path="/", backend=parse_backend("http://127.0.0.1:9"), x_forwarded=x_forwarded
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
