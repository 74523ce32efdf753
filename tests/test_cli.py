"""The ``h2ws-proxy`` command as a user runs it: a real process, real signals, real sockets."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trustme
from websockets.sync.client import connect as ws_connect

from h2ws_proxy import __version__
from tests.helpers.certificates import write_certificate
from tests.helpers.h2_client import open_h2_client
from tests.helpers.process import OutputWatcher, free_port

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "h2ws_proxy"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"h2ws-proxy {__version__}"


def test_check_prints_what_the_example_config_serves() -> None:
    result = run_cli("--config", str(REPO / "config" / "example.toml"), "--check")
    assert result.returncode == 0, result.stderr
    assert "listener 127.0.0.1:8080: cleartext" in result.stdout
    assert "advertises SETTINGS_ENABLE_CONNECT_PROTOCOL" in result.stdout
    assert "route / -> http://127.0.0.1:9000" in result.stdout


def test_check_names_each_backend_group(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        '[[backend]]\nname = "chat"\nservers = ["http://127.0.0.1:9001", "unix:/run/c.sock"]\n'
        'balance = "least_connections"\n\n'
        '[[route]]\npath = "/"\nbackend = "chat"\n'
    )
    result = run_cli("--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert (
        "backend chat: least_connections over http://127.0.0.1:9001, unix:/run/c.sock; "
        "no health checks"
    ) in result.stdout
    assert "route / -> chat" in result.stdout


def test_config_error_names_file_key_and_line(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n[[route]]\npath = "/"\nbacknd = "http://127.0.0.1:1"\n'
    )
    result = run_cli("--config", str(config))
    assert result.returncode == 2
    message = result.stderr.strip()
    assert message.count("\n") == 0, "one line"
    assert "proxy.toml:6:" in message
    assert "route[0].backnd" in message
    assert "did you mean 'backend'" in message


def _two_certificate_config(tmp_path: Path) -> Path:
    ca = trustme.CA()
    write_certificate(ca, tmp_path, "chat", "chat.example.test")
    write_certificate(ca, tmp_path, "api", "*.api.example.test", "127.0.0.1")
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n'
        '[[listener.tls.certificate]]\ncert = "chat.pem"\nkey = "chat.key"\n'
        '[[listener.tls.certificate]]\ncert = "api.pem"\nkey = "api.key"\n\n'
        '[[route]]\npath = "/"\nbackend = "http://127.0.0.1:1"\n'
    )
    return config


def test_check_loads_the_certificates_and_names_what_each_covers(tmp_path: Path) -> None:
    config = _two_certificate_config(tmp_path)
    result = run_cli("--config", str(config), "--check")
    assert result.returncode == 0, result.stderr
    assert f"  certificate {tmp_path / 'chat.pem'}: chat.example.test\n" in result.stdout
    assert f"  certificate {tmp_path / 'api.pem'}: *.api.example.test, 127.0.0.1\n" in (
        result.stdout
    )


def test_check_refuses_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    config = _two_certificate_config(tmp_path)
    (tmp_path / "api.key").write_bytes((tmp_path / "chat.key").read_bytes())
    result = run_cli("--config", str(config), "--check")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"h2ws-proxy: error: {config}:8: listener[0].tls.certificate[1].key: "
        f"{tmp_path / 'api.key'} is not the private key of the certificate"
    ), result.stderr


@pytest.mark.parametrize(
    "args", [[], ["--config", "/nonexistent/proxy.toml"]], ids=["no-config", "missing-file"]
)
def test_missing_config_exits_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "error" in result.stderr


def _h1_echo(port: int) -> str:
    with ws_connect(f"ws://127.0.0.1:{port}/demo", open_timeout=10) as ws:
        ws.send("through the real command")
        return str(ws.recv(timeout=10))


@pytest.mark.socket
async def test_runs_with_demo_backend_serves_both_protocols_and_drains_on_sigterm(
    tmp_path: Path,
) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{free_port()}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n[limits]\ngraceful_timeout_s = 5.0\n'
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config), "--demo-backend"], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    try:
        listening = await output.expect(
            r"server.listening listeners=127\.0\.0\.1:(\d+) admin=127\.0\.0\.1:(\d+)"
        )
        port, admin_port = int(listening[1]), int(listening[2])
        assert await trio.to_thread.run_sync(_h1_echo, port) == "through the real command"
        async with open_h2_client(await trio.open_tcp_stream("127.0.0.1", port)) as client:
            ws = await client.websocket("/demo", subprotocols=["demo.v1"])
            assert ws.status == 200
            assert ws.state.header(b"sec-websocket-protocol") == b"demo.v1"
            await ws.send(b"over http/2")
            assert await ws.receive() == b"over http/2"
            assert (await ws.close())[0] == 1000
            await client.ping()  # the proxy has seen our END_STREAM: the tunnel ended clean
        health = await trio.open_tcp_stream("127.0.0.1", admin_port)
        await health.send_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        assert (await health.receive_some(4096)).startswith(b"HTTP/1.1 200 ")
        await health.aclose()
        await output.expect(r"tunnel.closed .*front=h2 .*end=clean")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await process.wait() == 0
        await output.expect(r"server.stopped")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "proxy.toml"
        config.write_text(
            f'[[listener]]\nbind = "127.0.0.1:{port}"\n[[route]]\npath = "/"\n'
            'backend = "http://127.0.0.1:1"\n'
        )
        result = run_cli("--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"h2ws-proxy: error: listener 127.0.0.1:{port}: cannot listen: Address already in use"
    )
