"""Paths are normalised before routing (http/paths.py): the backend never resolves one
elsewhere than the route chosen for it."""

from __future__ import annotations

import pytest

from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.paths import normalize_target, split_target, target_for_route


@pytest.mark.parametrize(
    ("target", "normalized"),
    [
        (b"/x/../admin", b"/admin"),
        (b"/public/../admin", b"/admin"),
        (b"/public/%2e%2e/admin", b"/admin"),
        (b"/public/%2E%2E/admin", b"/admin"),
        (b"/%61dmin", b"/admin"),
        (b"//admin", b"/admin"),
        (b"/public//../admin", b"/admin"),  # // merged first (as nginx does), then ..
        (b"/a/./b/", b"/a/b/"),
        (b"/a/b/..", b"/a/"),
        (b"/a/.", b"/a/"),
        (b"/", b"/"),
        (b"/x;jsessionid=1/../admin", b"/admin"),
        (b"/a%3fb%2a", b"/a%3Fb%2A"),  # reserved escapes stay, hex upper-cased
        (b"/a/../b?x=/../y&z=%2F", b"/b?x=/../y&z=%2F"),  # the query is not a path
        (b"/.well-known/x", b"/.well-known/x"),
        (b"*", b"*"),
    ],
)
def test_normalized(target: bytes, normalized: bytes) -> None:
    assert normalize_target(target) == normalized


@pytest.mark.parametrize(
    "target",
    [
        b"/..",
        b"/a/../..",
        b"/%2e%2e/admin",
        b"/public/%2Fadmin",
        b"/public/%2fadmin",
        b"/public/%5Cadmin",
        b"/public\\..\\admin",
        b"/public/..;/admin",
        b"/public/.;x/admin",
        b"/%zz",
        b"/%4",
    ],
)
def test_refused(target: bytes) -> None:
    with pytest.raises(ClientProtocolError) as refused:
        normalize_target(target)
    assert refused.value.status_hint == 400


def test_a_plain_path_is_returned_as_it_is() -> None:
    target = b"/chat/room?x=1"
    assert normalize_target(target) is target


# --- the normalize_path knob: what is routed, what is sent ----------------------------------


@pytest.mark.parametrize(
    ("target", "split"),
    [
        (b"/chat?x=1", (b"/chat?x=1", None, None)),  # as it came: nothing kept twice
        (b"/a//b", (b"/a/b", b"/a//b", None)),
        (b"/.well-known/x", (b"/.well-known/x", None, None)),  # rebuilt, but the same bytes
        (b"/raw/a%2Fb", (b"/raw/a%2Fb", None, "bad request: an encoded / or \\ in the path")),
        (b"/raw/..;/x", (b"/raw/..;/x", None, "bad request: a dot-segment with parameters")),
    ],
)
def test_split_target(target: bytes, split: tuple[bytes, bytes | None, str | None]) -> None:
    assert split_target(target) == split


def test_split_target_keeps_the_clients_bytes_object() -> None:
    target = b"/chat/room"
    routed, raw, refusal = split_target(target)
    assert routed is target
    assert raw is None
    assert refusal is None


@pytest.mark.parametrize(
    ("target", "normalising", "raw"),
    [
        (b"/a//b", b"/a/b", b"/a//b"),
        (b"/chat", b"/chat", b"/chat"),
        (b"/raw/%2F", None, b"/raw/%2F"),
    ],
)
def test_target_for_route(target: bytes, normalising: bytes | None, raw: bytes) -> None:
    routed, raw_target, refusal = split_target(target)
    assert target_for_route(routed, raw_target, refusal, normalize_path=False) == raw
    if normalising is None:
        # A refused path never goes to a normalising route, even if a caller skipped routing.
        with pytest.raises(ClientProtocolError) as refused:
            target_for_route(routed, raw_target, refusal, normalize_path=True)
        assert refused.value.status_hint == 400
    else:
        assert target_for_route(routed, raw_target, refusal, normalize_path=True) == normalising
