"""Where the memory of an idle tunnel goes: the proxy in this process, a breakdown per tunnel.

compare.py's idle scenarios give one number (RSS per idle tunnel). This runs the same
load (the Node echo backend, ``bench/node/h2_load.mjs --mode idle``) against h2ws-proxy
served *in this process*, so that once the tunnels are open and idle it can look inside:

* RSS per tunnel (as compare.py measures it, from ``/proc/self/status``);
* the Python objects the tunnels added, by type: count per tunnel and ``sys.getsizeof``
  bytes per tunnel (``gc`` sees only containers: coroutines, tasks, dicts, lists...);
* with ``--tracemalloc``, the allocation sites that hold the most (every allocation, bytes
  and str included), per tunnel. tracemalloc costs memory itself: read RSS without it.

    .venv/bin/python bench/idle_memory.py --tunnels 1000 --connections 10
    .venv/bin/python bench/idle_memory.py --tunnels 1000 --tracemalloc 25

Everything stays on 127.0.0.1 and is bounded (tunnel count, the client's own timeout).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import trio

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from compare import CLIENT, HOST, Certs, raise_nofile, start_backend  # noqa: E402

from h2ws_proxy.config import parse_config  # noqa: E402
from h2ws_proxy.server.serve import serve  # noqa: E402

SETTLE_S = 1.0
CLIENT_TIMEOUT_S = 120.0


def rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
    return int(match.group(1)) if match else 0


def objects_by_type(*skip: object) -> tuple[Counter[str], Counter[str]]:
    """Counts and getsizeof bytes of every gc-tracked object but ``skip``, by type name."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    skipped = {id(obj) for obj in skip}
    for obj in gc.get_objects():
        if id(obj) in skipped:
            continue
        name = type(obj).__qualname__
        if name in ("coroutine", "generator", "function"):
            name = f"{name} {obj.__qualname__}"  # type: ignore[attr-defined]
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


class Snapshot:
    """RSS, objects by type and (with tracemalloc) the allocations, at one moment.

    The first snapshot's own tables (a Counter per type name, some 400 KB) live on until
    the second one: its RSS is read after they are built, the second's before, so that
    neither counts in the difference (nor among the second's objects)."""

    def __init__(self, before: Snapshot | None = None) -> None:
        gc.collect()
        rss_last = before is None
        if not rss_last:
            self.rss_kib = rss_kib()
        # The first snapshot's tables are not tunnel objects either.
        self.counts, self.sizes = objects_by_type(*(() if before is None else before.tables()))
        self.trace = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        if rss_last:
            self.rss_kib = rss_kib()

    def tables(self) -> tuple[object, ...]:
        return (self.counts, self.sizes)


def report(before: Snapshot, after: Snapshot, tunnels: int, top: int) -> None:
    print(f"tunnels: {tunnels}")
    print(f"RSS per tunnel: {(after.rss_kib - before.rss_kib) * 1024 / tunnels:.0f} B")
    counts = after.counts - before.counts
    sizes = after.sizes - before.sizes
    total = sum(sizes.values())
    print(f"gc-tracked objects, getsizeof per tunnel: {total / tunnels:.0f} B")
    print(f"{'type':60} {'n/tunnel':>9} {'B/tunnel':>9}")
    for name, size in sizes.most_common(top):
        print(f"{name[:60]:60} {counts[name] / tunnels:9.2f} {size / tunnels:9.0f}")
    if before.trace is None or after.trace is None:
        return
    ignore = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.trace.filter_traces(ignore).compare_to(
        before.trace.filter_traces(ignore), "lineno"
    )
    grand = sum(s.size_diff for s in stats)
    print(f"\ntracemalloc: {grand / tunnels:.0f} B per tunnel; top sites:")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        print(f"{where:40} {stat.count_diff / tunnels:7.2f} {stat.size_diff / tunnels:8.0f} B")


async def run(args: argparse.Namespace, work: Path) -> None:
    certs = Certs.make(work)
    with start_backend(certs) as backend:
        config = parse_config(
            {
                "listener": [{"bind": f"{HOST}:0"}],
                "route": [{"path": "/", "backend": f"http://{HOST}:{backend.port}"}],
                # The load generator is one client address: no per-client caps.
                "limits": {"max_connections_per_client": 0, "max_tunnels_per_client": 0},
            }
        )
        async with trio.open_nursery() as nursery:
            shutdown = trio.Event()
            bound = await nursery.start(
                lambda task_status: serve(config, shutdown=shutdown, task_status=task_status)
            )
            port = bound.listeners[0].port
            await trio.sleep(SETTLE_S)
            before = Snapshot()
            await drive_client(args, port, before)
            shutdown.set()


async def drive_client(args: argparse.Namespace, port: int, before: Snapshot) -> None:
    command = [
        "node",
        str(CLIENT),
        "--url",
        f"http://{HOST}:{port}",
        "--mode",
        "idle",
        "--connections",
        str(args.connections),
        "--tunnels",
        str(args.tunnels),
        "--seconds",
        "90",
    ]
    process = await trio.lowlevel.open_process(command, stdin=-1, stdout=-1)
    assert process.stdout is not None
    assert process.stdin is not None
    buffer = b""
    with trio.fail_after(CLIENT_TIMEOUT_S):
        while True:
            chunk = await process.stdout.receive_some()
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                event = json.loads(line)
                if event.get("event") == "opened":
                    await trio.sleep(SETTLE_S)
                    report(before, Snapshot(before), int(event["tunnels"]), args.top)
                    await process.stdin.send_all(b"\n")
        await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tunnels", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_nofile()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    with tempfile.TemporaryDirectory(prefix="idle-memory-") as work:
        trio.run(run, args, Path(work))


if __name__ == "__main__":
    main()
