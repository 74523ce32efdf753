"""Paths are normalised before routing (http/paths.py): the backend never resolves one
elsewhere than the route chosen for it."""

from __future__ import annotations

import pytest

from h2ws_proxy.errors import ClientProtocolError
from h2ws_proxy.http.paths import normalize_target


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
