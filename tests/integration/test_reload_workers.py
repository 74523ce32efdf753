"""The pieces of a reload with workers, in one process: listening sockets passed over the
control channel, a worker that fails to apply a config and says why, and the supervisor
reporting it (server/reload_workers.py, server/worker.py)."""

from __future__ import annotations

import functools
import json
import socket
from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy.config import ProxyConfig, load_config
from h2ws_proxy.server.reload import Reloader, ReloadOrder, listener_of_fd
from h2ws_proxy.server.reload_workers import Serving, WorkerReloader
from h2ws_proxy.server.serve import bind_sockets, serve
from h2ws_proxy.server.worker import ControlChannel
from tests.helpers.records import capture_proxy_records
from tests.helpers.reload import ConfigFile, issue_certificate

pytestmark = pytest.mark.socket


async def test_a_listening_socket_crosses_the_control_channel() -> None:
    ours, theirs = socket.socketpair()
    supervisor, worker = ControlChannel(ours), ControlChannel(theirs)
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    await supervisor.send(b"reload with one", [listener.socket.fileno()])
    assert await worker.receive() == b"reload with one"
    [fd] = worker.take_fds(1)
    received = listener_of_fd(fd)
    assert received.socket.getsockname()[1] == port
    await listener.aclose()  # the worker's copy still accepts
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.open_tcp_stream, "127.0.0.1", port)
        accepted = await received.accept()
        await accepted.aclose()
    await received.aclose()
    await supervisor.aclose()
    await worker.aclose()


class _Worker:
    """A worker slot whose process is this test: it answers reloads as told."""

    def __init__(self, index: int, channel: ControlChannel) -> None:
        self.index = index
        self.control: ControlChannel | None = channel
        self.lock = trio.Lock()


async def test_a_worker_that_fails_to_apply_is_named_in_the_answer(tmp_path: Path) -> None:
    file = ConfigFile(tmp_path / "proxy.toml", routes=[("/", "http://127.0.0.1:9")], workers=2)
    file.write()
    config = load_config(file.path)
    serving = Serving(config, await bind_sockets(config))
    reloads = WorkerReloader(functools.partial(load_config, file.path), serving)
    workers = []
    async with trio.open_nursery() as nursery:
        for index, ok in enumerate([True, False]):
            ours, theirs = socket.socketpair()
            workers.append(_Worker(index, ControlChannel(ours)))
            nursery.start_soon(_answer_reload, ControlChannel(theirs), ok)
        file.routes = [("/", "http://127.0.0.1:9"), ("/new", "http://127.0.0.1:9")]
        file.listeners = ["127.0.0.1:0", "127.0.0.1:0"]
        file.write()
        with capture_proxy_records() as records:
            status, body = await reloads.answer_admin(workers)
        assert status == 500
        assert body.decode().strip() == "worker 1: no can do (the other workers switched)"
        [failed] = records.named("config.reload_failed")
        assert "worker 1: no can do" in failed["error"]
        # The supervisor serves the new config: a worker it starts now gets it.
        assert len(reloads.serving.sockets.listeners) == 2
        assert [route.path for route in reloads.serving.config.routes] == ["/", "/new"]
        for worker in workers:
            assert worker.control is not None
            await worker.control.aclose()


async def _answer_reload(channel: ControlChannel, ok: bool) -> None:
    """Answer the one reload that comes, as a worker would (with one new socket)."""
    message = await channel.receive()
    assert message is not None
    command, _, payload = message.partition(b" ")
    assert command == b"reload"
    order = ReloadOrder.decode(payload)
    assert order.fd_count == 1
    for fd in channel.take_fds(order.fd_count):
        await listener_of_fd(fd).aclose()
    answer = {"id": order.request_id, "ok": ok, "message": "ok" if ok else "no can do"}
    await channel.send(json.dumps(answer).encode())
    await channel.aclose()


async def test_a_worker_reports_a_config_it_cannot_apply(
    tmp_path: Path, ca: trustme.CA, nursery: trio.Nursery
) -> None:
    file = ConfigFile(tmp_path / "proxy.toml", routes=[("/", "http://127.0.0.1:9")])
    file.write()
    reloader = Reloader()  # a worker's: it never reads the file itself
    await nursery.start(functools.partial(serve, load_config(file.path), reloader=reloader))
    file.tls = issue_certificate(ca, tmp_path, "renewed")
    file.write()
    checked: ProxyConfig = load_config(file.path)  # the supervisor's check passed...
    file.tls[0].unlink()  # ...and the certificate went before this worker read it
    order = ReloadOrder("r1", checked, ())
    answer = json.loads(await order.apply(reloader, []))
    assert answer["id"] == "r1"
    assert answer["ok"] is False
    assert "proxy.pem" in answer["message"]
