"""Instructions the proxy executes per tunnel, per request or per message: an A/B that a busy
machine does not blur.

CPU time per unit (``cpu_per_message.py``) moves with whatever else runs on a 2-core machine;
the instructions a process executes for the same work barely do. This runs h2ws-proxy under
``valgrind --tool=callgrind`` (Debian ``valgrind``), which counts them, in front of the same
Node backends as ``cpu_per_message.py``, and drives it with one client: by default one
connection opening tunnels one after another (open, 200, one 64-byte echo, Close with
END_STREAM), so no run batches more than another. The count is taken by difference: the
proxy's total after one client run (start-up, imports and a warm-up) is subtracted from its
total after 1 + K runs, and divided by K x units. Two runs of the same tree agree within about
1 %; concurrent clients (more per wake-up, so fewer instructions per unit) agree less well.

    .venv/bin/python bench/instructions.py                          # tunnels, ~2 minutes
    .venv/bin/python bench/instructions.py --scenario get           # sequential GETs (h2load)
    .venv/bin/python bench/instructions.py --scenario get16         # 4 x 16 GETs in flight
    .venv/bin/python bench/instructions.py --scenario get-h1        # sequential GETs, HTTP/1.1
    .venv/bin/python bench/instructions.py --scenario pingpong      # one tunnel, 64 B messages
    .venv/bin/python bench/instructions.py --scenario echo64        # 64 tunnels on 2 conns, 64 B
    .venv/bin/python bench/instructions.py --scenario bulk          # one tunnel, 64 KiB x 8
    .venv/bin/python bench/instructions.py --compare /tmp/base      # A/B against another tree
    .venv/bin/python bench/instructions.py --scenario get --log-level info  # with access lines
    .venv/bin/python bench/instructions.py --tls                    # tunnels over TLS
    .venv/bin/python bench/instructions.py --tls --scenario echo    # TLS ping-pong, 64 B

``--tls`` serves the client over TLS (a certificate from ``trustme``) for the scenarios the
bench client drives (``open``, ``echo``, ``echo64``, ``bulk``); ``echo`` is ping-pong through
that client. ``echo64`` is the batched case: 64 tunnels each ping-ponging at once, so one
read or backend round carries several tunnels' messages (its count moves more between runs
than a sequential scenario's, and each run's 64 tunnel openings are in it: about a tenth of
the count, which a change to the message path alone moves less than it moves the messages).

``--compare DIR`` counts the proxy from the source tree DIR too (``DIR/proxy`` on
``PYTHONPATH``, e.g. ``git archive HEAD~3 proxy | tar -x -C DIR``) and prints the ratio.
Under callgrind the proxy runs about 50x slower, which the counts do not see; they leave out
the kernel's work in system calls (``cpu_per_message.py`` counts that). Linux, 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cpu_per_message import (
    NODE_DIR,
    REPO,
    _free_port,
    _run_client,
    _run_h2load,
    _start_backend,
)

#: Under callgrind the proxy takes this long to import and listen, at most: about a minute
#: alone, several on a machine busy with other callgrind runs (three minutes were too few
#: at a load of 11-18).
START_TIMEOUT_S = 600
BENCH_CLIENT = REPO / "bench" / "node" / "h2_load.mjs"


@dataclass(frozen=True)
class Scenario:
    name: str
    client: str  # "bench" (bench/node/h2_load.mjs), "node" (tests/node/h2ws_client.mjs), "h2load"
    args: tuple[str, ...]
    #: Units (tunnels, requests, messages) one client run drives.
    units: int
    unit: str


SCENARIOS = {
    "open": Scenario(
        "open",
        "bench",
        tuple(
            [
                "--mode",
                "open",
                "--connections",
                "1",
                "--concurrency",
                "1",
                "--tunnels",
                "300",
                "--seconds",
                "600",
            ]
        ),
        300,
        "tunnel",
    ),
    # Ping-pong through the bench client (which speaks TLS too): one tunnel, 64 B messages.
    "echo": Scenario(
        "echo",
        "bench",
        tuple(
            [
                "--mode",
                "echo",
                "--connections",
                "1",
                "--tunnels",
                "1",
                "--size",
                "64",
                "--depth",
                "1",
                "--messages",
                "2000",
                "--seconds",
                "600",
            ]
        ),
        2000,
        "message",
    ),
    # As bench/compare.py's echo256, smaller: 64 tunnels on 2 connections, each ping-ponging
    # 64 B messages at once, so reads and backend rounds carry several tunnels' frames.
    "echo64": Scenario(
        "echo64",
        "bench",
        tuple(
            [
                "--mode",
                "echo",
                "--connections",
                "2",
                "--tunnels",
                "64",
                "--size",
                "64",
                "--depth",
                "1",
                "--messages",
                "12800",
                "--seconds",
                "600",
            ]
        ),
        12800,
        "message",
    ),
    "get": Scenario("get", "h2load", ("-n", "500", "-c", "1", "-m", "1"), 500, "request"),
    # The same over HTTP/1.1 keep-alive (the HTTP/1.1 front end's lean path).
    "get-h1": Scenario(
        "get-h1", "h2load", ("--h1", "-n", "500", "-c", "1", "-m", "1"), 500, "request"
    ),
    # As bench/compare.py drives GETs: 4 connections with 16 requests in flight on each.
    "get16": Scenario("get16", "h2load", ("-n", "2000", "-c", "4", "-m", "16"), 2000, "request"),
    "pingpong": Scenario(
        "pingpong", "node", ("--messages", "2000", "--size", "64"), 2000, "message"
    ),
    # As bench/compare.py's bulk row: one tunnel, 64 KiB messages, 8 in flight.
    "bulk": Scenario(
        "bulk",
        "bench",
        tuple(
            [
                "--mode",
                "echo",
                "--connections",
                "1",
                "--tunnels",
                "1",
                "--size",
                "65536",
                "--depth",
                "8",
                "--messages",
                "300",
                "--seconds",
                "600",
            ]
        ),
        300,
        "64 KiB message",
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="open")
    parser.add_argument("--runs", type=int, default=2, help="K: measured client runs")
    parser.add_argument("--compare", type=Path, help="also count the proxy from this tree")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["info", "warning"],
        help="the proxy's --log-level (info: an access line per tunnel or request, to stderr "
        "sent to /dev/null)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="serve the client over TLS (bench-client scenarios)"
    )
    options = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    scenario = SCENARIOS[options.scenario]
    if options.tls and scenario.client != "bench":
        raise SystemExit("--tls: only the bench client's scenarios (open, echo, echo64, bulk)")
    backend, ws_port = _start_backend(NODE_DIR / "ws_echo_backend.mjs")
    get_backend, get_port = _start_backend(REPO / "bench" / "node" / "echo_backend.mjs")
    counts: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as work:
            tls = _write_certificates(Path(work)) if options.tls else None
            for source in (None, options.compare) if options.compare else (None,):
                ports, level = (ws_port, get_port), options.log_level
                base = _count(scenario, 1, ports, Path(work), source, level, tls)
                more = _count(scenario, 1 + options.runs, ports, Path(work), source, level, tls)
                per_unit = (more - base) / (options.runs * scenario.units)
                counts.append(per_unit)
                label = "this tree" if source is None else str(source)
                print(f"{label}: {per_unit:,.0f} instructions per {scenario.unit}", flush=True)
    finally:
        for node in (backend, get_backend):
            node.terminate()
            node.wait(timeout=15)
    if len(counts) == 2:
        print(f"ratio (this tree / --compare): {counts[0] / counts[1]:.3f}")


def _count(
    scenario: Scenario,
    client_runs: int,
    ports: tuple[int, int],
    work: Path,
    source: Path | None,
    log_level: str = "warning",
    tls: Path | None = None,
) -> int:
    """The proxy's total instructions, from start to exit, with ``client_runs`` runs."""
    port = _free_port()
    config = work / f"instructions_{port}.toml"
    listener_tls = (
        f'[listener.tls]\ncert = "{tls / "cert.pem"}"\nkey = "{tls / "key.pem"}"\n'
        if tls is not None
        else ""
    )
    config.write_text(
        f'[[listener]]\nbind = "127.0.0.1:{port}"\n{listener_tls}\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{ports[0]}"\n\n'
        f'[[route]]\npath = "/get"\nbackend = "http://127.0.0.1:{ports[1]}"\n\n'
        "[limits]\nstream_window_bytes = 1048576\n"
    )
    out = work / f"callgrind_{port}.out"
    # This tree's proxy/ first, not whatever the venv's editable install points at (a
    # worktree's bench would count another checkout's code).
    env = {**os.environ, "PYTHONPATH": str((source or REPO) / "proxy")}
    # sys.executable as it is (not resolved): that is how Python finds its virtualenv.
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
    command += ["-m", "h2ws_proxy", "--config", str(config), "--log-level", log_level]
    proxy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_listening(port, proxy)
        for _ in range(client_runs):
            _run(scenario, port, work, tls)
        if proxy.poll() is not None:
            raise SystemExit("the proxy exited during the client's runs")
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(timeout=120)
    finally:
        if proxy.poll() is None:
            proxy.kill()
            proxy.wait()
    summary = re.search(r"^summary: (\d+)", out.read_text(), re.MULTILINE)
    if summary is None:
        raise SystemExit(f"callgrind wrote no summary to {out}")
    return int(summary.group(1))


def _wait_listening(port: int, proxy: subprocess.Popen[bytes]) -> None:
    """Wait until ``proxy`` listens on ``port``. The port was free when picked, but the proxy
    binds it only after its imports under callgrind (tens of seconds on a busy machine):
    another process may take it meanwhile, the proxy then exits, and the client would talk
    to that process (its routes, its backends: all 5xx, or a count of a proxy that served
    nothing). So the listener found must be this proxy's."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise SystemExit("the proxy exited before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.5)
            continue
        if _listens(proxy.pid, port):
            return
        raise SystemExit(f"port {port} was taken by another process before the proxy bound it")
    raise SystemExit(f"the proxy did not listen within {START_TIMEOUT_S} s")


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP socket listening on ``port`` (Linux's /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl, local address:port (hex), remote, state, ..., inode
        listening = fields[3] == "0A"  # TCP_LISTEN
        if listening and int(fields[1].split(":")[1], 16) == port and fields[9] in inodes:
            return True
    return False


def _write_certificates(work: Path) -> Path:
    """A CA, and a certificate for localhost that it issued, as PEM files in ``work``."""
    import trustme  # the tests' dependency, only needed here

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    ca.cert_pem.write_to_path(str(work / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(work / "key.pem"))
    (work / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return work


def _run(scenario: Scenario, port: int, work: Path, tls: Path | None = None) -> None:
    if scenario.client == "h2load":
        _run_h2load(port, scenario.args)
    elif scenario.client == "node":
        _run_client(port, scenario.args, work)
    else:
        url = f"https://localhost:{port}" if tls is not None else f"http://127.0.0.1:{port}"
        ca = ["--ca", str(tls / "ca.pem")] if tls is not None else []
        done = subprocess.run(
            ["node", str(BENCH_CLIENT), "--url", url, *ca, *scenario.args],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if not lines or '"ok":true' not in lines[-1]:
            raise SystemExit(f"client failed: {lines[-1] if lines else done.stderr}")


if __name__ == "__main__":
    main()
