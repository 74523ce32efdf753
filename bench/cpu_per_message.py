"""Proxy CPU time per message (or per tunnel), which a shared machine does not blur.

Wall-clock throughput depends on whatever else runs on the machine; the CPU time the proxy
process itself spends for a fixed amount of work barely does. This starts the Node ``ws``
echo backend and h2ws-proxy (its own process, ``stream_window_bytes = 1048576``, log
level ``warning`` unless ``--log-level`` says otherwise), reads the proxy's utime + stime
from ``/proc/<pid>/stat`` around each run of the Node HTTP/2 client, and divides by the
messages echoed (or the tunnels opened). Three rounds per scenario, medians.

The ``get`` scenario (plain GETs over h2c) is driven by ``h2load -n N -c 4 -m 16`` (Debian
``nghttp2-client``) through a second route, ``/get``, to ``bench/node/echo_backend.mjs``
(200 with a 29-byte body, keep-alive), and divides by the requests answered.

    .venv/bin/python bench/cpu_per_message.py               # about a minute
    .venv/bin/python bench/cpu_per_message.py --only bulk   # scenarios whose name has "bulk"
    .venv/bin/python bench/cpu_per_message.py --smoke       # a few seconds
    .venv/bin/python bench/cpu_per_message.py --compare /tmp/base   # A/B, see below

The machine is shared, and other jobs change even CPU time per message (cache, frequency,
how many events one wake-up finds). ``--compare DIR`` therefore runs a second proxy from
the source tree DIR (``DIR/proxy`` on ``PYTHONPATH``, e.g. ``git archive HEAD proxy | tar
-x -C DIR``) next to this one, alternating rounds between them, and prints both columns
and their ratio: the load of the moment hits both alike.

The client's messages/s is printed too, for orientation only: it is wall-clock and noisy.
Linux only (``/proc``); everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "tests" / "node"
CLIENT_TIMEOUT_S = 180
#: Clock ticks per second of /proc/<pid>/stat's utime and stime.
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Scenario:
    name: str
    #: One client run's arguments; ``runs`` client processes run one after another.
    args: tuple[str, ...]
    #: What the CPU time is divided by: ``"message"``, ``"tunnel"`` or ``"request"``.
    unit: str
    runs: int = 1
    #: ``"node"`` (tests/node/h2ws_client.mjs) or ``"h2load"`` (plain GETs, see above).
    client: str = "node"


SCENARIOS = (
    Scenario(
        "64 tunnels x 64 B ping-pong",
        ("--tunnels", "64", "--messages", "500", "--size", "64"),
        "message",
    ),
    Scenario("1 tunnel ping-pong, 64 B", ("--messages", "5000", "--size", "64"), "message"),
    Scenario(
        "64 KiB bulk, pipelined",
        ("--messages", "300", "--size", "65536", "--pipeline", "--window", "1048576"),
        "message",
        2,  # one run is too short to read /proc's 10 ms ticks steadily
    ),
    # 100 at once stays under the default max_concurrent_streams (128); 5 clients in a row.
    Scenario("new tunnels (1 echo each)", ("--tunnels", "100", "--messages", "1"), "tunnel", 5),
    Scenario(
        "get: plain GETs over h2c", ("-n", "10000", "-c", "4", "-m", "16"), "request", 1, "h2load"
    ),
)


def _shrink(scenario: Scenario) -> Scenario:
    """The smoke version: same shape, a few seconds in all."""
    args = list(scenario.args)
    for flag, small in (("--messages", "20"), ("--tunnels", "4"), ("-n", "200")):
        if flag in args and int(args[args.index(flag) + 1]) > int(small):
            args[args.index(flag) + 1] = small
    return Scenario(scenario.name, tuple(args), scenario.unit, 1, scenario.client)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces; fields after its ')' are fixed.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_backend(script: Path) -> tuple[subprocess.Popen[str], int]:
    backend = subprocess.Popen(
        ["node", str(script), "--port", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert backend.stdout is not None
    return backend, int(json.loads(backend.stdout.readline())["port"])


def _start_proxy(
    backend_ports: tuple[int, int], config_dir: Path, log_level: str, source: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Start the proxy (from ``source``'s ``proxy/`` if given, else the installed one)."""
    # At level warning the proxy does not log its port, so pick one for it.
    port = _free_port()
    config = config_dir / f"cpu_bench_{port}.toml"
    config.write_text(
        f'[[listener]]\nbind = "127.0.0.1:{port}"\n\n'
        f'[[route]]\npath = "/"\nbackend = "http://127.0.0.1:{backend_ports[0]}"\n\n'
        f'[[route]]\npath = "/get"\nbackend = "http://127.0.0.1:{backend_ports[1]}"\n\n'
        "[limits]\nstream_window_bytes = 1048576\n"
        # The load generator is one client address: no per-client caps.
        "max_connections_per_client = 0\nmax_tunnels_per_client = 0\n"
    )
    proxy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "h2ws_proxy",
            "--config",
            str(config),
            "--log-level",
            log_level,
        ],
        stderr=subprocess.DEVNULL,
        # This tree's proxy/ first, not the venv's editable install's (a worktree).
        env={**os.environ, "PYTHONPATH": str((source or REPO) / "proxy")},
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise SystemExit("the proxy exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy, port
        except OSError:
            time.sleep(0.05)
    proxy.kill()
    raise SystemExit("the proxy did not listen within 15 s")


def _run_client(port: int, args: tuple[str, ...], out_dir: Path) -> dict[str, object]:
    """One client run; its output goes to a file (it can be large), the last line is read."""
    out_path = out_dir / "client.out"
    with open(out_path, "wb") as out:
        subprocess.run(
            [
                "node",
                str(NODE_DIR / "h2ws_client.mjs"),
                "--url",
                f"http://127.0.0.1:{port}",
                "--no-tap",
                "--timeout-ms",
                str(CLIENT_TIMEOUT_S * 1000 - 10000),
                *args,
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
            timeout=CLIENT_TIMEOUT_S,
            check=False,
        )
    last = out_path.read_bytes().rstrip().rsplit(b"\n", 1)[-1]
    report: dict[str, object] = json.loads(last)
    if not report.get("ok"):
        raise SystemExit(f"client failed: {report.get('error')}")
    return report


def _run_h2load(port: int, args: tuple[str, ...]) -> float:
    """One h2load run of plain GETs; its req/s. Every request must have had a 2xx."""
    done = subprocess.run(
        ["h2load", *args, f"http://127.0.0.1:{port}/get/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", done.stdout)
    clean = re.search(r"\d+ succeeded, 0 failed, 0 errored, 0 timeout", done.stdout)
    codes = re.search(r"status codes: \d+ 2xx, 0 3xx, 0 4xx, 0 5xx", done.stdout)
    if not (rate and clean and codes):
        raise SystemExit(f"h2load failed:\n{done.stdout}")
    return float(rate.group(1))


def _units(scenario: Scenario) -> int:
    args = scenario.args
    if scenario.client == "h2load":
        return int(args[args.index("-n") + 1]) * scenario.runs
    tunnels = int(args[args.index("--tunnels") + 1]) if "--tunnels" in args else 1
    messages = int(args[args.index("--messages") + 1])
    per_run = tunnels if scenario.unit == "tunnel" else tunnels * messages
    return per_run * scenario.runs


def _measure(scenario: Scenario, proxy_pid: int, port: int, out_dir: Path) -> tuple[float, float]:
    """One round: (µs of proxy CPU per unit, client's messages/s of its last run)."""
    before = _cpu_seconds(proxy_pid)
    rate = 0.0
    for _ in range(scenario.runs):
        if scenario.client == "h2load":
            rate = _run_h2load(port, scenario.args)
        else:
            rate = float(_run_client(port, scenario.args, out_dir)["messages_per_s"])  # type: ignore[arg-type]
    used = _cpu_seconds(proxy_pid) - before
    return used / _units(scenario) * 1e6, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="run the scenarios whose name contains this")
    parser.add_argument("--smoke", action="store_true", help="tiny runs, one round")
    parser.add_argument("--log-level", default="warning", help="the proxy's --log-level")
    parser.add_argument(
        "--compare", type=Path, help="also run the proxy from this source tree, alternating"
    )
    options = parser.parse_args()
    rounds = 1 if options.smoke else options.rounds
    scenarios = [s for s in SCENARIOS if options.only in s.name]
    if options.smoke:
        scenarios = [_shrink(s) for s in scenarios]
    backend, ws_port = _start_backend(NODE_DIR / "ws_echo_backend.mjs")
    get_backend, get_port = _start_backend(REPO / "bench" / "node" / "echo_backend.mjs")
    ports = (ws_port, get_port)
    proxies: list[tuple[subprocess.Popen[bytes], int]] = []
    with tempfile.TemporaryDirectory() as work_dir:
        try:
            proxies.append(_start_proxy(ports, Path(work_dir), options.log_level))
            if options.compare:
                proxies.append(
                    _start_proxy(ports, Path(work_dir), options.log_level, options.compare)
                )
            _print_header(compare=options.compare is not None)
            for scenario in scenarios:
                # results[i]: proxy i's rounds; the proxies take turns within each round.
                results: list[list[tuple[float, float]]] = [[] for _ in proxies]
                for _ in range(rounds):
                    for index, (proxy, port) in enumerate(proxies):
                        results[index].append(_measure(scenario, proxy.pid, port, Path(work_dir)))
                _print_row(scenario, results)
        finally:
            for proxy, _port in proxies:
                proxy.terminate()
                proxy.wait(timeout=15)
            for node in (backend, get_backend):
                node.terminate()
                node.wait(timeout=15)


def _print_header(*, compare: bool) -> None:
    if compare:
        print("| scenario | this tree, µs CPU (rounds) | --compare tree, µs CPU (rounds) | ratio |")
        print("|---|---|---|---|")
    else:
        print("| scenario | µs proxy CPU per unit (median) | rounds (µs) | client msg/s |")
        print("|---|---|---|---|")


def _print_row(scenario: Scenario, results: list[list[tuple[float, float]]]) -> None:
    medians = [statistics.median(cost for cost, _ in rounds) for rounds in results]
    texts = [" / ".join(f"{cost:.1f}" for cost, _ in rounds) for rounds in results]
    if len(results) == 2:
        print(
            f"| {scenario.name} | {medians[0]:.1f} per {scenario.unit} ({texts[0]})"
            f" | {medians[1]:.1f} ({texts[1]}) | {medians[0] / medians[1]:.2f} |",
            flush=True,
        )
        return
    rate = statistics.median(rate for _, rate in results[0])
    print(
        f"| {scenario.name} | {medians[0]:.1f} per {scenario.unit} | {texts[0]} | {rate:,.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
