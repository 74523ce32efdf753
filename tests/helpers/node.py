"""Run the Node.js test peers in ``tests/node/`` from trio tests.

* :func:`require_node` skips the test when ``node`` or ``tests/node/node_modules`` is
  missing, except under CI (the ``CI`` environment variable set to a non-empty value):
  there a missing peer is a setup error, so the test fails instead of being silently
  skipped.
* :func:`start_node_backend` starts ``ws_echo_backend.mjs`` as a task of the given
  nursery and returns its port (or its unix socket path) once it printed its address
  line; the process is terminated when that nursery is cancelled (the pytest-trio
  ``nursery`` fixture is cancelled at the end of the test). :func:`node_backend` is the
  same as an async context manager with its own nursery.
* :func:`run_h2ws_client` runs ``h2ws_client.mjs`` to completion and returns its JSON
  output line as a dict, plus ``exit_code`` and ``stderr``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE_MODULES = NODE_DIR / "node_modules"
BACKEND_SCRIPT = NODE_DIR / "ws_echo_backend.mjs"
CLIENT_SCRIPT = NODE_DIR / "h2ws_client.mjs"
HTTP_BACKEND_SCRIPT = NODE_DIR / "http_backend.mjs"
INSTALL_HINT = "run `npm --prefix tests/node ci` (needs Node >= 20 on PATH)"

#: How long a backend may take to print its address line.
BACKEND_START_TIMEOUT_S = 15.0


def _running_under_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_node() -> str:
    """The path of ``node``; skips (or under CI fails) the test when a peer is unusable."""
    node = shutil.which("node")
    problems = []
    if node is None:
        problems.append("`node` is not on PATH")
    if not (NODE_MODULES / "ws").is_dir():
        problems.append(f"{NODE_MODULES} has no `ws` package")
    if problems:
        message = f"Node.js test peers unavailable: {'; '.join(problems)}; {INSTALL_HINT}"
        if _running_under_ci():
            pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(message)
    assert node is not None
    return node


async def _read_line(stream: trio.abc.ReceiveStream) -> bytes:
    """Bytes up to the first newline (without it); whatever came if EOF is first."""
    data = bytearray()
    while b"\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return bytes(data.split(b"\n", 1)[0])


async def start_node_backend(
    nursery: trio.Nursery, *args: str, script: Path = BACKEND_SCRIPT
) -> int | str:
    """Start ``ws_echo_backend.mjs`` with ``args`` in ``nursery``.

    Returns the TCP port, or the socket path with ``--unix``. Readiness is the address
    line on stdout, never a sleep. stdin stays an open pipe (the backend exits when it
    closes); stderr is inherited so pytest shows the backend's log on failure. Cancelling
    ``nursery`` terminates the process (``trio.run_process``: SIGTERM, then SIGKILL).
    """
    node = require_node()
    command = [node, str(script), *args]
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            check=False,
        )
    )
    assert process.stdout is not None
    with trio.move_on_after(BACKEND_START_TIMEOUT_S):
        line = await _read_line(process.stdout)
        try:
            announced = json.loads(line)
        except ValueError:
            announced = None
        if isinstance(announced, dict):
            if "port" in announced:
                return int(announced["port"])
            if "unix" in announced:
                return str(announced["unix"])
        process.kill()
        raise AssertionError(
            f"{' '.join(command)} did not announce its address: stdout line {line!r}, "
            f"exit code {process.poll()} (its stderr is in the captured output)"
        )
    process.kill()
    raise AssertionError(
        f"{' '.join(command)} printed no address line within {BACKEND_START_TIMEOUT_S} s"
    )


@asynccontextmanager
async def node_backend(*args: str) -> AsyncIterator[int | str]:
    """:func:`start_node_backend` in a nursery of its own, stopped on exit."""
    async with trio.open_nursery() as nursery:
        yield await start_node_backend(nursery, *args)
        nursery.cancel_scope.cancel()


async def run_h2ws_client(*args: str, timeout_s: float = 60) -> dict[str, Any]:
    """Run ``h2ws_client.mjs`` with ``args``; its last JSON line, plus exit code and stderr.

    The returned dict is the client's output with two keys added: ``exit_code`` (0 ok,
    1 not ok, 2 unexpected error, 3 no-connect-protocol) and ``stderr`` (decoded). Pass a
    ``--timeout-ms`` below ``timeout_s`` so that the client reports its own timeout.
    """
    node = require_node()
    command = [node, str(CLIENT_SCRIPT), *args]
    with trio.fail_after(timeout_s):
        completed = await trio.run_process(
            command,
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout = completed.stdout.decode("utf-8", "replace")
    stderr = completed.stderr.decode("utf-8", "replace")
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError) as error:
        raise AssertionError(
            f"h2ws_client printed no JSON line (exit code {completed.returncode}).\n"
            f"command: {' '.join(command)}\nstdout: {stdout!r}\nstderr: {stderr}"
        ) from error
    assert isinstance(result, dict), f"h2ws_client output is not an object: {lines[-1]!r}\n{stderr}"
    result["exit_code"] = completed.returncode
    result["stderr"] = stderr
    return result
