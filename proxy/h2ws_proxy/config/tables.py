"""Reading one table of the parsed TOML: exact types, known keys, errors that say where. Pure,
except :meth:`Table.file`, which checks that a file exists and is readable.

Rules:

* Types are exact: a boolean is not a number and a number is not a string.
* A key that is not allowed is an error, with a "did you mean" suggestion when a known
  key is close, or a hint where the key belongs.
* Every error is one :class:`ConfigError` line,
  ``<file>:<line>: <key path>: <what is wrong>; <what to do>``; a missing key points at
  its table's line.
* Relative file paths are resolved against the config file's directory.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from h2ws_proxy.config.addresses import parse_socket_address
from h2ws_proxy.config.locate import KeyPath, Locator, format_key_path
from h2ws_proxy.config.model import SocketAddress
from h2ws_proxy.errors import ConfigError

__all__ = ["Context", "Table", "describe"]


def describe(value: object) -> str:
    """How a message names the TOML type of ``value`` ("a string", "an array", ...)."""
    names: tuple[tuple[type[object], str], ...] = (
        (bool, "a boolean"),  # before int: bool is an int in Python
        (int, "an integer"),
        (float, "a float"),
        (str, "a string"),
        (Mapping, "a table"),
        (list, "an array"),
    )
    return next((name for kind, name in names if isinstance(value, kind)), "a date or time")


@dataclass(frozen=True, slots=True)
class Context:
    """One parse: the file name and its locator for messages, the directory for relative
    paths."""

    source: str
    locator: Locator
    base_dir: Path

    def error(self, path: KeyPath, problem: str, *, at: KeyPath | None = None) -> ConfigError:
        line = self.locator.line_of(path if at is None else at)
        where = self.source if line is None else f"{self.source}:{line}"
        return ConfigError(f"{where}: {format_key_path(path)}: {problem}")


@dataclass(frozen=True, slots=True)
class Table:
    """The table at ``path``; each reader returns a value of the exact type it names, or
    raises a :class:`ConfigError` that says where and what to write."""

    ctx: Context
    data: Mapping[str, object]
    path: KeyPath

    def error(self, key: str, problem: str) -> ConfigError:
        return self.ctx.error((*self.path, key), problem)

    def check_keys(self, allowed: Sequence[str], hints: Mapping[str, str] | None = None) -> None:
        for key in self.data:
            if key in allowed:
                continue
            if hints and key in hints:
                raise self.error(key, hints[key])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise self.error(key, f"unknown key; {hint}")

    def require(self, key: str, example: str) -> object:
        if key not in self.data:
            raise self.ctx.error((*self.path, key), f"missing; add {example}", at=self.path)
        return self.data[key]

    def string(self, key: str, example: str) -> str:
        value = self.require(key, example)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {describe(value)}; write {example}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(
                key, f"must be true or false, not {describe(value)}; write it unquoted"
            )
        return value

    def address(self, key: str, example: str) -> SocketAddress:
        try:
            return parse_socket_address(self.string(key, example))
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def file(self, key: str, example: str) -> Path:
        value = self.string(key, example)
        if not value:
            raise self.error(key, f"is empty; write {example}")
        path = Path(os.path.abspath(self.ctx.base_dir / value))
        base = f"relative paths start from {self.ctx.base_dir}"
        if not path.exists():
            raise self.error(key, f"file not found: {path}; check the path ({base})")
        if not path.is_file():
            raise self.error(key, f"{path} is not a file; give the path of a PEM file")
        if not os.access(path, os.R_OK):
            raise self.error(key, f"{path} is not readable; check its permissions")
        return path

    def table(self, key: str) -> Table | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table, not {describe(value)}; write [{key}]")
        return Table(self.ctx, value, (*self.path, key))

    def tables(self, key: str) -> list[Table]:
        value = self.require(key, f"at least one [[{key}]] table")
        if isinstance(value, Mapping):
            raise self.error(key, f"must be an array of tables; write [[{key}]] (two brackets)")
        if not isinstance(value, list):
            raise self.error(
                key, f"must be an array of tables, not {describe(value)}; write [[{key}]]"
            )
        if not value:
            raise self.error(key, f"missing; add at least one [[{key}]] table")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                problem = f"must be a table, not {describe(item)}; write [[{key}]] tables"
                raise self.ctx.error((*self.path, key, index), problem)
        return [Table(self.ctx, item, (*self.path, key, i)) for i, item in enumerate(value)]
