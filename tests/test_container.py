"""The container image, tested without Docker: what its Dockerfile runs, each part another way.

* The default config (config/container.toml) passes ``--check`` and binds 0.0.0.0 (the one
  config that may: see its comment); every other example binds loopback.
* The Dockerfile copies that config where its ``CMD`` reads it, exposes its ports, runs
  ``HEALTHCHECK`` against its admin port, stays non-root, stops with SIGTERM, and pins its
  base image by digest and its packages by version (each pin inside pyproject.toml's range).
* ``h2ws-proxy healthcheck`` (the HEALTHCHECK command) against a real running proxy: 0 on
  200, 1 when draining or unreachable, 2 for bad usage.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import trio
from packaging.requirements import Requirement

from h2ws_proxy.config import load_config
from tests.helpers.process import OutputWatcher, free_port

REPO = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "h2ws_proxy"]
CONTAINER_CONFIG = REPO / "config" / "container.toml"


def _dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _instruction(name: str) -> list[str]:
    return [line[len(name) + 1 :] for line in _dockerfile() if line.startswith(name + " ")]


def test_the_container_config_passes_check_and_binds_every_address() -> None:
    result = subprocess.run(
        [*COMMAND, "--config", str(CONTAINER_CONFIG), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "listener 0.0.0.0:8080: cleartext" in result.stdout
    assert "admin 0.0.0.0:9901: /healthz, /readyz, /stats" in result.stdout


def test_every_other_example_binds_loopback_only() -> None:
    for path in (REPO / "config").glob("*.toml"):
        if path == CONTAINER_CONFIG:
            continue
        config = load_config(path)
        binds = [listener.bind for listener in config.listeners]
        binds += [config.admin.bind] if config.admin else []
        assert all(bind.host in ("127.0.0.1", "::1", "localhost") for bind in binds), path


def test_the_dockerfile_runs_the_container_config_with_its_ports_and_health_check() -> None:
    config = load_config(CONTAINER_CONFIG)
    assert config.admin is not None
    listen_port, admin_port = config.listeners[0].bind.port, config.admin.bind.port
    assert "config/container.toml /etc/h2ws-proxy/proxy.toml" in _instruction("COPY")
    assert _instruction("CMD") == ['["--config", "/etc/h2ws-proxy/proxy.toml"]']
    assert _instruction("ENTRYPOINT") == ['["h2ws-proxy"]']
    assert _instruction("EXPOSE") == [f"{listen_port} {admin_port}"]
    (health,) = _instruction("HEALTHCHECK")
    options, _, command = health.partition(" CMD ")
    assert "--interval=" in options
    assert command == f'["h2ws-proxy", "healthcheck", "--admin", "127.0.0.1:{admin_port}"]'
    assert _instruction("STOPSIGNAL") == ["SIGTERM"]
    (user,) = _instruction("USER")
    assert user == "10001:10001"  # numeric and not root (runAsNonRoot can check it)


def test_the_dockerfile_pins_its_base_image_and_packages() -> None:
    (base,) = _instruction("ARG")
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base)
    assert _instruction("FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runs = " ".join(_instruction("RUN"))
    assert "--no-deps --prefix=/install -r requirements-container.txt" in runs
    assert "--no-deps --no-build-isolation --prefix=/install ." in runs
    assert "pip check" in runs

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = {}
    for line in (REPO / "requirements-container.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[requirement.name] = specifier.version
    for dependency in project["project"]["dependencies"]:
        requirement = Requirement(dependency)
        assert requirement.name in pins, f"{requirement.name} is not pinned"
        assert requirement.specifier.contains(pins[requirement.name]), dependency
    (backend,) = project["build-system"]["requires"]
    setuptools = re.search(r'"setuptools==([\d.]+)"', runs)
    assert setuptools is not None
    assert Requirement(backend).specifier.contains(setuptools[1])


def _healthcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "healthcheck", *args], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.socket
async def test_healthcheck_exits_0_while_serving_and_1_while_draining(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{free_port()}"\n\n'
        '[admin]\nbind = "127.0.0.1:0"\n\n[limits]\ngraceful_timeout_s = 5.0\n'
        "drain_accept_s = 4.0\n"  # keeps the drain (and the admin port) going meanwhile
    )
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--config", str(config)], stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    output = OutputWatcher(process.stderr)
    try:
        with trio.fail_after(30):
            admin = (await output.expect(r"server\.listening .* admin=(127\.0\.0\.1:\d+)"))[1]
            ok = await trio.to_thread.run_sync(_healthcheck, "--admin", admin)
            assert (ok.returncode, ok.stderr) == (0, "")
            ready = await trio.to_thread.run_sync(
                _healthcheck, "--admin", admin, "--path", "/readyz"
            )
            assert ready.returncode == 0, ready.stderr
            process.send_signal(signal.SIGTERM)
            await output.expect(r"server\.draining ")
            draining = await trio.to_thread.run_sync(_healthcheck, "--admin", admin)
            assert draining.returncode == 1
            assert draining.stderr == f"h2ws-proxy healthcheck: {admin}/healthz: 503 draining\n"
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_healthcheck_exits_1_when_nothing_answers() -> None:
    result = _healthcheck("--admin", f"127.0.0.1:{free_port()}", "--timeout-s", "2")
    assert result.returncode == 1
    assert "no answer: " in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--admin", "localhost"], "has no port"),
        (["--admin", "127.0.0.1:1", "--path", "healthz"], "must start with /"),
    ],
)
def test_healthcheck_usage_errors_exit_2(args: list[str], problem: str) -> None:
    result = _healthcheck(*args)
    assert result.returncode == 2
    assert problem in result.stderr, shlex.join(args)
