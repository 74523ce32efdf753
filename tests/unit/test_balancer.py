"""Server choice within a backend group (backend/balancer.py), on a jumping clock."""

from __future__ import annotations

import collections

import pytest
import trio
import trio.testing

from h2ws_proxy.backend.balancer import GroupBalancer, ServerState, sticky_value
from h2ws_proxy.backend.health import record_check
from h2ws_proxy.config import BackendGroup, HealthCheck, parse_backend
from h2ws_proxy.errors import NoServerAvailable

SERVERS = tuple(parse_backend(f"http://127.0.0.1:{port}") for port in (9001, 9002, 9003))


def group(**settings: object) -> GroupBalancer:
    return GroupBalancer(BackendGroup(servers=SERVERS, name="app", **settings))  # type: ignore[arg-type]


def port(server: ServerState) -> int:
    return server.address.port


async def test_round_robin_takes_each_in_turn() -> None:
    balancer = group()
    picks = []
    for _ in range(6):
        server = await balancer.take()
        picks.append(port(server))
        balancer.give_back(server)
    assert collections.Counter(picks) == {9001: 2, 9002: 2, 9003: 2}
    assert picks[:3] == picks[3:]


async def test_least_connections_takes_the_least_busy() -> None:
    balancer = group(balance="least_connections")
    held = [await balancer.take() for _ in range(3)]  # one each
    balancer.give_back(held[1])
    assert port(await balancer.take()) == port(held[1])
    assert sorted(s.active for s in balancer.servers) == [1, 1, 1]


async def test_client_ip_is_consistent_and_a_lost_server_moves_only_its_clients() -> None:
    balancer = group(balance="client_ip")
    clients = [f"192.0.2.{i}" for i in range(1, 200)]

    async def placement() -> dict[str, int]:
        placed = {}
        for client in clients:
            server = await balancer.take(client_key=client)
            placed[client] = port(server)
            balancer.give_back(server)
        return placed

    before = await placement()
    assert before == await placement()  # stable
    assert len(set(before.values())) == 3  # spread over every server
    lost = balancer.servers[0]
    lost.checked_up = False
    after = await placement()
    moved = [client for client in clients if before[client] != after[client]]
    assert moved
    assert all(before[client] == port(lost) for client in moved)


async def test_cookie_pins_a_client_to_its_server_while_it_is_up() -> None:
    balancer = group(balance="cookie", sticky_cookie="srv")
    pinned = balancer.servers[2]
    for _ in range(5):
        server = await balancer.take(sticky=pinned.sticky)
        assert server is pinned
        balancer.give_back(server)
    assert sticky_value(pinned.address) == pinned.sticky
    pinned.checked_up = False
    assert (await balancer.take(sticky=pinned.sticky)) is not pinned
    assert (await balancer.take(sticky="not-a-server")) in balancer.servers


async def test_passive_health_leaves_a_failing_server_out_then_tries_it_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    balancer = group(max_fails=2, fail_timeout_s=10.0)
    failing = balancer.servers[0]
    balancer.connect_failed(failing, "refused")
    assert failing.up(trio.current_time())  # one failure is not enough
    balancer.connect_succeeded(failing)
    balancer.connect_failed(failing, "refused")
    assert failing.up(trio.current_time())  # the run was broken by a success
    balancer.connect_failed(failing, "refused")
    assert not failing.up(trio.current_time())
    for _ in range(6):
        server = await balancer.take()
        assert server is not failing
        balancer.give_back(server)
    await trio.sleep(10.0)
    assert failing.up(trio.current_time())


async def test_a_group_of_one_is_never_left_out_by_passive_health() -> None:
    balancer = GroupBalancer(BackendGroup.of(SERVERS[0]))
    for _ in range(10):
        balancer.connect_failed(balancer.servers[0], "refused")
    assert (await balancer.take()) is balancer.servers[0]


async def test_every_server_down_is_503_with_the_reason() -> None:
    balancer = group()
    for server in balancer.servers:
        server.checked_up = False
    with pytest.raises(NoServerAvailable) as refused:
        await balancer.take()
    assert refused.value.status_hint == 503
    assert refused.value.message == "no server of backend app is available (3 of 3 down)"


async def test_excluded_servers_are_not_taken_again() -> None:
    balancer = group()
    first = await balancer.take()
    assert (await balancer.take(exclude=[first])) is not first
    assert balancer.has_other([first])
    assert not balancer.has_other(balancer.servers)


async def test_max_connections_queues_then_503_after_queue_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    balancer = group(max_connections=1, queue_timeout_s=5.0)
    held = [await balancer.take() for _ in range(3)]
    assert {port(s) for s in held} == {9001, 9002, 9003}
    got: list[ServerState] = []

    async def waiter() -> None:
        got.append(await balancer.take())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(2.0)
        assert not got  # queued
        balancer.give_back(held[1])
    assert got == [held[1]]
    started = trio.current_time()
    with pytest.raises(NoServerAvailable, match="at max_connections"):
        await balancer.take()
    assert trio.current_time() - started == 5.0


def test_active_checks_take_a_server_out_and_bring_it_back() -> None:
    balancer = group()
    server, check = balancer.servers[0], HealthCheck(healthy=2, unhealthy=3)
    for _ in range(2):
        record_check(balancer, server, check, "status 500")
    assert server.checked_up
    record_check(balancer, server, check, "status 500")
    assert not server.checked_up
    record_check(balancer, server, check, None)
    assert not server.checked_up
    record_check(balancer, server, check, None)
    assert server.checked_up
