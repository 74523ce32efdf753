"""``GET /readyz``: 200 once every listener accepts and every route has a server up; 503
with the reason while starting, draining, or when a route has none (``/healthz`` stays
liveness). The real command with one worker and with two (the supervisor asks each
worker), and the reasons themselves in-process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.routing import Router
from h2ws_proxy.server.admin import not_ready
from tests.helpers.process import OutputWatcher, free_port
from tests.helpers.setup import backend_url, make_config
from tests.test_drain import admin_get

COMMAND = [sys.executable, "-m", "h2ws_proxy"]


async def test_not_ready_while_starting_or_draining() -> None:
    config = make_config(("/", backend_url(free_port())))
    server = ServerContext(config=config, router=Router(config.routes), shutdown=trio.Event())
    assert not_ready(server) == "starting"
    server.accepting.set()
    assert not_ready(server) is None
    server.shutdown.set()
    assert not_ready(server) == "draining"


@pytest.mark.socket
@pytest.mark.parametrize("workers", [1, 2])
async def test_readyz_is_503_while_a_route_has_no_server_up(tmp_path: Path, workers: int) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        f"workers = {workers}\n\n"
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[backend]]\nname = "app"\nservers = ["{backend_url(free_port())}"]\n'
        "[backend.health_check]\ninterval_s = 0.3\ntimeout_s = 0.2\nunhealthy = 1\n\n"
        '[[route]]\npath = "/"\nbackend = "app"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n[limits]\ngraceful_timeout_s = 5.0\n'
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config)], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    try:
        with trio.fail_after(30):
            admin_port = int((await output.expect(r" admin=127\.0\.0\.1:(\d+)"))[1])
            # Nothing listens there: each worker's check fails (maybe before it said ready).
            while output.text.count("backend.server_down ") < workers:
                await output.expect(r"backend\.server_down ")
            status, body = await admin_get(admin_port, "/readyz")
            assert status == 503
            reason = "route /: no server of backend app is up\n"
            assert body == (reason.encode() if workers == 1 else b"worker 0: " + reason.encode())
            assert await admin_get(admin_port, "/healthz") == (200, b"ok\n")  # alive
    finally:
        process.kill()
        await process.wait()
