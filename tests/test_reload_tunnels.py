"""Reload under load, the real command: 500 tunnels keep echoing, byte for byte, through 20
reloads (SIGHUP and ``POST /reload`` in turn) that add and remove routes, renew the
certificate, add and remove a listener, and one invalid file that changes nothing; new
connections see each new route and the new certificate. With one process and with
``workers = 2`` (the supervisor checks, the workers switch)."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trustme

from h2ws_proxy.config import SocketAddress
from tests.helpers.h2_client import H2TestClient, WebSocketStream, open_h2_client
from tests.helpers.process import free_port
from tests.helpers.reload import ConfigFile, issue_certificate, post_reload, tls_connect

pytestmark = pytest.mark.socket

COMMAND = [sys.executable, "-m", "h2ws_proxy"]
CONNECTIONS = 5
TUNNELS_PER_CONNECTION = 100
RELOADS = 20
INVALID_AT, CERTIFICATE_AT, LISTENER_ADDED_AT, LISTENER_REMOVED_AT = 8, 10, 12, 14


@dataclass
class Running:
    process: trio.Process
    log: Path
    address: SocketAddress
    admin: SocketAddress

    async def wait_for_lines(self, pattern: str, count: int) -> list[str]:
        """Wait until the log holds ``count`` lines matching ``pattern``; those lines."""
        compiled = re.compile(pattern)
        with trio.fail_after(30):
            while True:
                lines = [
                    line for line in self.log.read_text().splitlines() if compiled.search(line)
                ]
                if len(lines) >= count:
                    return lines
                assert self.process.returncode is None, self.log.read_text()
                await trio.sleep(0.05)


@asynccontextmanager
async def run_proxy(file: ConfigFile, log: Path) -> AsyncIterator[Running]:
    with log.open("wb") as output:
        process = await trio.lowlevel.open_process(
            [*COMMAND, "--config", str(file.path), "--demo-backend"], stderr=output
        )
    running = Running(process, log, SocketAddress("", 0), SocketAddress("", 0))
    try:
        started = "workers.started n=2" if file.workers > 1 else "server.listening"
        [line] = await running.wait_for_lines(started, 1)
        match = re.search(r"listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)", line)
        assert match is not None, line
        running.address = SocketAddress("127.0.0.1", int(match[1]))
        running.admin = SocketAddress("127.0.0.1", int(match[2]))
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@dataclass
class Tunnel:
    ws: WebSocketStream
    name: str
    sent: int = 0
    received: int = 0

    async def echo(self, round_: int) -> None:
        message = f"{self.name} round {round_} ".ljust(64 + round_, "x")
        await self.ws.send(message)
        self.sent += len(message)
        answer = await self.ws.receive()
        assert answer == message, (self.name, round_)
        self.received += len(answer)


@dataclass
class Tunnels:
    all: list[Tunnel] = field(default_factory=list)

    async def open(self, stack: AsyncExitStack, running: Running, ca: trustme.CA) -> None:
        for connection in range(CONNECTIONS):
            stream, _ = await tls_connect(running.address, ca)
            client = await stack.enter_async_context(open_h2_client(stream))
            async with trio.open_nursery() as nursery:
                for index in range(TUNNELS_PER_CONNECTION):
                    nursery.start_soon(self._open_one, client, f"c{connection}t{index}")

    async def _open_one(self, client: H2TestClient, name: str) -> None:
        ws = await client.websocket("/base", scheme="https")
        assert ws.status == 200, name
        self.all.append(Tunnel(ws, name))

    async def echo(self, round_: int) -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for tunnel in self.all:
                    nursery.start_soon(tunnel.echo, round_)


async def _serves(address: SocketAddress, ca: trustme.CA, path: str) -> tuple[int | None, str]:
    """A new connection's status for a WebSocket to ``path``, and its certificate's name."""
    stream, served = await tls_connect(address, ca)
    async with open_h2_client(stream) as client:
        ws = await client.websocket(path, scheme="https")
        if ws.status == 200:
            await ws.send(path)
            assert await ws.receive() == path
        return ws.status, served


@pytest.mark.parametrize("workers", [1, 2])
async def test_500_tunnels_echo_through_20_reloads(
    tmp_path: Path, ca: trustme.CA, workers: int
) -> None:
    backend = f"http://127.0.0.1:{free_port()}"
    file = ConfigFile(
        tmp_path / "proxy.toml",
        routes=[("/base", backend)],
        tls=issue_certificate(ca, tmp_path, "first"),
        workers=workers,
    )
    file.write()
    tunnels = Tunnels()
    with trio.fail_after(120):
        async with run_proxy(file, tmp_path / "proxy.log") as running, AsyncExitStack() as stack:
            await tunnels.open(stack, running, ca)
            assert len(tunnels.all) == CONNECTIONS * TUNNELS_PER_CONNECTION
            await tunnels.echo(0)
            reloaded, failed, certificate = 0, 0, "first"
            extra_port: int | None = None
            for round_ in range(1, RELOADS + 1):
                file.routes = [("/base", backend), (f"/r{round_}", backend)]
                if round_ == CERTIFICATE_AT:
                    issue_certificate(ca, tmp_path, "second")  # renewed at the same paths
                    certificate = "second"
                if round_ == LISTENER_ADDED_AT:
                    file.listeners = ["127.0.0.1:0", "127.0.0.1:0"]
                if round_ == LISTENER_REMOVED_AT:
                    file.listeners = ["127.0.0.1:0"]
                file.write()
                if round_ == INVALID_AT:
                    file.path.write_text(file.path.read_text() + "\n[limits.typo]\n")
                if round_ % 2:  # odd rounds by signal
                    running.process.send_signal(signal.SIGHUP)
                    pattern = "config.reload_failed" if round_ == INVALID_AT else "config.reloaded"
                    count = failed + 1 if round_ == INVALID_AT else reloaded + 1
                    await running.wait_for_lines(rf" {pattern} (?!worker=)", count)
                    body = ""
                else:
                    status, body = await post_reload(running.admin)
                    assert status == (500 if round_ == INVALID_AT else 200), body
                if round_ == INVALID_AT:
                    failed += 1
                    assert body.startswith(f"{file.path}:"), body
                    assert "limits.typo" in body
                    # Nothing changed: the last round's route still serves, this one's not.
                    assert await _serves(running.address, ca, f"/r{round_ - 1}") == (
                        200,
                        certificate,
                    )
                    assert (await _serves(running.address, ca, f"/r{round_}"))[0] == 404
                else:
                    reloaded += 1
                    assert await _serves(running.address, ca, f"/r{round_}") == (200, certificate)
                    if round_ - 1 != INVALID_AT:
                        assert (await _serves(running.address, ca, f"/r{round_ - 1}"))[0] == 404
                if round_ == CERTIFICATE_AT:
                    assert "certificates=127.0.0.1:0" in body
                if round_ == LISTENER_ADDED_AT:
                    listening = dict(line.split("=", 1) for line in body.splitlines())["listening"]
                    extra_port = int(listening.split(",")[1].rsplit(":", 1)[1])
                    extra = SocketAddress("127.0.0.1", extra_port)
                    assert await _serves(extra, ca, f"/r{round_}") == (200, certificate)
                if round_ == LISTENER_REMOVED_AT:
                    assert extra_port is not None
                    with pytest.raises(OSError, match="connect"):
                        await trio.open_tcp_stream("127.0.0.1", extra_port)
                await tunnels.echo(round_)
            assert reloaded == RELOADS - 1
            if workers > 1:  # SIGHUP to a worker itself: ignored, it serves on
                pid = re.search(r"server.listening worker=0 pid=(\d+)", running.log.read_text())
                assert pid is not None
                os.kill(int(pid[1]), signal.SIGHUP)
                await running.wait_for_lines("worker.sighup_ignored worker=0", 1)
                await tunnels.echo(RELOADS + 1)
            for tunnel in tunnels.all:
                assert tunnel.sent == tunnel.received > 0
                assert tunnel.ws.state.reset_code is None
                assert not tunnel.ws.state.ended
        log = running.log.read_text()
        assert "unexpected_error" not in log
        assert "worker.exited" not in log
