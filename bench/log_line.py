"""Microseconds per access line: ``RelayRecord.log`` at INFO, this tree against another.

Each measurement runs in its own Python process with the tree's ``proxy/`` first on
``sys.path`` and stderr sent to ``/dev/null`` (so the syscalls stay, the terminal does not):
``configure_logging`` as the CLI calls it, then, inside ``trio.run``, ``RelayRecord.log`` of
a finished tunnel (every field filled, a worker's ``worker=`` and ``pid=`` first) called
``--lines`` times, timed with ``perf_counter``, best of ``--repeats``. ``--request`` measures
an ordinary request's whole record instead, as the lean GET path makes it: ``begin`` with
the same connection's repeated values (the same objects, as a repeated HPACK block gives
them; ``of_facts`` of one ``RequestFacts`` in a tree that has them), the fields the
request path sets, then ``log``. A tree that has
``log.flush_log_lines`` runs it beside the loop, as ``serve`` does. The same loop at
``--log-level warning`` gives what the record costs without its line (counting it into the
metrics), so the line's own cost is the difference. ``--instructions`` counts instead of
timing (valgrind's callgrind: each case's process total with 5,000 calls less that with
1,000, over 4,000), which a busy machine does not blur.

    .venv/bin/python bench/log_line.py                          # this tree, text and json
    .venv/bin/python bench/log_line.py --compare /tmp/base      # and the tree in /tmp/base
    .venv/bin/python bench/log_line.py --compare /tmp/base --rounds 5  # best of 5 processes
    .venv/bin/python bench/log_line.py --compare /tmp/base --instructions  # valgrind's counts

Make the base tree with ``git archive <commit> proxy | tar -x -C /tmp/base``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from h2ws_proxy.counters import ProxyCounters

REPO = Path(__file__).resolve().parent.parent


def _measure(
    lines: int, repeats: int, level: str, log_format: str, pool: int = 0, request: bool = False
) -> float:
    """Best µs per ``RelayRecord.log`` call, in this process (stderr already /dev/null);
    ``pool``: records made per loop when more than ``lines`` (all made, ``lines`` logged).
    ``request``: per ordinary request's record, ``begin`` to ``log`` (:func:`_requests`)."""
    import trio
    import trio.testing

    from h2ws_proxy import log
    from h2ws_proxy.counters import ProxyCounters
    from h2ws_proxy.relay.outcome import RelayEnd
    from h2ws_proxy.relay.record import RelayRecord, tunnel_opened

    log.configure_logging(level, log_format)
    log.set_process_fields(worker=1, pid=os.getpid())
    flusher = getattr(log, "flush_log_lines", None)
    handlers = logging.getLogger("h2ws_proxy").handlers
    headers = [(b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101")]

    def record() -> RelayRecord:
        done = RelayRecord.begin(
            "h2", 7, b"/echo?room=1", stream_id=3, authority=b"proxy.test:8443",
            client="127.0.0.1:50312", headers=headers,
        )  # fmt: skip
        done.route, done.backend, done.status, done.opened = "/echo", "127.0.0.1:9001", 200, True
        done.stats.bytes_up, done.stats.bytes_down = 1234, 56789
        done.stats.end, done.stats.client_close, done.stats.backend_close = (
            RelayEnd.CLEAN,
            1000,
            1000,
        )
        return done

    async def run() -> float:
        counters = ProxyCounters()
        best = float("inf")
        async with trio.open_nursery() as nursery:
            if flusher is not None:
                nursery.start_soon(flusher)
                # Let it start: a flusher that has not run yet buffers nothing, and every
                # line would be a write of its own (as this bench measured until 2026-12-07).
                await trio.testing.wait_all_tasks_blocked()
            if request:
                best = _requests(lines, repeats, counters, handlers)
            for _ in range(0 if request else repeats):
                records = [record() for _ in range(max(lines, pool))]
                for done in records:
                    tunnel_opened(done, counters)
                started = time.perf_counter()
                for done in records[:lines]:
                    done.log(counters)
                for handler in handlers:
                    handler.flush()  # the lines still buffered are part of the cost
                best = min(best, (time.perf_counter() - started) / lines * 1e6)
            nursery.cancel_scope.cancel()
        return best

    return trio.run(run)


def _requests(
    lines: int, repeats: int, counters: ProxyCounters, handlers: list[logging.Handler]
) -> float:
    """Best µs per ordinary request's record: ``begin`` as the lean GET path calls it (one
    connection's values, the same objects each time), the fields its answer sets, ``log``.
    A few untimed first (the same number whatever ``lines``): caches filled, as in a
    server that has run a while."""
    from h2ws_proxy.relay.outcome import RelayEnd
    from h2ws_proxy.relay.record import RelayRecord

    route: Any = SimpleNamespace(path="/")  # begin reads the route's path only
    target, method, authority = b"/index.html", b"GET", b"127.0.0.1:8080"
    headers = ((b"user-agent", b"h2load nghttp2/1.59.0"), (b"accept", b"*/*"))
    label, peer, clean = "127.0.0.1:9001", "127.0.0.1:50312", RelayEnd.CLEAN

    try:  # a tree that begins a repeated request's record from its facts, as its path does
        from h2ws_proxy.relay.request_facts import RequestFacts
    except ImportError:
        facts = None
    else:
        request: Any = SimpleNamespace(
            method=method, target=target, authority=authority, headers=headers
        )
        facts = RequestFacts("h2", 7, peer, request, route)

    def one(stream_id: int) -> None:
        if facts is not None:
            record = RelayRecord.of_facts(facts, stream_id, label)
        else:
            record = RelayRecord.begin(
                "h2", 7, target, stream_id=stream_id, route=route, method=method,
                authority=authority, client=peer, headers=headers,
            )  # fmt: skip
            record.backend = label
        record.status = 200
        record.stats.bytes_down += 612
        record.stats.end = clean
        record.opened = True
        record.log(counters)

    for stream_id in range(1, 200, 2):
        one(stream_id)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for stream_id in range(1, 2 * lines + 1, 2):
            one(stream_id)
        for handler in handlers:
            handler.flush()
        best = min(best, (time.perf_counter() - started) / lines * 1e6)
    return best


def _child(
    tree: Path, lines: int, repeats: int, level: str, log_format: str, request: bool
) -> float:
    """Run :func:`_measure` in a fresh process on ``tree``'s package."""
    code = (
        f"import sys; sys.path[:0] = [{str(tree / 'proxy')!r}, {str(REPO / 'bench')!r}]\n"
        "import log_line\n"
        f"print(log_line._measure({lines}, {repeats}, {level!r}, {log_format!r}, "
        f"request={request}))\n"
    )
    with open(os.devnull, "w") as devnull:
        out = subprocess.run(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=devnull,
            check=True,
            timeout=300,
            env={**os.environ, "PYTHONPATH": ""},
        )
    return float(out.stdout)


def _instructions(tree: Path, level: str, log_format: str, request: bool) -> float:
    """Instructions per ``RelayRecord.log`` call on ``tree`` (valgrind's callgrind): two
    processes make the same records and log 1,000 or 5,000 of them; the difference of
    their totals, over 4,000."""
    totals = []
    for lines in (1000, 5000):
        with tempfile.TemporaryDirectory() as work:
            out = Path(work) / "callgrind.out"
            code = (
                f"import sys; sys.path[:0] = [{str(tree / 'proxy')!r}, {str(REPO / 'bench')!r}]\n"
                "import log_line\n"
                f"log_line._measure({lines}, 1, {level!r}, {log_format!r}, pool=6000, "
                f"request={request})\n"
            )
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
            subprocess.run(
                [*command, sys.executable, "-c", code],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
                timeout=900,
                env={**os.environ, "PYTHONPATH": ""},
            )
            summary = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
            assert summary is not None, "no total in callgrind's output"
            totals.append(int(summary.group(1)))
    return (totals[1] - totals[0]) / 4000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, help="also measure the tree in this directory")
    parser.add_argument("--lines", type=int, default=20_000, help="lines per timed loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops; the best counts")
    parser.add_argument(
        "--rounds", type=int, default=1, help="processes per tree and case, trees alternating"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per call under valgrind instead of timing (a busy machine "
        "does not move them; ~1 minute per tree and case)",
    )
    parser.add_argument(
        "--request",
        action="store_true",
        help="an ordinary request's whole record (begin, its fields, log), not a tunnel's log",
    )
    args = parser.parse_args()
    trees = [("this tree", REPO)] + ([("base", args.compare)] if args.compare else [])
    results: dict[str, dict[str, float]] = {}
    cases = (("text", "info", "text"), ("json", "info", "json"), ("warning", "warning", "text"))
    for _ in range(args.rounds):  # alternating, so that a busy minute blurs both trees
        for name, tree in trees:
            row = results.setdefault(name, {})
            for case, level, log_format in cases:
                if args.instructions:
                    best = _instructions(tree, level, log_format, args.request)
                else:
                    best = _child(tree, args.lines, args.repeats, level, log_format, args.request)
                row[case] = min(best, row.get(case, best))
    print(json.dumps(results, indent=2))
    unit = "instructions" if args.instructions else "µs"
    print(f"tree       | text {unit}/line | json {unit}/line | no line (warning) | text line alone")
    for name, row in results.items():
        alone = row["text"] - row["warning"]
        print(
            f"{name:10} | {row['text']:12.2f} | {row['json']:12.2f} | {row['warning']:17.2f}"
            f" | {alone:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
