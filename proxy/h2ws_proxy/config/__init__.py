"""Configuration: one TOML file, validated completely at load, into frozen dataclasses.

Rules:

* Five top-level keys: ``workers`` (optional integer, or ``"auto"``), ``[[listener]]`` and
  ``[[route]]`` (arrays of tables, at least one of each), ``[admin]`` and ``[limits]``
  (optional tables). Any other key, at any level, is an error, with a "did you mean"
  suggestion when a known key is close.
* Types are exact: a boolean is not a number and a number is not a string. Timeouts take
  integers or floats (stored as ``float``); the other limits take integers only.
* Socket addresses are ``host:port``, IPv6 literals in brackets (``[::1]:8443``). Port 0
  asks the OS for a free port (tests). Listener binds are unique and the admin bind
  differs from all of them (port 0 excepted).
* Backends are ``http://host[:port][/]`` (port 80 by default) or ``unix:/path/to.sock``.
  ``https://`` is refused as not supported yet; a path or query in the URL is refused.
* Relative paths (TLS files, unix sockets) are resolved against the config file's
  directory. TLS files must exist and be readable at load; their PEM content is checked
  by :func:`build_server_ssl_context` when the server starts.
* Route paths start with ``/`` and are unique; the longest matching prefix wins
  (``routing.py``).
* Every problem is one :class:`ConfigError` line,
  ``<file>:<line>: <key path>: <what is wrong>; <what to do>``, with 0-based array indexes
  in the key path (``route[1].backend``). The line is found in the raw text on a best
  effort basis and left out when it cannot be found.

Only :func:`load_config`, the TLS file checks and :func:`build_server_ssl_context` touch
the file system; everything else is pure.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import math
import os
import re
import ssl
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from h2ws_proxy.errors import ConfigError

__all__ = [
    "AdminConfig",
    "BackendAddress",
    "Limits",
    "ListenerConfig",
    "ProxyConfig",
    "RouteConfig",
    "SocketAddress",
    "TLSConfig",
    "advertises_connect_protocol",
    "build_server_ssl_context",
    "load_config",
    "parse_backend",
    "parse_config",
    "parse_socket_address",
    "parse_workers",
]

KeyPath = tuple[str | int, ...]

MIB = 1024 * 1024
#: Upper bound of ``workers``: far past any useful count on one machine (the supervisor
#: holds one pipe and one process per worker), low enough to catch a typo like 800.
MAX_WORKERS = 64
#: ALPN protocols offered on TLS listeners, in order of preference (RFC 7301, RFC 9113 §3.2).
ALPN_PROTOCOLS = ("h2", "http/1.1")
BACKEND_FORMS = "write http://host:port or unix:/path/to.sock"


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class SocketAddress:
    host: str  #: "127.0.0.1", "::1" (no brackets) or a name such as "localhost"
    port: int

    def __str__(self) -> str:
        return _join_host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class TLSConfig:
    cert: Path  #: absolute
    key: Path  #: absolute


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    bind: SocketAddress
    tls: TLSConfig | None = None
    #: SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3): True, False, or "auto" (advertise
    #: only when a route can take WebSockets; see :func:`advertises_connect_protocol`).
    enable_connect_protocol: bool | Literal["auto"] = "auto"


@dataclass(frozen=True, slots=True)
class BackendAddress:
    scheme: Literal["http", "unix"]
    host: str = ""
    port: int = 0
    unix_path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix:{self.unix_path}"
        return f"http://{_join_host_port(self.host, self.port)}"

    @property
    def host_header(self) -> str:
        """Host for the backend request when the client sent none (default port left out)."""
        if self.scheme == "unix":
            return "localhost"
        if self.port == 80:
            return f"[{self.host}]" if ":" in self.host else self.host
        return _join_host_port(self.host, self.port)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    path: str
    backend: BackendAddress
    x_forwarded: bool = True  #: add X-Forwarded-For/-Proto/-Host toward the backend
    websocket: bool = True  #: the backend takes WebSocket upgrades on this route


@dataclass(frozen=True, slots=True)
class AdminConfig:
    bind: SocketAddress


@dataclass(frozen=True, slots=True)
class Limits:
    connect_timeout_s: float = 5.0
    handshake_timeout_s: float = 10.0
    client_handshake_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0  #: 0 disables
    max_concurrent_streams: int = 128
    stream_window_bytes: int = 262144
    max_header_list_bytes: int = 65536
    max_rejection_body_bytes: int = 65536
    graceful_timeout_s: float = 10.0
    #: An HTTP/2 connection with no open stream for this long is closed; 0 disables.
    idle_connection_timeout_s: float = 300.0
    #: A client that takes none of our bytes for this long is disconnected.
    send_timeout_s: float = 60.0
    #: Client connections per listener; past it the listener stops accepting for a while.
    max_connections: int = 10000
    #: Streams a client may cancel or have refused within ``stream_reset_window_s`` before
    #: its connection is closed with ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    max_stream_resets: int = 200
    stream_reset_window_s: float = 10.0
    #: Empty DATA frames (no payload, no END_STREAM) a client may send in that window.
    max_empty_frames: int = 1000
    #: An ordinary HTTP request with no byte moving either way this long is ended (504
    #: before the backend's answer began, an abort after).
    http_idle_timeout_s: float = 60.0
    #: How long an idle keep-alive connection to a backend is kept for reuse; 0 disables
    #: reuse. Below Node's 5 s keep-alive default, so we close first, not the backend.
    backend_keepalive_s: float = 4.0
    #: Idle keep-alive connections kept per backend (0 disables reuse). Above the streams
    #: of a busy connection, so a burst of concurrent requests does not reconnect.
    backend_max_idle: int = 256
    #: After one side of a tunnel ended, how long the other may stay silent without ending
    #: too; 0 disables.
    half_closed_timeout_s: float = 10.0


#: Inclusive ranges of the integer limits; the other limits are seconds.
_INT_LIMITS: dict[str, tuple[int, int]] = {
    "max_concurrent_streams": (1, 65535),
    "stream_window_bytes": (65535, 2**31 - 1),  # RFC 9113 §6.9.1 window bounds
    "max_header_list_bytes": (1024, 16 * MIB),
    "max_rejection_body_bytes": (0, 16 * MIB),
    "max_connections": (1, 1_000_000),
    "max_stream_resets": (1, 1_000_000),
    "max_empty_frames": (1, 1_000_000),
    "backend_max_idle": (0, 100_000),
}
#: Second-valued limits where 0 means "disabled".
_ZERO_DISABLES = frozenset(
    {
        "idle_timeout_s",
        "idle_connection_timeout_s",
        "backend_keepalive_s",
        "half_closed_timeout_s",
    }
)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listeners: tuple[ListenerConfig, ...]
    routes: tuple[RouteConfig, ...]
    admin: AdminConfig | None = None
    limits: Limits = field(default_factory=Limits)
    source: str = "<memory>"  #: the file name, for messages
    #: Worker processes sharing the listening sockets (``supervisor.py``); 1 = no supervisor.
    workers: int = 1


# --- addresses ------------------------------------------------------------------------

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")
_PORT = re.compile(r"[0-9]{1,5}")


def _split_host_port(value: str) -> tuple[str, str | None]:
    """``host:port`` or ``[v6]:port`` → (host, port text or None); checks the host."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            raise ValueError(f"{value!r} has no closing ']'; write IPv6 as [::1]:8443")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address; write e.g. [::1]:8443") from None
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected {rest!r} after ']'; write [{host}]:port")
        return host, rest[1:] if rest else None
    if value.count(":") > 1:
        raise ValueError(f"{value!r}: IPv6 addresses must be in brackets; write e.g. [::1]:8443")
    host, colon, port = value.partition(":")
    if not host:
        raise ValueError(f"{value!r} has no host; write e.g. 127.0.0.1{value} or 0.0.0.0{value}")
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"{host!r} is not a valid host name or IP address; write e.g. 127.0.0.1")
    return host, port if colon else None


def _parse_port(text: str, value: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ValueError(f"port {text!r} in {value!r} is not a number from 0 to 65535; fix it")
    return int(text)


def parse_socket_address(value: str) -> SocketAddress:
    """Parse ``host:port`` or ``[ipv6]:port``; raise ValueError with a readable reason."""
    host, port = _split_host_port(value)
    if port is None:
        raise ValueError(f"{value!r} has no port; write host:port, e.g. 127.0.0.1:8443")
    return SocketAddress(host, _parse_port(port, value))


def _parse_unix_backend(value: str, path: str) -> BackendAddress:
    if path.startswith("//"):  # unix:///run/app.sock, as Docker writes it
        if not path.startswith("///"):
            raise ValueError(f"{value!r}: unix:// needs an absolute path; write unix:/path/to.sock")
        path = path[2:]
    if not path:
        raise ValueError("the unix socket path is empty; write unix:/path/to.sock")
    if "\0" in path:
        raise ValueError("the unix socket path contains a NUL byte; remove it")
    return BackendAddress("unix", unix_path=path)


def parse_backend(value: str) -> BackendAddress:
    """Parse ``http://host[:port][/]`` or ``unix:/path``; raise ValueError with a reason."""
    scheme, colon, rest = value.partition(":")
    scheme = scheme.lower()
    if colon and scheme == "unix":
        return _parse_unix_backend(value, rest)
    if not colon or not rest.startswith("//"):
        raise ValueError(f"{value!r} has no scheme; write http://{value} or unix:/path/to.sock")
    if scheme == "https":
        raise ValueError(f"https:// backends are not supported yet; {BACKEND_FORMS}")
    if scheme != "http":
        raise ValueError(f"unsupported scheme {scheme + '://'!r}; {BACKEND_FORMS}")
    after_slashes = rest[2:]
    end = next((i for i, char in enumerate(after_slashes) if char in "/?#"), len(after_slashes))
    authority, tail = after_slashes[:end], after_slashes[end:]
    if tail not in ("", "/"):
        raise ValueError(f"a backend URL cannot carry a path or query ({tail!r}); {BACKEND_FORMS}")
    if "@" in authority:
        raise ValueError("credentials in a backend URL are not supported; remove the 'user@' part")
    if not authority:
        raise ValueError(f"{value!r} has no host; {BACKEND_FORMS}")
    host, port_text = _split_host_port(authority)
    port = 80 if port_text is None else _parse_port(port_text, value)
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot be connected to; give the backend's port")
    return BackendAddress("http", host=host, port=port)


# --- where a key is in the text -------------------------------------------------------

_KEY = r"(?:\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)"
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?")
_TABLE_HEADER = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?")
_KEY_LINE = re.compile(rf"\s*({_DOTTED})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY, dotted)
    return tuple(part[1:-1] if part[0] in "\"'" else part for part in parts)


class _Locator:
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


# --- reading tables -------------------------------------------------------------------


def _format_path(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _describe(value: object) -> str:
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
class _Context:
    source: str
    locator: _Locator
    base_dir: Path

    def error(self, path: KeyPath, problem: str, *, at: KeyPath | None = None) -> ConfigError:
        line = self.locator.line_of(path if at is None else at)
        where = self.source if line is None else f"{self.source}:{line}"
        return ConfigError(f"{where}: {_format_path(path)}: {problem}")


@dataclass(frozen=True, slots=True)
class _Table:
    ctx: _Context
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
            raise self.error(key, f"must be a string, not {_describe(value)}; write {example}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(
                key, f"must be true or false, not {_describe(value)}; write it unquoted"
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

    def table(self, key: str) -> _Table | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table, not {_describe(value)}; write [{key}]")
        return _Table(self.ctx, value, (*self.path, key))

    def tables(self, key: str) -> list[_Table]:
        value = self.require(key, f"at least one [[{key}]] table")
        if isinstance(value, Mapping):
            raise self.error(key, f"must be an array of tables; write [[{key}]] (two brackets)")
        if not isinstance(value, list):
            raise self.error(
                key, f"must be an array of tables, not {_describe(value)}; write [[{key}]]"
            )
        if not value:
            raise self.error(key, f"missing; add at least one [[{key}]] table")
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                problem = f"must be a table, not {_describe(item)}; write [[{key}]] tables"
                raise self.ctx.error((*self.path, key, index), problem)
        return [_Table(self.ctx, item, (*self.path, key, i)) for i, item in enumerate(value)]


# --- the sections ---------------------------------------------------------------------

_TOP_KEYS = ("workers", "listener", "route", "admin", "limits")
#: ``workers = 2`` written below a table header lands in that table (TOML's rule).
_TOP_LEVEL_HINTS = {
    "workers": "is a top-level key; move it above the first [table] or [[table]] of the file"
}
_MOVED_TO_LISTENER = {
    "enable_connect_protocol": "belongs to the [[listener]] table; move it above [listener.tls]"
}


def _parse_listener(table: _Table) -> ListenerConfig:
    table.check_keys(("bind", "tls", "enable_connect_protocol"), hints=_TOP_LEVEL_HINTS)
    bind = table.address("bind", 'bind = "127.0.0.1:8443"')
    tls_table = table.table("tls")
    tls = None if tls_table is None else _parse_tls(tls_table)
    return ListenerConfig(bind, tls, _connect_protocol_setting(table))


def _connect_protocol_setting(table: _Table) -> bool | Literal["auto"]:
    value = table.data.get("enable_connect_protocol", "auto")
    if value == "auto" or isinstance(value, bool):
        return value
    raise table.error(
        "enable_connect_protocol",
        f'must be "auto", true or false, not {_describe(value)}; write e.g. '
        'enable_connect_protocol = "auto"',
    )


def advertises_connect_protocol(config: ProxyConfig, listener: ListenerConfig) -> bool:
    """Whether ``listener`` sends SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.

    Browsers read the setting as "WebSocket over HTTP/2 works here" and do not fall back to
    HTTP/1.1 when the extended CONNECT then fails, so "auto" advertises it only when some
    route can take WebSockets.
    """
    if listener.enable_connect_protocol == "auto":
        return any(route.websocket for route in config.routes)
    return bool(listener.enable_connect_protocol)


def _parse_tls(table: _Table) -> TLSConfig:
    table.check_keys(("cert", "key"), hints=_MOVED_TO_LISTENER)
    return TLSConfig(
        cert=table.file("cert", 'cert = "cert.pem"'), key=table.file("key", 'key = "key.pem"')
    )


def _parse_route(table: _Table) -> RouteConfig:
    table.check_keys(("path", "backend", "x_forwarded", "websocket"), hints=_TOP_LEVEL_HINTS)
    path = table.string("path", 'path = "/"')
    if not path.startswith("/"):
        raise table.error("path", f'must start with "/"; write path = "/{path}"')
    if any(char in "?#" or char.isspace() or not char.isprintable() for char in path):
        problem = "must not contain '?', '#', spaces or control characters"
        raise table.error("path", f'{problem}; give a plain path prefix such as "/chat"')
    example = 'backend = "http://127.0.0.1:9000"'
    try:
        backend = parse_backend(table.string("backend", example))
    except ValueError as exc:
        raise table.error("backend", str(exc)) from None
    if backend.scheme == "unix" and not os.path.isabs(backend.unix_path):
        unix_path = os.path.abspath(table.ctx.base_dir / backend.unix_path)
        backend = BackendAddress("unix", unix_path=unix_path)
    return RouteConfig(
        path, backend, table.boolean("x_forwarded", True), table.boolean("websocket", True)
    )


def _parse_admin(table: _Table) -> AdminConfig:
    table.check_keys(("bind",), hints=_TOP_LEVEL_HINTS)
    return AdminConfig(table.address("bind", 'bind = "127.0.0.1:9901"'))


def parse_workers(value: object) -> int:
    """``workers``: an integer from 1 to :data:`MAX_WORKERS`, or ``"auto"`` (one per CPU,
    capped at :data:`MAX_WORKERS`); raise ValueError with a readable reason."""
    if value == "auto":
        return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
    if isinstance(value, bool) or not isinstance(value, int):
        problem = f'must be an integer or "auto", not {_describe(value)}; write e.g. workers = 2'
        raise ValueError(problem)  # noqa: TRY004 (as parse_backend: the caller adds the key)
    if not 1 <= value <= MAX_WORKERS:
        raise ValueError(f"{value} is out of range; use a value from 1 to {MAX_WORKERS}")
    return value


def _workers_setting(root: _Table) -> int:
    try:
        return parse_workers(root.data.get("workers", 1))
    except ValueError as exc:
        raise root.error("workers", str(exc)) from None


def _limit_value(table: _Table, name: str) -> float | int:
    value, default = table.data[name], getattr(Limits(), name)
    example = f"write e.g. {name} = {default}"
    if name in _INT_LIMITS:
        low, high = _INT_LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise table.error(name, f"must be an integer, not {_describe(value)}; {example}")
        if not low <= value <= high:
            raise table.error(name, f"{value} is out of range; use a value from {low} to {high}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise table.error(name, f"must be a number of seconds, not {_describe(value)}; {example}")
    if not math.isfinite(value):
        raise table.error(name, f"must be a finite number of seconds; {example}")
    if name in _ZERO_DISABLES and value < 0:
        raise table.error(name, "must not be negative; use 0 to disable it")
    if name not in _ZERO_DISABLES and value <= 0:
        raise table.error(name, f"must be greater than 0 seconds; {example}")
    return float(value)


def _parse_limits(table: _Table) -> Limits:
    names = [limit.name for limit in fields(Limits)]
    table.check_keys(names, hints=_TOP_LEVEL_HINTS)
    values: dict[str, Any] = {
        name: _limit_value(table, name) for name in names if name in table.data
    }
    return Limits(**values)


def _bind_key(address: SocketAddress) -> tuple[str, int]:
    try:
        host = ipaddress.ip_address(address.host).compressed
    except ValueError:
        host = address.host.lower()
    return host, address.port


def _check_binds(
    ctx: _Context, listeners: Sequence[ListenerConfig], admin: AdminConfig | None
) -> None:
    seen: dict[tuple[str, int], int] = {}
    for index, listener in enumerate(listeners):
        key = _bind_key(listener.bind)
        if listener.bind.port and key in seen:
            used = f"{listener.bind} is already used by listener[{seen[key]}]"
            raise ctx.error(("listener", index, "bind"), f"{used}; give each its own address")
        seen.setdefault(key, index)
    if admin is not None and admin.bind.port:
        other = seen.get(_bind_key(admin.bind))
        if other is not None:
            used = f"{admin.bind} is already used by listener[{other}]"
            raise ctx.error(("admin", "bind"), f"{used}; give the admin server its own port")


def _check_paths(ctx: _Context, routes: Sequence[RouteConfig]) -> None:
    seen: dict[str, int] = {}
    for index, route in enumerate(routes):
        if route.path in seen:
            used = f"{route.path!r} is already the path of route[{seen[route.path]}]"
            raise ctx.error(("route", index, "path"), f"{used}; give each route its own path")
        seen[route.path] = index


def parse_config(
    data: Mapping[str, object],
    *,
    source: str = "<memory>",
    text: str | None = None,
    base_dir: Path | None = None,
) -> ProxyConfig:
    """Validate parsed TOML into a :class:`ProxyConfig`; raise :class:`ConfigError`.

    ``text`` (the raw TOML) lets messages carry line numbers; ``base_dir`` (default: the
    current directory) anchors relative paths.
    """
    ctx = _Context(source, _Locator(text), base_dir if base_dir is not None else Path.cwd())
    root = _Table(ctx, data, ())
    root.check_keys(_TOP_KEYS)
    workers = _workers_setting(root)
    listeners = tuple(_parse_listener(table) for table in root.tables("listener"))
    routes = tuple(_parse_route(table) for table in root.tables("route"))
    admin_table, limits_table = root.table("admin"), root.table("limits")
    admin = None if admin_table is None else _parse_admin(admin_table)
    limits = Limits() if limits_table is None else _parse_limits(limits_table)
    _check_binds(ctx, listeners, admin)
    _check_paths(ctx, routes)
    return ProxyConfig(listeners, routes, admin, limits, source, workers)


# --- files ----------------------------------------------------------------------------

_TOML_POSITION = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)$")


def _syntax_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)  # "Invalid value (at line 3, column 9)"
    match = _TOML_POSITION.search(message)
    if match is None:
        return ConfigError(f"{source}: invalid TOML: {message}; fix the syntax")
    what = message[: match.start()]
    if match[1] is None:
        line, what = text.count("\n") + 1, f"{what} at the end of the file"
    else:
        line, what = int(match[1]), f"{what} (column {match[2]})"
    return ConfigError(f"{source}:{line}: invalid TOML: {what}; fix the syntax")


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read, parse and validate a TOML config file; raise :class:`ConfigError`."""
    source = os.fspath(path)
    try:
        raw = Path(source).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            f"{source}: cannot read the config file ({reason}); check the path"
        ) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}: not valid UTF-8; save the file as UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, text, exc) from exc
    base_dir = Path(os.path.abspath(source)).parent
    return parse_config(data, source=source, text=text, base_dir=base_dir)


def _refuse_password() -> bytes:
    raise ConfigError("the TLS private key is encrypted; give an unencrypted key")


def build_server_ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    """Server context for a TLS listener: the cert/key, ALPN h2 + http/1.1, TLS 1.2 or newer.

    TLS 1.2 gets only the AEAD ECDHE suites and no compression or renegotiation, as
    RFC 9113 §9.2 requires for HTTP/2. Raises :class:`ConfigError` naming both files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    try:
        context.load_cert_chain(tls.cert, tls.key, password=_refuse_password)
    except (OSError, ssl.SSLError, ConfigError) as exc:
        reason = exc.message if isinstance(exc, ConfigError) else str(exc)
        raise ConfigError(
            f"{tls.cert}, {tls.key}: cannot load the TLS certificate and key ({reason}); "
            "give a PEM certificate chain and its matching PEM private key"
        ) from exc
    return context
