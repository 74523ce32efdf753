"""What a reload carries over and what it refuses, without sockets: balancer state across
generations (backend/balancer.py), health checks following the groups (backend/health.py),
the routes a new stream sees (relay/context.py), and the changes that need a restart
(server/reload.py)."""

from __future__ import annotations

import dataclasses

import trio
import trio.testing

from h2ws_proxy.backend.balancer import Balancers
from h2ws_proxy.backend.health import HealthChecks
from h2ws_proxy.config import (
    AdminConfig,
    BackendAddress,
    BackendGroup,
    HealthCheck,
    ListenerConfig,
    ProxyConfig,
    RouteConfig,
    SocketAddress,
    parse_backend,
)
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.reload import describe_changes, restart_needed

A, B, C = (parse_backend(f"http://127.0.0.1:{port}") for port in (9001, 9002, 9003))


def named(*servers: BackendAddress, **settings: object) -> BackendGroup:
    return BackendGroup(servers=servers, name="app", **settings)  # type: ignore[arg-type]


def config(*routes: tuple[str, BackendGroup], **fields: object) -> ProxyConfig:
    groups = tuple({id(group): group for _, group in routes if group.name}.values())
    return ProxyConfig(
        listeners=(ListenerConfig(SocketAddress("127.0.0.1", 0)),),
        routes=tuple(RouteConfig(path=path, backend=group) for path, group in routes),
        backends=groups,
        **fields,  # type: ignore[arg-type]
    )


async def test_an_unchanged_group_keeps_its_balancer() -> None:
    app = named(A, B)
    before = Balancers([app])
    after = Balancers([named(A, B)], previous=before)
    assert after.groups == before.groups


async def test_servers_that_stay_keep_their_state_and_counts() -> None:
    old_group = named(A, B, max_fails=1)
    old = Balancers([old_group])
    old_b = old.of(old_group).servers[1]
    taken = await old.of(old_group).take(exclude=[old_b])  # a tunnel holds A across the reload
    old.of(old_group).connect_failed(old_b, "refused")
    new_group = named(A, B, C, max_fails=2)
    new = Balancers([new_group], previous=old)
    balancer = new.of(new_group)
    a, b, c = balancer.servers
    assert a is taken
    assert a.active == 1
    assert not b.up(trio.current_time())  # still out: health carried over
    assert c.active == 0
    old.of(old_group).give_back(taken)  # to the balancer it came from
    assert a.active == 0


async def test_a_route_admitted_just_before_a_reload_finds_its_balancer() -> None:
    old_group = named(A)
    old = Balancers([old_group])
    new = Balancers([named(B)], previous=old)
    assert new.of(old_group) is old.of(old_group)
    assert [balancer.group.servers for balancer in new.groups] == [(B,)]


async def test_a_waiter_on_the_new_balancer_wakes_when_an_old_tunnel_gives_back() -> None:
    old_group = named(A, max_connections=1, queue_timeout_s=30.0)
    old = Balancers([old_group])
    held = await old.of(old_group).take()
    new_group = named(A, max_connections=1, queue_timeout_s=60.0)
    new = Balancers([new_group], previous=old)
    got = []
    async with trio.open_nursery() as nursery:

        async def waits() -> None:
            got.append(await new.of(new_group).take())

        nursery.start_soon(waits)
        await trio.testing.wait_all_tasks_blocked()
        assert not got
        old.of(old_group).give_back(held)
    assert got == [held]


async def test_health_checks_follow_the_groups(autojump_clock: trio.testing.MockClock) -> None:
    checked: list[BackendAddress] = []

    async def connect(address: BackendAddress) -> trio.abc.HalfCloseableStream:
        checked.append(address)
        await trio.sleep_forever()
        raise AssertionError

    check = HealthCheck(interval_s=1.0, timeout_s=0.5)
    first = Balancers([named(A, B, health_check=check)])
    async with trio.open_nursery() as nursery:
        checks = HealthChecks(connect)
        checks.start(nursery, first)
        await trio.sleep(0.1)
        assert sorted(address.port for address in checked) == [9001, 9002]
        checks.update(Balancers([named(C, health_check=check)], previous=first))
        checked.clear()
        await trio.sleep(2.9)  # three rounds
        assert {address.port for address in checked} == {9003}
        nursery.cancel_scope.cancel()


async def test_the_routes_a_new_request_sees_are_the_current_ones() -> None:
    old = config(("/old", named(A)))
    server = ServerContext(old, Router(old.routes), trio.Event())
    view = server.with_shutdown(trio.Event())  # a listener's connections
    new = config(("/new", named(A)))
    server.switch(server.next_generation(new))
    assert view.router is server.router
    assert view.router.match("/old") is None
    new_route = view.router.match("/new")
    assert new_route is not None
    assert new_route.path == "/new"
    assert server.current.number == 2


async def test_the_generation_cell_a_connection_keeps_follows_reloads() -> None:
    """``current_cell`` (read once per connection by the HTTP/2 intake) is the same cell
    for the server and its listeners' views, so a reload reaches a connection opened before
    it."""
    old = config(("/old", named(A)))
    server = ServerContext(old, Router(old.routes), trio.Event())
    cell = server.with_shutdown(trio.Event()).current_cell
    assert cell is server.current_cell
    server.switch(server.next_generation(config(("/new", named(A)))))
    assert cell.generation is server.current
    assert cell.generation.number == 2


def test_changes_that_need_a_restart() -> None:
    running = config(("/", named(A)), admin=AdminConfig(SocketAddress("127.0.0.1", 9901)))
    assert restart_needed(running, dataclasses.replace(running, routes=())) is None
    moved = dataclasses.replace(running, admin=AdminConfig(SocketAddress("127.0.0.1", 9902)))
    assert "admin.bind: 127.0.0.1:9901 -> 127.0.0.1:9902 needs a restart" in str(
        restart_needed(running, moved)
    )
    assert "admin.bind: 127.0.0.1:9901 -> none" in str(
        restart_needed(running, dataclasses.replace(running, admin=None))
    )
    assert "workers: 1 -> 4 needs a restart" in str(
        restart_needed(running, dataclasses.replace(running, workers=4))
    )


def test_what_changed() -> None:
    running = config(("/", named(A)), ("/chat", named(A)))
    new = dataclasses.replace(
        config(("/", named(A, B)), ("/api", named(A, B))),
        listeners=(*running.listeners, ListenerConfig(SocketAddress("127.0.0.1", 8443))),
    )
    changes = describe_changes(running, new, {}, {})
    assert changes["routes_added"] == "/api"
    assert changes["routes_removed"] == "/chat"
    assert changes["routes_changed"] == "/"
    assert changes["backends_changed"] == "app"
    assert changes["listeners_added"] == "127.0.0.1:8443"
    assert changes["listeners_removed"] == "-"
