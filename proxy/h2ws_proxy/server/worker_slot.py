"""One worker position of the supervisor, and the questions it asks the worker there.

A slot outlives its workers: each restart puts a new process in it. While its worker is
ready, the slot holds the worker's control channel (worker.py); :meth:`WorkerSlot.ask`
sends one command and waits, bounded, for the answer that carries its id, skipping late
answers to earlier questions that timed out.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field

import trio

from h2ws_proxy.server.worker import ControlChannel
from h2ws_proxy.transport.errors import STREAM_GONE

#: How long a worker has to answer a question (``/stats``, ``/readyz``, ``/metrics``).
ANSWER_TIMEOUT_S = 1.0
_request_ids = itertools.count(1)
#: The ``/stats`` counters the supervisor sums over its workers.
_STAT_KEYS = (
    "connections",
    "tunnels",
    "requests",
    "tasks",
    "unexpected_errors",
    "refused_per_client",
    "evicted_idle",
    "accept_failures",
)


@dataclass(slots=True)
class WorkerSlot:
    """One worker position; its process changes with each restart."""

    index: int
    process: trio.Process | None = None
    #: Set while the worker is ready and answers on its control channel.
    control: ControlChannel | None = None
    lock: trio.Lock = field(default_factory=trio.Lock)
    restarts: int = 0
    #: How the slot's worker ended its drain (None: no worker was running at the drain).
    drain_exit_code: int | None = None

    async def ask(self, command: str) -> dict[str, object] | None:
        """The worker's answer to ``command`` (without its id), or None if there is no
        ready worker or it did not answer within ``ANSWER_TIMEOUT_S``."""
        request_id = str(next(_request_ids))
        with trio.move_on_after(ANSWER_TIMEOUT_S):
            async with self.lock:
                control = self.control
                if control is None:
                    return None
                try:
                    await control.send(f"{command} {request_id}".encode())
                except STREAM_GONE:
                    return None
                # Skip answers to earlier requests that timed out.
                while (line := await control.receive()) is not None:
                    answer = json.loads(line)
                    if isinstance(answer, dict) and answer.pop("id", None) == request_id:
                        # Not from a worker that exited meanwhile (its samples are retired).
                        return answer if self.control is control else None
        return None

    async def fill_stats(self, entry: dict[str, object]) -> None:
        """Fill ``entry`` with the worker's counters, or ``ready: false``."""
        process = self.process
        entry.update(
            worker=self.index,
            pid=process.pid if process else None,
            ready=False,
            restarts=self.restarts,
        )
        answer = await self.ask("stats")
        if answer is not None:
            entry.update(answer, ready=True)


def sum_stats(workers: list[dict[str, object]]) -> dict[str, int]:
    """The workers' counters added up (a worker that did not answer counts 0)."""
    return {key: sum(_counter(entry, key) for entry in workers) for key in _STAT_KEYS}


def _counter(entry: dict[str, object], key: str) -> int:
    value = entry.get(key, 0)
    return value if isinstance(value, int) else 0
