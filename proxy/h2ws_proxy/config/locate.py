"""Where a key is in the TOML text: the line that error messages name. Pure.

Rules:

* A key path is a tuple of table keys and 0-based array indexes (``("route", 1,
  "backend")``), written ``route[1].backend`` in messages (:func:`format_key_path`).
* The line is found by a line scan of the raw text (table headers, array-of-tables headers,
  ``key =`` lines, dotted and quoted keys), not by a second parser: best effort, and
  None when it cannot be found (the message then names the file alone).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

__all__ = ["KeyPath", "Locator", "format_key_path"]

KeyPath = tuple[str | int, ...]

_KEY = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?")
_TABLE_HEADER = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?")
_KEY_LINE = re.compile(rf"\s*({_DOTTED})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY, dotted)
    return tuple(part[1:-1] if part[0] in "\"'" else part for part in parts)


class Locator:
    """Finds the line of a key path in the raw TOML text: a line scan, not a second parser."""

    def __init__(self, text: str | None) -> None:
        self._lines = text.splitlines() if text else []
        self._tables: list[tuple[KeyPath, int]] = [((), -1)]  # (key path, header line index)
        counts: dict[KeyPath, int] = {}  # array-of-tables path → index of its last element
        for index, line in enumerate(self._lines):
            if match := _ARRAY_HEADER.fullmatch(line):
                *parent, name = _split_key(match[1])
                array = (*self._concrete(parent, counts), name)
                counts[array] = counts.get(array, -1) + 1
                self._tables.append(((*array, counts[array]), index))
            elif match := _TABLE_HEADER.fullmatch(line):
                self._tables.append((self._concrete(_split_key(match[1]), counts), index))

    @staticmethod
    def _concrete(keys: Sequence[str], counts: Mapping[KeyPath, int]) -> KeyPath:
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            if path in counts:
                path = (*path, counts[path])
        return path

    def line_of(self, path: KeyPath) -> int | None:
        """1-based line of ``path``'s header or ``key =`` line, or None."""
        matching = [table for table in self._tables if path[: len(table[0])] == table[0]]
        table_path, header = max(matching, key=lambda table: len(table[0]))
        rest = path[len(table_path) :]
        if not rest:
            return header + 1 if header >= 0 else None
        keys = tuple(itertools.takewhile(lambda key: isinstance(key, str), rest))
        headers = [line for _, line in self._tables if line > header]
        end = min(headers, default=len(self._lines))
        for length in range(len(keys), 0, -1):  # `tls.cert =`, then `tls = {...}`
            for index in range(header + 1, end):
                match = _KEY_LINE.match(self._lines[index])
                if match and _split_key(match[1]) == keys[:length]:
                    return index + 1
        # An array of tables named by the path itself: `[[routes]]` for ("routes",).
        below = [line for sub, line in self._tables if sub[: len(path)] == path]
        return below[0] + 1 if below else None


def format_key_path(path: KeyPath) -> str:
    """``("route", 1, "backend")`` → ``route[1].backend``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text
