"""The proxy's own log records, captured in-process, so tests can wait for and inspect them.

The proxy logs one structured record per ended request through the ``h2ws_proxy`` logger
(``tunnel.closed`` / ``tunnel.refused`` for WebSockets, ``request.closed`` for ordinary
requests), with fields such as ``front`` (``h2`` or ``h1``), ``path`` and ``status``
(see ``h2ws_proxy/log.py`` and ``record.py``). :func:`capture_proxy_records` attaches a
handler to that logger; :meth:`ProxyRecords.wait_for` waits, bounded, for a record that
matches a predicate. The proxy must run in the test's trio thread (``start_proxy``), as
the handler wakes waiters with a ``trio.Event``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio


@dataclass(frozen=True)
class ProxyRecord:
    """One structured log line: its event name and its fields (bytes decoded as ASCII)."""

    event: str
    fields: dict[str, Any] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        return self.fields.get(name)


class ProxyRecords(logging.Handler):
    """Every record of the ``h2ws_proxy`` logger while attached, in order."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[ProxyRecord] = []
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        raw = getattr(record, "fields", None)
        fields = {
            key: value.decode("ascii", "backslashreplace") if isinstance(value, bytes) else value
            for key, value in (raw.items() if isinstance(raw, dict) else ())
        }
        self.records.append(ProxyRecord(record.getMessage(), fields))
        self._changed.set()
        self._changed = trio.Event()

    def named(self, event: str) -> list[dict[str, Any]]:
        """The fields of every record of ``event``, in order."""
        return [record.fields for record in self.records if record.event == event]

    def matching(self, predicate: Callable[[ProxyRecord], bool]) -> list[ProxyRecord]:
        return [record for record in self.records if predicate(record)]

    async def wait_for(
        self, predicate: Callable[[ProxyRecord], bool], timeout_s: float, what: str
    ) -> ProxyRecord:
        """The first record matching ``predicate``, waiting up to ``timeout_s`` for it."""
        with trio.move_on_after(timeout_s):
            while True:
                found = self.matching(predicate)
                if found:
                    return found[0]
                await self._changed.wait()
        raise AssertionError(
            f"no proxy record {what} within {timeout_s} s; records: "
            + "; ".join(f"{r.event} {r.fields}" for r in self.records)
        )


@contextmanager
def capture_proxy_records() -> Iterator[ProxyRecords]:
    """Capture the ``h2ws_proxy`` logger's INFO and higher records while in the block."""
    logger = logging.getLogger("h2ws_proxy")
    handler = ProxyRecords()
    handler.setLevel(logging.INFO)
    previous_level = logger.level
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


def is_tunnel(record: ProxyRecord, path: str) -> bool:
    """A WebSocket tunnel that opened and ended, for ``path`` (with or without a query)."""
    return record.event == "tunnel.closed" and str(record.get("path")).split("?")[0] == path


def is_request(record: ProxyRecord, path: str | None = None) -> bool:
    """An ordinary (non-WebSocket) request that ended, for ``path`` if given."""
    if record.event != "request.closed":
        return False
    return path is None or str(record.get("path")).split("?")[0] == path
