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
* :func:`start_node_peer` starts any of the long-running peers (``web_backend.mjs``,
  ``socketio_server.mjs``...) the same way and returns a :class:`NodePeer`, whose later
  stdout lines (one JSON object each) the test reads with :meth:`NodePeer.next_event`.
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
WEB_BACKEND_SCRIPT = NODE_DIR / "web_backend.mjs"
SOCKETIO_SERVER_SCRIPT = NODE_DIR / "socketio_server.mjs"
SOCKETIO_CLIENT_SCRIPT = NODE_DIR / "socketio_client.mjs"
HTTP_BACKEND_SCRIPT = NODE_DIR / "http_backend.mjs"
INSTALL_HINT = "run `npm --prefix tests/node ci` (needs Node >= 20 on PATH)"

#: How long a backend may take to print its address line.
BACKEND_START_TIMEOUT_S = 15.0


def _running_under_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_node(*packages: str) -> str:
    """The path of ``node``; skips (or under CI fails) the test when a peer is unusable.

    ``packages`` are the npm packages the test's peers import (``ws`` is always checked).
    """
    node = shutil.which("node")
    problems = []
    if node is None:
        problems.append("`node` is not on PATH")
    for package in ("ws", *packages):
        if not (NODE_MODULES / package).is_dir():
            problems.append(f"{NODE_MODULES} has no `{package}` package")
    if problems:
        message = f"Node.js test peers unavailable: {'; '.join(problems)}; {INSTALL_HINT}"
        if _running_under_ci():
            pytest.fail(f"{message} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(message)
    assert node is not None
    return node


class NodePeer:
    """A running Node peer: its process, the address it announced, its later stdout lines."""

    def __init__(self, process: trio.Process, command: list[str]) -> None:
        assert process.stdout is not None
        self.process = process
        self.command = command
        self.announced: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self._stdout = process.stdout
        self._buffer = bytearray()

    @property
    def port(self) -> int:
        return int(self.announced["port"])

    async def next_line(self) -> bytes | None:
        """The next stdout line (without its newline); None at EOF."""
        while b"\n" not in self._buffer:
            chunk = await self._stdout.receive_some(65536)
            if not chunk:
                if not self._buffer:
                    return None
                line, self._buffer = bytes(self._buffer), bytearray()
                return line
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        return line

    async def next_event(self) -> dict[str, Any]:
        """The next stdout line as a JSON object (also kept in :attr:`events`).

        Raises AssertionError at EOF (the peer died) or for a line that is not an object.
        Bound the wait with ``trio.fail_after``.
        """
        line = await self.next_line()
        if line is None:
            raise AssertionError(
                f"{' '.join(self.command)} ended its stdout (exit code {self.process.poll()}; "
                f"its stderr is in the captured output)"
            )
        try:
            event = json.loads(line)
        except ValueError as error:
            raise AssertionError(f"{self.command[1]} printed a non-JSON line {line!r}") from error
        assert isinstance(event, dict), f"{self.command[1]} printed {line!r}"
        self.events.append(event)
        return event


async def start_node_peer(
    nursery: trio.Nursery, script: Path, *args: str, packages: tuple[str, ...] = ()
) -> NodePeer:
    """Start ``node script args`` in ``nursery``; returns once it announced its address.

    The announcement is the first stdout line, a JSON object with ``port`` (or ``unix``),
    never a sleep. stdin stays an open pipe (the peers exit when it closes); stderr is
    inherited so pytest shows the peer's log on failure. Cancelling ``nursery`` terminates
    the process (``trio.run_process``: SIGTERM, then SIGKILL).
    """
    node = require_node(*packages)
    return await start_peer(nursery, [node, str(script), *args])


async def start_peer(nursery: trio.Nursery, command: list[str]) -> NodePeer:
    """:func:`start_node_peer` for any command that announces itself the same way (the
    Python backend process of ``ws_echo_process.py`` too)."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            check=False,
        )
    )
    peer = NodePeer(process, command)
    line: bytes | None = None
    with trio.move_on_after(BACKEND_START_TIMEOUT_S):
        line = await peer.next_line()
        try:
            announced = json.loads(line or b"")
        except ValueError:
            announced = None
        if isinstance(announced, dict) and ("port" in announced or "unix" in announced):
            peer.announced = announced
            return peer
    process.kill()
    raise AssertionError(
        f"{' '.join(command)} did not announce its address within "
        f"{BACKEND_START_TIMEOUT_S} s: stdout line {line!r}, exit code {process.poll()} "
        f"(its stderr is in the captured output)"
    )


async def start_node_backend(
    nursery: trio.Nursery, *args: str, script: Path = BACKEND_SCRIPT
) -> int | str:
    """Start ``script`` (the ``ws`` echo backend unless told) with ``args`` in ``nursery``
    (see :func:`start_node_peer`).

    Returns the TCP port, or the socket path with ``--unix``.
    """
    peer = await start_node_peer(nursery, script, *args)
    if "port" in peer.announced:
        return peer.port
    return str(peer.announced["unix"])


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
    return await run_node_script(CLIENT_SCRIPT, *args, timeout_s=timeout_s)


async def run_node_script(
    script: Path, *args: str, timeout_s: float = 60, packages: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run ``node script args`` to completion; its last stdout line as a JSON object.

    Adds ``exit_code`` and ``stderr`` (decoded) to that object. ``packages``: as for
    :func:`require_node`.
    """
    node = require_node(*packages)
    command = [node, str(script), *args]
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
            f"{script.name} printed no JSON line (exit code {completed.returncode}).\n"
            f"command: {' '.join(command)}\nstdout: {stdout!r}\nstderr: {stderr}"
        ) from error
    assert isinstance(result, dict), (
        f"{script.name} output is not an object: {lines[-1]!r}\n{stderr}"
    )
    result["exit_code"] = completed.returncode
    result["stderr"] = stderr
    return result
