"""``GET /metrics`` with ``workers = 2``: the real command; the supervisor adds up its
workers' samples, and a worker killed and restarted does not take its counts with it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.helpers.backends import websockets_backend
from tests.helpers.h2_client import open_h2_client
from tests.helpers.process import OutputWatcher, free_port
from tests.test_workers import COMMAND, MAX_CONNECTIONS, Running

pytestmark = pytest.mark.socket

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@asynccontextmanager
async def run_proxy(tmp_path: Path, backend_port: int) -> AsyncIterator[Running]:
    config = tmp_path / "proxy.toml"
    config.write_text(
        'workers = 2\n\n[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/ws"\nbackend = "http://127.0.0.1:{backend_port}"\n\n'
        f'[[route]]\npath = "/down"\nbackend = "http://127.0.0.1:{free_port()}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n[limits]\ngraceful_timeout_s = 5.0\n'
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config)], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    try:
        started = await output.expect(
            r"workers.started n=2 listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        found = re.findall(r"server.listening worker=(\d+) pid=(\d+)", output.text)
        pids = {int(index): int(pid) for index, pid in found}
        yield Running(process, output, int(started[1]), int(started[2]), pids)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def scrape(admin_port: int) -> Samples:
    stream = await trio.open_tcp_stream("127.0.0.1", admin_port)
    async with stream:
        await stream.send_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n")
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"200"
    assert b"version=0.0.4" in head
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def h1_echo(port: int) -> None:
    with ws_connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"


async def tunnel_served_by(running: Running, worker: int) -> int:
    """Open tunnels until ``worker`` served one; how many were opened."""
    for attempt in range(1, MAX_CONNECTIONS + 1):
        await trio.to_thread.run_sync(h1_echo, running.port)
        closed = await running.output.expect(r"tunnel.closed worker=(\d+) pid=(\d+) ")
        if int(closed[1]) == worker:
            return attempt
    raise AssertionError(f"worker {worker} served none of {MAX_CONNECTIONS} tunnels")


async def refusals(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with open_h2_client(stream) as client:
        assert (await client.websocket("/nothing")).status == 404
        assert (await client.websocket("/down")).status == 502


def clean(samples: Samples) -> float:
    return samples.get(key("h2ws_tunnels_total", route="/ws", front="h1", end="clean"), 0)


async def test_the_supervisor_adds_up_its_workers_and_keeps_a_dead_workers_counts(
    tmp_path: Path,
) -> None:
    with websockets_backend() as backend_port, trio.fail_after(60):
        async with run_proxy(tmp_path, backend_port) as running:
            tunnels = await tunnel_served_by(running, 0)
            tunnels += await tunnel_served_by(running, 1)
            await refusals(running.port)
            for _ in range(2):
                await running.output.expect(r"tunnel.refused worker=\d")
            samples = await scrape(running.admin_port)
            assert clean(samples) == tunnels
            assert samples[key("h2ws_handshakes_total", route="/ws", outcome="ok")] == tunnels
            assert samples[key("h2ws_handshakes_total", route="-", outcome="no_route")] == 1
            assert samples[key("h2ws_handshakes_total", route="/down", outcome="refused")] == 1
            assert samples[key("h2ws_tunnel_duration_seconds_count")] == tunnels
            assert samples[key("h2ws_tunnels_active", route="/ws", front="h1")] == 0
            assert samples[key("process_open_fds")] > 0  # the supervisor's own

            killed = running.pids[1]
            os.kill(killed, signal.SIGKILL)
            await running.output.expect(rf"worker.exited worker=1 pid={killed} code=-9 ")
            restarted = await running.output.expect(
                rf"worker.restarted worker=1 pid=(\d+) previous_pid={killed} code=-9 restarts=1"
            )
            await running.output.expect(rf"server.listening worker=1 pid={restarted[1]} ")
            after_restart = await scrape(running.admin_port)
            assert clean(after_restart) == tunnels  # the dead worker's counts stayed
            assert after_restart[key("h2ws_handshakes_total", route="-", outcome="no_route")] == 1

            more = await tunnel_served_by(running, 1)  # the new worker 1 counts from 0
            assert clean(await scrape(running.admin_port)) == tunnels + more

            running.process.send_signal(signal.SIGTERM)
            assert await running.process.wait() == 0
