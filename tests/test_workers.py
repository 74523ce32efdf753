"""``workers = 2``: the real command, a supervisor and two worker processes on one port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from websockets.sync.client import connect as ws_connect

from tests.helpers.h2_client import open_h2_client
from tests.helpers.process import OutputWatcher, free_port

COMMAND = [sys.executable, "-m", "h2ws_proxy"]
#: Bounds the "until both workers have served one" loop; a fair kernel needs a few.
MAX_CONNECTIONS = 200

pytestmark = pytest.mark.socket


@dataclass
class Running:
    process: trio.Process
    output: OutputWatcher
    port: int
    admin_port: int
    pids: dict[int, int]  #: worker index -> pid


def _write_config(tmp_path: Path, listener: str = "127.0.0.1:0") -> Path:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'workers = 2\n\n[[listener]]\nbind = "{listener}"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{free_port()}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n[limits]\ngraceful_timeout_s = 5.0\n'
    )
    return config


@asynccontextmanager
async def run_proxy(tmp_path: Path) -> AsyncIterator[Running]:
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(_write_config(tmp_path)), "--demo-backend"],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    try:
        started = await output.expect(
            r"workers.started n=2 listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        found = re.findall(r"server.listening worker=(\d+) pid=(\d+)", output.text)
        pids = {int(index): int(pid) for index, pid in found}
        assert sorted(pids) == [0, 1]
        yield Running(process, output, int(started[1]), int(started[2]), pids)
    finally:
        if process.returncode is None:
            process.kill()  # its workers see their control channel close and drain
            await process.wait()


def _h1_echo(port: int) -> str:
    with ws_connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as ws:
        ws.send("hello")
        return str(ws.recv(timeout=10))


async def _echo_until_served_by(running: Running, worker: int) -> int:
    """Open one tunnel after another until ``worker`` serves one; how many it took."""
    for attempt in range(1, MAX_CONNECTIONS + 1):
        assert await trio.to_thread.run_sync(_h1_echo, running.port) == "hello"
        closed = await running.output.expect(r"tunnel.closed worker=(\d+) pid=(\d+) ")
        if int(closed[1]) == worker:
            assert int(closed[2]) == running.pids[worker]
            return attempt
    raise AssertionError(f"worker {worker} served none of {MAX_CONNECTIONS} connections")


async def _admin_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_both_workers_serve_the_port_and_a_killed_worker_is_restarted(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with run_proxy(tmp_path) as running:
            await _echo_until_served_by(running, 0)
            await _echo_until_served_by(running, 1)
            status, body = await _admin_get(running.admin_port, "/stats")
            stats = json.loads(body)
            assert status == 200
            assert [(w["worker"], w["pid"], w["ready"]) for w in stats["workers"]] == [
                (0, running.pids[0], True),
                (1, running.pids[1], True),
            ]
            assert stats["connections"] == stats["tunnels"] == stats["unexpected_errors"] == 0

            killed = running.pids[1]
            os.kill(killed, signal.SIGKILL)
            await running.output.expect(rf"worker.exited worker=1 pid={killed} code=-9 ")
            # Worker 0 keeps serving the port while worker 1 is down.
            assert await trio.to_thread.run_sync(_h1_echo, running.port) == "hello"
            restarted = await running.output.expect(
                rf"worker.restarted worker=1 pid=(\d+) previous_pid={killed} code=-9 restarts=1"
            )
            running.pids[1] = int(restarted[1])
            await running.output.expect(rf"server.listening worker=1 pid={restarted[1]} ")
            await _echo_until_served_by(running, 1)

            running.process.send_signal(signal.SIGTERM)
            assert await running.process.wait() == 0
            await running.output.expect(r"workers.stopped code=0")


async def test_sigterm_drains_every_worker_and_an_open_tunnel_finishes(tmp_path: Path) -> None:
    async def drain(running: Running) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", running.port)
        async with open_h2_client(stream) as client:
            running.process.send_signal(signal.SIGTERM)
            await client.wait_for(lambda: client.terminated is not None)  # GOAWAY
            assert client.terminated is not None
            assert client.terminated.error_code == 0
        assert await _admin_get(running.admin_port, "/healthz") == (503, b"draining\n")
        for _ in range(2):
            await running.output.expect(r"server.draining worker=\d")

    def tunnel_across_the_drain(running: Running) -> None:
        with ws_connect(f"ws://127.0.0.1:{running.port}/", open_timeout=10) as ws:
            ws.send("before")
            assert ws.recv(10) == "before"
            trio.from_thread.run(drain, running)
            ws.send("while draining")
            assert ws.recv(10) == "while draining"
            assert running.process.returncode is None

    with trio.fail_after(30):
        async with run_proxy(tmp_path) as running:
            await trio.to_thread.run_sync(tunnel_across_the_drain, running)
            assert await running.process.wait() == 0
            await running.output.expect(r"tunnel.closed worker=\d .*front=h1 .*end=clean")
            await running.output.expect(r"workers.stopped code=0")
            text = running.output.text
            assert set(re.findall(r"worker.exited worker=(\d) pid=\d+ code=0", text)) == {"0", "1"}


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (Z: exited, not reaped), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rpartition(")")[2].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
async def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with run_proxy(tmp_path) as running:
            running.process.kill()
            await running.process.wait()
            text = await running.output.read_to_end()  # EOF: both workers have exited
            for index, pid in running.pids.items():
                assert f"worker.orphaned worker={index} pid={pid}" in text
                assert f"server.stopped worker={index} pid={pid}" in text
                for _ in range(1000):  # stderr closes just before the process exits
                    if _state(pid) in (None, "Z"):
                        break
                    await trio.sleep(0.01)
                else:
                    raise AssertionError(f"worker {index} (pid {pid}) is still running")


def test_a_port_in_use_exits_2_with_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _write_config(tmp_path, f"127.0.0.1:{port}")
        result = subprocess.run(
            [*COMMAND, "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"h2ws-proxy: error: listener 127.0.0.1:{port}: cannot listen: Address already in use"
    )


def test_check_shows_the_workers_and_the_option_overrides_the_config(tmp_path: Path) -> None:
    config = str(_write_config(tmp_path))
    result = subprocess.run(
        [*COMMAND, "--config", config, "--check", "--workers", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "workers 3: a supervisor and 3 processes" in result.stdout


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0", "0 is out of range; use a value from 1 to 64"),
        ("65", "65 is out of range; use a value from 1 to 64"),
        ("two", 'write a number or "auto"'),
    ],
)
def test_a_bad_workers_option_exits_2(tmp_path: Path, value: str, problem: str) -> None:
    result = subprocess.run(
        [*COMMAND, "--config", str(_write_config(tmp_path)), "--workers", value, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"h2ws-proxy: error: --workers {value}: {problem}"
