"""The drain as a user sees it: the real command (one worker, and a supervisor with two), a
real SIGTERM, real clients on loopback.

What is checked: the admin port stays up and answers 503 on ``/healthz`` and ``/readyz``
until the process exits; a client connecting at any moment of the drain is answered or
refused within a second, never left waiting for ``graceful_timeout_s`` (with
``drain_accept_s = 0`` the listening sockets close at once; with ``drain_accept_s > 0``
new HTTP/2 clients get SETTINGS then GOAWAY(NO_ERROR, last stream 0), HTTP/1.1 clients
one answer with ``connection: close``, and WebSocket upgrades 503, until the sockets
close); idle keep-alive connections close at once; an open tunnel keeps working until it
ends, and the process exits 0.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from websockets.sync.client import connect as ws_connect

from tests.helpers.frames import EMPTY_SETTINGS, PREFACE, frame
from tests.helpers.process import OutputWatcher, free_port
from tests.helpers.raw_h2 import read_frames_until

COMMAND = [sys.executable, "-m", "h2ws_proxy"]
#: How long a client connecting during the drain may wait for its answer or refusal.
PROMPT_S = 1.0
GRACEFUL_TIMEOUT_S = 20.0
HEADERS, SETTINGS, GOAWAY = 0x1, 0x4, 0x7
END_STREAM, END_HEADERS = 0x1, 0x4
#: HPACK, static table only: :method GET, :scheme http, :path /, :authority proxy.test.
GET_ROOT_BLOCK = b"\x82\x86\x84\x41\x0aproxy.test"

pytestmark = pytest.mark.socket


@dataclass
class Running:
    process: trio.Process
    output: OutputWatcher
    port: int
    admin_port: int
    workers: int


@asynccontextmanager
async def run_proxy(
    tmp_path: Path, *, workers: int, drain_accept_s: float
) -> AsyncIterator[Running]:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"workers = {workers}\n\n"
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{free_port()}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n'
        f"[limits]\ngraceful_timeout_s = {GRACEFUL_TIMEOUT_S}\ndrain_accept_s = {drain_accept_s}\n"
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config), "--demo-backend"], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    started = "workers.started n=2" if workers > 1 else "server.listening"
    try:
        listening = await output.expect(
            started + r" listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        yield Running(process, output, int(listening[1]), int(listening[2]), workers)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def admin_get(port: int, path: str) -> tuple[int, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
        answer = b""
        while data := await stream.receive_some(65536):
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def keep_alive_client(port: int) -> trio.SocketStream:
    """A client whose first answer came whole, now idle on its kept-alive connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = int(re.findall(rb"(?i)\r\ncontent-length: *(\d+)", head)[0])
    while len(body) < length:
        body += await stream.receive_some(65536)
    return stream


async def read_to_eof(stream: trio.abc.ReceiveStream) -> bytes:
    """Everything until EOF (a reset ends it too: the proxy may drop a backlog)."""
    data = b""
    try:
        while chunk := await stream.receive_some(65536):
            data += chunk
    except trio.BrokenResourceError:
        pass
    return data


async def h1_probe(
    port: int,
    request: bytes = b"GET / HTTP/1.1\r\nHost: proxy.test\r\n\r\n",
    *,
    told_to_go: bool = True,
) -> str:
    """A new HTTP/1.1 client during the drain: what it got (its answer's status line, the
    answer then the connection's end), within PROMPT_S. ``told_to_go``: the answer must
    say ``connection: close`` (false for a client the server may have accepted before the
    signal reached it: it is answered as usual, then closed as an idle connection)."""
    with trio.fail_after(PROMPT_S):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return "refused"
        async with stream:
            try:
                await stream.send_all(request)
            except trio.BrokenResourceError:
                return "reset"
            answer = await read_to_eof(stream)
    if not answer:
        return "closed"
    head = answer.partition(b"\r\n\r\n")[0]
    assert not told_to_go or b"\r\nconnection: close" in head.lower(), answer
    return head.split(b"\r\n")[0].decode()


async def h2_probe(port: int) -> list[tuple[int, int, int, bytes]]:
    """A new HTTP/2 client during the drain: the frames it got before EOF, within PROMPT_S."""
    with trio.fail_after(PROMPT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            request = frame(HEADERS, END_STREAM | END_HEADERS, 1, GET_ROOT_BLOCK)
            await stream.send_all(PREFACE + EMPTY_SETTINGS + request)
            frames = await read_frames_until(stream, {GOAWAY})
            await read_to_eof(stream)  # then the proxy closes
            return frames


async def refused(port: int) -> bool:
    with trio.fail_after(PROMPT_S):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return True
        await stream.aclose()
        return False


def _open_tunnel_across(
    running: Running, opened: trio.Event, drained: trio.Event, answers: list[str]
) -> None:
    """A WebSocket opened before the drain, used during it, closed by the client."""
    with ws_connect(f"ws://127.0.0.1:{running.port}/", open_timeout=10) as ws:
        ws.send("before")
        answers.append(str(ws.recv(10)))
        trio.from_thread.run_sync(opened.set)
        trio.from_thread.run(drained.wait)
        ws.send("while draining")
        answers.append(str(ws.recv(10)))


async def _wait_draining(running: Running) -> None:
    for _ in range(running.workers):
        await running.output.expect(r"server\.draining ")


async def _wait_listeners_closed(running: Running) -> None:
    for _ in range(running.workers):
        await running.output.expect(r"server\.listeners_closed")


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_refuses_new_clients_at_once_and_keeps_the_admin_port_up(
    tmp_path: Path, workers: int
) -> None:
    with trio.fail_after(60):
        async with run_proxy(tmp_path, workers=workers, drain_accept_s=0) as running:
            assert await admin_get(running.admin_port, "/readyz") == (200, b"ready\n")
            assert await admin_get(running.admin_port, "/healthz") == (200, b"ok\n")
            idle = await keep_alive_client(running.port)

            opened, drained, answers = trio.Event(), trio.Event(), []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    trio.to_thread.run_sync,
                    _open_tunnel_across,
                    running,
                    opened,
                    drained,
                    answers,
                )
                await opened.wait()
                running.process.send_signal(signal.SIGTERM)
                # Clients arriving from the very first moment: none waits.
                outcomes = [await h1_probe(running.port, told_to_go=False) for _ in range(10)]
                assert set(outcomes) <= {"refused", "reset", "closed", "HTTP/1.1 200 OK"}, outcomes
                with trio.fail_after(PROMPT_S):  # the idle keep-alive connection: closed at once
                    assert await read_to_eof(idle) == b""
                await _wait_listeners_closed(running)
                assert await refused(running.port)
                # The tunnel keeps the process draining: the admin port answers, 503.
                assert await admin_get(running.admin_port, "/healthz") == (503, b"draining\n")
                assert await admin_get(running.admin_port, "/readyz") == (503, b"draining\n")
                drained.set()
            assert answers == ["before", "while draining"]
            assert await running.process.wait() == 0
            await running.output.expect(r"tunnel\.closed .*front=h1 .*client=127\.0\.0\.1:\d+ ")
            assert "end=clean" in running.output.text


@pytest.mark.parametrize("workers", [1, 2])
async def test_drain_accept_s_tells_new_clients_to_go_then_refuses_them(
    tmp_path: Path, workers: int
) -> None:
    with trio.fail_after(60):
        async with run_proxy(tmp_path, workers=workers, drain_accept_s=3.0) as running:
            holder = await trio.open_tcp_stream("127.0.0.1", running.port)  # keeps it draining
            await holder.send_all(b"GET / HTTP/1.1\r\nHost: proxy.test\r\n")  # head unfinished
            running.process.send_signal(signal.SIGTERM)
            await _wait_draining(running)
            started = trio.current_time()

            frames = await h2_probe(running.port)
            kinds = [kind for kind, _, stream_id, _ in frames if stream_id == 0]
            assert kinds[0] == SETTINGS, frames
            assert kinds[-1] == GOAWAY, frames
            goaway = frames[-1][3]
            assert int.from_bytes(goaway[:4], "big") == 0  # last stream id: none processed
            assert int.from_bytes(goaway[4:8], "big") == 0  # NO_ERROR
            assert not [f for f in frames if f[2] == 1], "stream 1 got no answer"

            assert await h1_probe(running.port) == "HTTP/1.1 200 OK"
            upgrade = (
                b"GET / HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            assert (await h1_probe(running.port, upgrade)).startswith("HTTP/1.1 503")
            assert await admin_get(running.admin_port, "/readyz") == (503, b"draining\n")
            assert trio.current_time() - started < 3.0, "probed within drain_accept_s"

            await _wait_listeners_closed(running)
            assert trio.current_time() - started >= 2.5
            assert await refused(running.port)
            await holder.aclose()
            assert await running.process.wait() == 0
            text = running.output.text
            assert re.search(r"tunnel\.refused .*status=503 ", text), text


async def test_sigterm_ends_the_process_even_with_an_idle_keep_alive_client(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with run_proxy(tmp_path, workers=1, drain_accept_s=0) as running:
            idle = await keep_alive_client(running.port)
            running.process.send_signal(signal.SIGTERM)
            started = trio.current_time()
            assert await running.process.wait() == 0
            assert trio.current_time() - started < GRACEFUL_TIMEOUT_S / 2
            await idle.aclose()
