"""``h2ws-proxy connect`` as a user runs it: a subprocess fed on stdin, read on stdout, against
real servers (Node ``http2``, hypercorn, the proxy itself, HTTP/1.1-only backends).

Each run is bounded (``RUN_TIMEOUT_S``); interactive runs wait for the output they expect
(never a sleep) before they feed the next line or end stdin.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from h2ws_proxy.config import TLSConfig
from tests.conftest import StartProxy, WebSocketsBackend
from tests.helpers.process import OutputWatcher
from tests.helpers.rfc8441_backends import (
    hypercorn_server,
    node_h2_server,
    start_node_h2_server,
)
from tests.helpers.setup import backend_url, make_config

pytestmark = [pytest.mark.socket, pytest.mark.timeout(90)]

PROXY_SOURCE = Path(__file__).resolve().parents[2] / "proxy"
COMMAND = [sys.executable, "-m", "h2ws_proxy", "connect"]
RUN_TIMEOUT_S = 30


def _env() -> dict[str, str]:
    """This checkout's package first, whatever the environment says."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROXY_SOURCE), env.get("PYTHONPATH")]))
    return env


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


async def run_client(*args: str, stdin: bytes = b"") -> Result:
    """Run the command to its end with ``stdin`` (then end of file)."""
    with trio.fail_after(RUN_TIMEOUT_S):
        done = await trio.run_process(
            [*COMMAND, *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=_env(),
        )
    return Result(done.returncode, done.stdout.decode(), done.stderr.decode())


class Interactive:
    """A running client: :meth:`say` a line, :meth:`expect` output, :meth:`finish`."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.stdin = process.stdin
        self.out = OutputWatcher(process.stdout)
        self.err = OutputWatcher(process.stderr)

    async def say(self, line: str) -> None:
        await self.stdin.send_all(line.encode() + b"\n")

    async def expect(self, pattern: str) -> None:
        await self.out.expect(pattern)

    async def finish(self) -> Result:
        """End stdin (Ctrl-D) and wait for the exit."""
        await self.stdin.aclose()
        with trio.fail_after(RUN_TIMEOUT_S):
            code = await self.process.wait()
            stdout, stderr = await self.out.read_to_end(), await self.err.read_to_end()
        return Result(code, stdout, stderr)


async def start_client(nursery: trio.Nursery, *args: str) -> Interactive:
    process = await trio.lowlevel.open_process(
        [*COMMAND, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    nursery.start_soon(_kill_at_exit, process)
    return Interactive(process)


async def _kill_at_exit(process: trio.Process) -> None:
    try:
        await trio.sleep_forever()
    finally:
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def _one_line(result: Result) -> str:
    """The failure's single stderr line."""
    assert len(result.stderr_lines) == 1, result.stderr
    line = result.stderr_lines[0]
    assert line.startswith("h2ws-proxy connect: "), line
    return line


# ---- Node's http2 server ----


async def test_node_h2c_echo_and_the_path_taken() -> None:
    async with node_h2_server() as node:
        url = f"http://127.0.0.1:{node.port}/echo"
        result = await run_client("-v", url, stdin="hello\nhé wörld\n".encode())
    assert result.code == 0, result.stderr
    assert result.stdout == "hello\nhé wörld\n"
    for expected in (
        f"* connected to 127.0.0.1:{node.port} (cleartext)",
        "* server SETTINGS: ENABLE_CONNECT_PROTOCOL = 1",
        "* HTTP/2 stream 1: CONNECT :protocol websocket /echo",
        "< :status 200",
        "* stdin ended: sending Close 1000",
        "* server Close: 1000",
    ):
        assert expected in result.stderr_lines, result.stderr


async def test_node_tls_with_cacert(tls_config: TLSConfig, ca_file: Path) -> None:
    async with node_h2_server(tls=tls_config) as node:
        url = f"https://localhost:{node.port}/"
        result = await run_client("-v", "--cacert", str(ca_file), url, stdin=b"over tls\n")
    assert result.code == 0, result.stderr
    assert result.stdout == "over tls\n"
    assert f"* connected to localhost:{node.port} (TLS, ALPN: h2)" in result.stderr_lines


async def test_binary_hex_and_raw() -> None:
    async with node_h2_server() as node:
        url = f"http://127.0.0.1:{node.port}/"
        as_hex = await run_client("--binary", url, stdin=b"abc\n\xff\x00\n")
        raw = await run_client("--binary", "--raw", url, stdin=b"abc\n")
    assert (as_hex.code, as_hex.stdout) == (0, "616263\nff00\n")
    assert (raw.code, raw.stdout) == (0, "abc\n")


async def test_subprotocol_and_headers_shown() -> None:
    async with node_h2_server(protocols=("chat.v2",)) as node:
        url = f"http://127.0.0.1:{node.port}/"
        result = await run_client(
            "-v", "--subprotocol", "chat.v1", "--subprotocol", "chat.v2", url, stdin=b"x\n"
        )
    assert result.code == 0, result.stderr
    assert "< sec-websocket-protocol: chat.v2" in result.stderr_lines


async def test_refused_prints_status_and_body() -> None:
    async with node_h2_server() as node:
        result = await run_client(f"http://127.0.0.1:{node.port}/__status/403", stdin=b"x\n")
    assert result.code == 4
    line = _one_line(result)
    assert "refused the WebSocket with 403: backend status 403" in line
    assert result.stdout == ""


async def test_server_gone_mid_session_is_abnormal(nursery: trio.Nursery) -> None:
    async with trio.open_nursery() as node_nursery:
        node = await start_node_h2_server(node_nursery)
        client = await start_client(nursery, f"http://127.0.0.1:{node.port}/")
        await client.say("first")
        await client.expect(r"first\n")
        node_nursery.cancel_scope.cancel()  # terminates the server, mid-WebSocket
    result = await client.finish()
    assert result.code == 5
    assert "before the WebSocket closed" in _one_line(result)


async def test_server_close_is_answered() -> None:
    async with node_h2_server() as node:
        result = await run_client("-v", f"http://127.0.0.1:{node.port}/", stdin=b"__close__\n")
    assert result.code == 0, result.stderr
    assert "* server Close: 1000 bye" in result.stderr_lines


# ---- no extended CONNECT: fallback, or the error ----


async def test_falls_back_to_http1_on_tls(tls_config: TLSConfig, ca_file: Path) -> None:
    async with node_h2_server(tls=tls_config, connect_protocol=False, allow_http1=True) as node:
        url = f"https://localhost:{node.port}/"
        result = await run_client("-v", "--cacert", str(ca_file), url, stdin=b"via h1\n")
    assert result.code == 0, result.stderr
    assert result.stdout == "via h1\n"
    lines = result.stderr_lines
    assert "* server SETTINGS: ENABLE_CONNECT_PROTOCOL = 0" in lines
    assert "* falling back to an HTTP/1.1 upgrade on a new connection" in lines
    assert f"* connected to localhost:{node.port} (TLS, ALPN: http/1.1)" in lines
    assert "< 101 Switching Protocols" in lines


async def test_no_fallback_when_the_server_speaks_only_http2() -> None:
    async with node_h2_server(connect_protocol=False) as node:
        result = await run_client(f"http://127.0.0.1:{node.port}/", stdin=b"x\n")
    assert result.code == 3
    assert "not a WebSocket upgrade" in _one_line(result)


async def test_http2_only_without_extended_connect() -> None:
    async with node_h2_server(connect_protocol=False) as node:
        result = await run_client("--http2-only", f"http://127.0.0.1:{node.port}/", stdin=b"x\n")
    assert result.code == 6
    line = _one_line(result)
    assert "no SETTINGS_ENABLE_CONNECT_PROTOCOL" in line
    assert "drop --http2-only" in line


async def test_http1_only_server_over_http_url(
    nursery: trio.Nursery, ws_backend: WebSocketsBackend
) -> None:
    """An http:// URL to an HTTP/1.1-only server: our preface gets no SETTINGS, so HTTP/1.1."""
    client = await start_client(nursery, "-v", f"{backend_url(ws_backend())}/")
    await client.say("plain")
    await client.expect("plain\n")
    result = await client.finish()
    assert result.code == 0, result.stderr
    assert result.stdout == "plain\n"
    assert "* falling back to an HTTP/1.1 upgrade on a new connection" in result.stderr_lines


# ---- connection failures ----


async def test_tls_verification_failure_names_the_reason(tls_config: TLSConfig) -> None:
    async with node_h2_server(tls=tls_config) as node:
        result = await run_client(f"https://localhost:{node.port}/", stdin=b"x\n")
    assert result.code == 3
    line = _one_line(result)
    assert "certificate verify failed" in line
    assert "unknown CA" in line
    assert "--cacert" in line


async def test_insecure_skips_verification(tls_config: TLSConfig) -> None:
    async with node_h2_server(tls=tls_config) as node:
        url = f"https://127.0.0.1:{node.port}/"
        result = await run_client("--insecure", url, stdin=b"unchecked\n")
    assert (result.code, result.stdout) == (0, "unchecked\n"), result.stderr


async def test_connection_refused() -> None:
    with trio.socket.socket() as probe:  # a port nobody listens on: bound, never listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        result = await run_client(f"http://127.0.0.1:{port}/", stdin=b"x\n")
    assert result.code == 3
    assert "connection refused" in _one_line(result)


async def test_bad_url_is_a_usage_error() -> None:
    result = await run_client("ftp://127.0.0.1/", stdin=b"")
    assert result.code == 2
    assert "https://, http://, wss:// or ws://" in result.stderr


# ---- hypercorn ----


@pytest.mark.parametrize("use_tls", [False, True], ids=["h2c", "tls"])
async def test_hypercorn(
    nursery: trio.Nursery, use_tls: bool, tls_config: TLSConfig, ca_file: Path
) -> None:
    async with hypercorn_server(tls=tls_config if use_tls else None) as server:
        scheme = "https" if use_tls else "http"
        args = ["-v", "--cacert", str(ca_file), f"{scheme}://localhost:{server.port}/echo"]
        client = await start_client(nursery, *args)
        # One line at a time: hypercorn answers a Close before it sends echoes still
        # queued in the app, so a line sent with the Close could go unanswered.
        for line in ("one", "two"):
            await client.say(line)
            await client.expect(f"{line}\n")
        result = await client.finish()
    assert result.code == 0, result.stderr
    assert "< server: hypercorn-h2" in result.stderr_lines
    assert "* server Close: 1000" in result.stderr_lines


# ---- the proxy itself ----


@pytest.mark.parametrize("mode", ["h2c", "http1", "ws-url", "tls"])
async def test_through_the_proxy(
    nursery: trio.Nursery,
    mode: str,
    start_proxy: StartProxy,
    ws_backend: WebSocketsBackend,
    tls_config: TLSConfig,
    ca_file: Path,
) -> None:
    tls = tls_config if mode == "tls" else None
    address = await start_proxy(make_config(("/", backend_url(ws_backend())), tls=tls))
    host = "localhost" if tls else "127.0.0.1"
    scheme = {"h2c": "http", "http1": "http", "ws-url": "ws", "tls": "https"}[mode]
    args = ["-v", "--cacert", str(ca_file), f"{scheme}://{host}:{address.port}/chat"]
    if mode == "http1":
        args.insert(0, "--http1")
    client = await start_client(nursery, *args)
    # One line at a time: the websockets backend answers a Close at once, dropping echoes
    # its handler had not sent yet.
    for line in ("through", "the proxy"):
        await client.say(line)
        await client.expect(f"{line}\n")
    result = await client.finish()
    assert result.code == 0, result.stderr
    assert result.stdout == "through\nthe proxy\n"
    over_h2 = "* HTTP/2 stream 1: CONNECT :protocol websocket /chat" in result.stderr_lines
    assert over_h2 is (mode in ("h2c", "tls"))
    # The backend's answer to our Close, relayed by the proxy: the handshake went end to end.
    assert "* server Close: 1000" in result.stderr_lines
