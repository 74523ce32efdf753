"""Reload in one process, over real sockets: what a reload changes for new connections and
new streams, what it leaves alone (open tunnels, a refused file), and ``POST /reload``'s
answers to bad input."""

from __future__ import annotations

import functools
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy.config import BackendAddress, ProxyConfig, SocketAddress, load_config
from h2ws_proxy.server.demo import serve_demo_backend
from h2ws_proxy.server.reload import Reloader
from h2ws_proxy.server.serve import BoundAddresses, serve
from tests.helpers.h2_client import H2TestClient, open_h2_client
from tests.helpers.process import free_port
from tests.helpers.records import capture_proxy_records
from tests.helpers.reload import ConfigFile, issue_certificate, post_reload, tls_connect

pytestmark = pytest.mark.socket


@dataclass
class Proxy:
    file: ConfigFile
    bound: BoundAddresses
    backend: str  #: the demo echo backend's URL
    dead: str  #: a backend URL nothing listens on (a route to it answers 502)

    @property
    def admin(self) -> SocketAddress:
        assert self.bound.admin is not None
        return self.bound.admin

    @property
    def address(self) -> SocketAddress:
        return self.bound.listeners[0]

    async def reload(self) -> tuple[int, str]:
        self.file.write()
        return await post_reload(self.admin)


@asynccontextmanager
async def running_proxy(
    tmp_path: Path, load: functools.partial[ProxyConfig] | None = None, **file: object
) -> AsyncIterator[Proxy]:
    port = free_port()
    backend = f"http://127.0.0.1:{port}"
    config_file = ConfigFile(tmp_path / "proxy.toml", routes=[("/old", backend)])
    for key, value in file.items():
        setattr(config_file, key, value)
    config_file.write()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_demo_backend, BackendAddress("http", "127.0.0.1", port))
        reloader = Reloader(load or functools.partial(load_config, config_file.path))
        run = functools.partial(serve, load_config(config_file.path), reloader=reloader)
        bound = await nursery.start(run)
        yield Proxy(config_file, bound, backend, f"http://127.0.0.1:{free_port()}")
        nursery.cancel_scope.cancel()


async def _status(client: H2TestClient, path: str) -> int | None:
    """Open a WebSocket to ``path`` on ``client``'s connection: its status (and echo)."""
    ws = await client.websocket(path)
    if ws.status == 200:
        await ws.send(f"to {path}")
        assert await ws.receive() == f"to {path}"
    return ws.status


async def test_a_new_stream_on_an_old_connection_gets_the_new_routes(tmp_path: Path) -> None:
    async with running_proxy(tmp_path) as proxy:
        stream = await trio.open_tcp_stream(proxy.address.host, proxy.address.port)
        async with open_h2_client(stream) as client:
            held = await client.websocket("/old")
            await held.send("before")
            assert await held.receive() == "before"
            assert await _status(client, "/new") == 404
            # Routed before the reload (and remembered as a repeated request: admission.py).
            assert await _status(client, "/old") != 404
            proxy.file.routes = [("/new", proxy.backend)]
            status, body = await proxy.reload()
            assert status == 200, body
            assert "routes_added=/new" in body
            assert "routes_removed=/old" in body
            # The same connection: new streams see the new routes...
            assert await _status(client, "/new") == 200
            assert await _status(client, "/old") == 404
            # ...and the tunnel opened before keeps its route and backend.
            await held.send("after")
            assert await held.receive() == "after"


async def test_a_repeated_request_on_an_old_connection_gets_the_new_routes(
    tmp_path: Path,
) -> None:
    """A connection remembers the last request it accepted (http2/request_intake.py), and
    the routes it was accepted with: a reload is not hidden by that."""
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/old")]
    get.append((b":authority", b"proxy.test"))
    async with running_proxy(tmp_path) as proxy:
        stream = await trio.open_tcp_stream(proxy.address.host, proxy.address.port)
        async with open_h2_client(stream) as client:
            for _ in range(2):  # the second one is the remembered request
                answer = await client.finished(await client.request(get, end_stream=True))
                assert answer.status not in (None, 404)
            proxy.file.routes = [("/new", proxy.backend)]
            status, body = await proxy.reload()
            assert status == 200, body
            answer = await client.finished(await client.request(get, end_stream=True))
            assert answer.status == 404


async def test_an_invalid_file_changes_nothing(tmp_path: Path) -> None:
    async with running_proxy(tmp_path) as proxy:
        with capture_proxy_records() as records:
            proxy.file.path.write_text(proxy.file.path.read_text() + "\n[[route]]\npaht = 1\n")
            status, body = await post_reload(proxy.admin)
        assert status == 500
        assert body.startswith(f"{proxy.file.path}:")
        assert "route[1].paht: unknown key" in body
        [failed] = records.named("config.reload_failed")
        assert failed["error"] == body.strip()
        stream = await trio.open_tcp_stream(proxy.address.host, proxy.address.port)
        async with open_h2_client(stream) as client:
            assert await _status(client, "/old") == 200


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"admin": "127.0.0.1:1"}, "admin.bind"),
        ({"admin": None}, "admin.bind"),
        ({"workers": 2}, "workers"),
    ],
)
async def test_a_change_that_needs_a_restart_is_refused(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    async with running_proxy(tmp_path) as proxy:
        proxy.file.routes = [("/new", proxy.backend)]
        for key, value in change.items():
            setattr(proxy.file, key, value)
        status, body = await proxy.reload()
        assert status == 500
        assert named in body
        assert "needs a restart" in body
        stream = await trio.open_tcp_stream(proxy.address.host, proxy.address.port)
        async with open_h2_client(stream) as client:
            assert await _status(client, "/old") == 200
            assert await _status(client, "/new") == 404


async def test_post_reload_refuses_bad_input(tmp_path: Path) -> None:
    loading, release = threading.Event(), threading.Event()

    def slow_load(path: Path) -> ProxyConfig:
        loading.set()
        release.wait(30)
        return load_config(path)

    load = functools.partial(slow_load, tmp_path / "proxy.toml")
    async with running_proxy(tmp_path, load=load) as proxy:
        assert (await post_reload(proxy.admin, body=b"now"))[0] == 400
        for method in ("GET", "PUT", "DELETE"):
            assert (await post_reload(proxy.admin, method=method))[0] == 405
        async with trio.open_nursery() as nursery:
            first: list[tuple[int, str]] = []

            async def reload_once() -> None:
                first.append(await post_reload(proxy.admin))

            nursery.start_soon(reload_once)
            await trio.to_thread.run_sync(loading.wait, 10)
            status, body = await post_reload(proxy.admin)
            assert status == 409, body
            release.set()
        assert first[0][0] == 200


async def test_listeners_added_and_removed(tmp_path: Path) -> None:
    async with running_proxy(tmp_path) as proxy:
        proxy.file.listeners = ["127.0.0.1:0", "127.0.0.1:0"]
        status, body = await proxy.reload()
        assert status == 200, body
        assert "listeners_added=127.0.0.1:0#2" in body
        listening = dict(line.split("=", 1) for line in body.splitlines())["listening"]
        first, second = listening.split(",")
        assert first == str(proxy.address)
        port = int(second.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_h2_client(stream) as client:
            held = await client.websocket("/old")
            await held.send("on the new listener")
            assert await held.receive() == "on the new listener"
            proxy.file.listeners = ["127.0.0.1:0"]
            status, body = await proxy.reload()
            assert status == 200, body
            assert "listeners_removed=127.0.0.1:0#2" in body
            # Its connections drain as on shutdown: GOAWAY, and open tunnels may finish
            # (h2's client refuses to send after a GOAWAY: the stream is checked alive).
            with trio.fail_after(5):
                await client.wait_for(lambda: client.terminated is not None)
            assert client.terminated is not None
            assert client.terminated.last_stream_id >= held.state.stream_id
            await trio.sleep(0.2)
            assert held.state.reset_code is None
            assert not held.state.ended
            assert not client.closed.is_set()
        with pytest.raises(OSError, match="connect"):
            await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_renewed_certificate_serves_new_connections(tmp_path: Path, ca: trustme.CA) -> None:
    tls = issue_certificate(ca, tmp_path, "first")
    async with running_proxy(tmp_path, tls=tls) as proxy:
        stream, served = await tls_connect(proxy.address, ca)
        assert served == "first"
        async with open_h2_client(stream) as client:
            held = await client.websocket("/old", scheme="https")
            issue_certificate(ca, tmp_path, "second")  # the same paths
            status, body = await proxy.reload()
            assert status == 200, body
            assert "certificates=127.0.0.1:0" in body
            _, served = await tls_connect(proxy.address, ca)
            assert served == "second"
            await held.send("on the old certificate")
            assert await held.receive() == "on the old certificate"
