"""Throughput through h2ws-proxy with independent peers: Node http2 client → proxy → Node ws.

Measures, for each scenario, messages per second and MB/s echoed, with the same Node client
talking to the proxy over h2c. The load client and backend are not ours to tune (Node's
built-in http2, nghttp2 underneath, and the ``ws`` package). Everything is on 127.0.0.1,
and every run is bounded by the client's own message count and a timeout.

    python bench/tunnel_bench.py            # full run (about a minute)
    python bench/tunnel_bench.py --smoke    # a few seconds, to check the harness works
    python bench/tunnel_bench.py --workers 2 --clients 4   # workers = 2, 4 client processes

With ``--clients K`` each scenario runs K client processes at once (each its own HTTP/2
connection, so the kernel can hand them to different workers) and reports their summed rate.

Prints a markdown table; numbers go to bench/README.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "node"


@dataclass(frozen=True)
class Scenario:
    name: str
    args: tuple[str, ...]
    smoke_args: tuple[str, ...]


SCENARIOS = (
    Scenario(
        "one tunnel ping-pong, 64 B",
        ("--messages", "20000", "--size", "64"),
        ("--messages", "200", "--size", "64"),
    ),
    Scenario(
        "one tunnel bulk, 64 KiB pipelined",
        ("--messages", "3000", "--size", "65536", "--pipeline", "--window", "1048576"),
        ("--messages", "30", "--size", "65536", "--pipeline"),
    ),
    Scenario(
        "64 tunnels on one connection, 64 B ping-pong",
        ("--tunnels", "64", "--messages", "500", "--size", "64"),
        ("--tunnels", "4", "--messages", "20", "--size", "64"),
    ),
)


def _start_backend() -> tuple[subprocess.Popen[str], int]:
    backend = subprocess.Popen(
        ["node", str(NODE_DIR / "ws_echo_backend.mjs"), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert backend.stdout is not None
    return backend, int(json.loads(backend.stdout.readline())["port"])


def _start_proxy(
    backend_port: int, config_dir: Path, workers: int
) -> tuple[subprocess.Popen[str], int]:
    config = config_dir / "bench.toml"
    config.write_text(
        '[[listener]]\nbind = "127.0.0.1:0"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{backend_port}"\n\n'
        "[limits]\nstream_window_bytes = 1048576\n"
        # The load generator is one client address: no per-client caps.
        "max_connections_per_client = 0\nmax_tunnels_per_client = 0\n"
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "h2ws_proxy", "--config", str(config), "--workers", str(workers)],
        stderr=subprocess.PIPE,
        text=True,
        # This tree's proxy/ first, not the venv's editable install's (a worktree).
        env={**os.environ, "PYTHONPATH": str(REPO / "proxy")},
    )
    assert proxy.stderr is not None
    for line in proxy.stderr:
        # One process logs server.listening; a supervisor logs workers.started once all accept.
        if match := re.search(
            r"(?:server.listening|workers.started n=\d+) listeners=[^:]+:(\d+)", line
        ):
            # Keep draining the proxy's log so it never blocks on a full pipe.
            threading.Thread(target=proxy.stderr.read, daemon=True).start()
            return proxy, int(match.group(1))
    raise SystemExit("the proxy exited before listening")


def _run_clients(port: int, args: tuple[str, ...], clients: int) -> dict[str, float]:
    """Run ``clients`` client processes at once; their summed rates."""
    with ThreadPoolExecutor(clients) as pool:
        reports = list(pool.map(lambda _: _run_client(port, args), range(clients)))
    return {
        key: sum(float(report[key]) for report in reports)  # type: ignore[arg-type]
        for key in ("messages_per_s", "mb_per_s")
    }


def _run_client(port: int, args: tuple[str, ...]) -> dict[str, object]:
    result = subprocess.run(
        [
            "node",
            str(NODE_DIR / "h2ws_client.mjs"),
            "--url",
            f"http://127.0.0.1:{port}",
            "--no-tap",
            "--timeout-ms",
            "120000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    if not report.get("ok"):
        raise SystemExit(f"client failed: {report.get('error')} {result.stderr[-500:]}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run to check the harness")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="the proxy's workers (default 1)")
    parser.add_argument("--clients", type=int, default=1, help="client processes per scenario")
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    options = parser.parse_args()
    rounds = 1 if options.smoke else options.rounds
    backend, backend_port = _start_backend()
    with tempfile.TemporaryDirectory() as config_dir:
        proxy, port = _start_proxy(backend_port, Path(config_dir), options.workers)
        try:
            print(f"workers = {options.workers}, {options.clients} client process(es) at once\n")
            print("| scenario | messages/s (median) | MB/s echoed (median) | rounds |")
            print("|---|---|---|---|")
            for scenario in (s for s in SCENARIOS if options.only in s.name):
                args = scenario.smoke_args if options.smoke else scenario.args
                reports = [_run_clients(port, args, options.clients) for _ in range(rounds)]
                rate = statistics.median(r["messages_per_s"] for r in reports)
                mbps = statistics.median(r["mb_per_s"] for r in reports)
                print(f"| {scenario.name} | {rate:,.0f} | {mbps:,.1f} | {rounds} |", flush=True)
        finally:
            proxy.terminate()
            proxy.wait(timeout=15)
            backend.terminate()
            backend.wait(timeout=15)


if __name__ == "__main__":
    main()
