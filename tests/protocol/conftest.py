"""Fixtures for the in-memory protocol tests."""

from __future__ import annotations

import pytest

import tests.helpers.memory


@pytest.fixture(params=["memory-backends", "socketpair-backends"])
def both_backend_kinds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a test with in-memory backends and again with socketpair backends.

    Socketpairs give the proxy the ``LeanSocketStream`` a real backend gives it, so HTTP/2
    tunnels run their downward direction on the connection's backend poller
    (backend_poller.py) instead of a pump task: both paths must behave the same.
    """
    monkeypatch.setattr(
        tests.helpers.memory, "SOCKET_BACKENDS", request.param == "socketpair-backends"
    )
