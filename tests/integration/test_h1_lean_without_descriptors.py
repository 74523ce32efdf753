"""At the descriptor limit an HTTP/1.1 connection cannot make its own epoll for the lean path
(http1/lean_exchange.py): the request runs on the task path instead, answered as before,
and the server taken for it is given back (found by a review: the client was dropped and
the balancer's count leaked)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
import trio
import trio.testing

from h2ws_proxy.backend import balancer
from h2ws_proxy.transport import poller
from tests.conftest import StartProxy
from tests.helpers.backends import BackendConnection
from tests.helpers.scripted_http import OK
from tests.integration.test_h1_lean_endings import request, setup

pytestmark = pytest.mark.socket


async def test_no_descriptor_for_the_epoll_sends_the_request_down_the_task_path(
    nursery: trio.Nursery, start_proxy: StartProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The servers given back (the first request's end gives its one back): each one's count
    # of active requests must be back to zero at the end (the lean start takes its server
    # in place, not through ``take_at_once``: the count itself is what is checked).
    given: set[Any] = set()
    give = balancer.GroupBalancer.give_back

    def recorded_give(self: Any, server: Any) -> None:
        given.add(server)
        give(self, server)

    monkeypatch.setattr(balancer.GroupBalancer, "give_back", recorded_give)

    async def answer(connection: BackendConnection, _head: bytes, _number: int) -> bool:
        await connection.stream.send_all(OK)
        return True

    _backend, client = await setup(nursery, start_proxy, True, answer)

    def no_more_descriptors(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(poller.BackendPoller, "__init__", no_more_descriptors)
    await client.stream.send_all(request(b"/two"))
    second = await client.answer()
    assert second is not None
    assert second[0].startswith(b"HTTP/1.1 200 ")
    assert second[1] == b"first"
    await trio.testing.wait_all_tasks_blocked()
    assert given
    assert [server.active for server in given] == [0] * len(given)
