"""Out of file descriptors: the real command under a lowered limit keeps serving.

The proxy runs as its own process with a low ``RLIMIT_NOFILE`` (soft and hard, so raising
the soft one at start cannot lift it), and the test takes every descriptor it has left
with idle connections. A new client then waits (accept fails with EMFILE, and the proxy
backs off), the log says so at most once a second, and once descriptors free up the
waiting client is served.
"""

from __future__ import annotations

import json
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.helpers.backends import BackendConnection, ScriptedBackend
from tests.helpers.process import OutputWatcher

COMMAND = [sys.executable, "-m", "h2ws_proxy"]
#: Enough for the interpreter, trio and a few connections, far below what the config needs.
DESCRIPTOR_LIMIT = 96


def _lower_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTOR_LIMIT, DESCRIPTOR_LIMIT))


async def _answer_204(conn: BackendConnection) -> None:
    while True:
        await conn.read_upgrade()  # any request head
        await conn.stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")


@pytest.mark.socket
async def test_at_emfile_clients_wait_and_are_served_once_descriptors_free_up(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    backend = ScriptedBackend(_answer_204)
    await nursery.start(backend.run)
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/"\nbackend = "{backend.url}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n'
        "[limits]\nmax_connections_per_client = 0\nclient_handshake_timeout_s = 60\n"
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config)],
        stderr=subprocess.PIPE,
        preexec_fn=_lower_descriptor_limit,
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    held: list[trio.SocketStream] = []
    try:
        await output.expect(rf"server.descriptor_limit_low limit={DESCRIPTOR_LIMIT} ")
        listening = await output.expect(
            r"server.listening listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        port, admin_port = int(listening[1]), int(listening[2])
        # The admin connection is opened first: it needs a descriptor of the proxy's too.
        admin = await trio.open_tcp_stream("127.0.0.1", admin_port)
        # Take every descriptor the proxy has left with connections that say nothing yet.
        for _ in range(DESCRIPTOR_LIMIT):
            held.append(await trio.open_tcp_stream("127.0.0.1", port))
        failed = await output.expect(r"server.accept_failed .*Too many open files")
        began = trio.current_time()
        waiting = await trio.open_tcp_stream("127.0.0.1", port)  # the backlog takes it
        await waiting.send_all(b"GET /waiting HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        with trio.move_on_after(2.0) as not_served:  # the observation window
            await waiting.receive_some()
        assert not_served.cancelled_caught, "served without a free descriptor?"
        for stream in held[:20]:
            await stream.aclose()
        with trio.fail_after(10):
            answer = await waiting.receive_some()
        assert answer.startswith(b"HTTP/1.1 204 "), answer
        elapsed = trio.current_time() - began
        # The proxy retried accept many times a second, and said so at most once a second.
        lines = re.findall(r"server.accept_failed .*", output.text[failed.start() :])
        assert 1 <= len(lines) <= elapsed + 2, lines
        await admin.send_all(b"GET /stats HTTP/1.1\r\nHost: admin\r\n\r\n")
        stats = json.loads((await admin.receive_some(4096)).split(b"\r\n\r\n", 1)[1])
        assert stats["accept_failures"] > len(lines) + 5, stats
        await admin.aclose()
        await waiting.aclose()
    finally:
        for stream in held:
            await trio.aclose_forcefully(stream)
        if process.returncode is None:
            process.kill()
            await process.wait()
