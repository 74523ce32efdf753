"""One ``[[route]]`` table: where requests go and what reaches the backend. Pure.

Rules:

* ``path`` starts with ``/`` and holds no ``?``, ``#``, spaces or controls (uniqueness is
  the schema's check, across tables); ``backend`` is a backend URL (``addresses.py``).
* ``x_forwarded`` is ``true``, ``false`` or ``"append"``; ``websocket`` and
  ``normalize_path`` are booleans.
* ``strip_fields`` is an array of field names (RFC 9110 §5.1 tokens), stored lowercase with
  ``-`` for ``_`` (WSGI/CGI read both as one variable, so both spellings go). The
  fields the proxy manages itself cannot be listed: pseudo-headers (``:path``...), the
  hop-by-hop fields it never forwards, and those it writes on every backend request
  (``host``, ``content-length``, ``sec-websocket-*``). Stripping them would either do
  nothing or break the framing or the handshake, so a config that asks is a mistake.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Literal

from h2ws_proxy.config.addresses import parse_backend
from h2ws_proxy.config.model import BackendAddress, RouteConfig
from h2ws_proxy.config.tables import Table, describe

__all__ = ["ROUTE_KEYS", "parse_route"]

ROUTE_KEYS = ("path", "backend", "x_forwarded", "websocket", "normalize_path", "strip_fields")
#: RFC 9110 §5.6.2 ``token`` (``http/grammar.py`` holds the same; config sits below http).
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: RFC 9110 §7.6.1 and the de-facto ones: the proxy never forwards the client's (kept equal
#: to ``http/fields.HOP_BY_HOP``; a unit test checks).
HOP_BY_HOP_NAMES = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: Written by the proxy on every backend request (``content-length`` is our framing).
_SET_BY_PROXY = frozenset({"host", "content-length"})
_STRIP_EXAMPLE = 'strip_fields = ["x-internal-auth"]'


def parse_route(table: Table, hints: Mapping[str, str]) -> RouteConfig:
    """The route of ``table``; raises ConfigError naming the key and its line."""
    table.check_keys(ROUTE_KEYS, hints=hints)
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
        path,
        backend,
        x_forwarded=_x_forwarded(table),
        websocket=table.boolean("websocket", True),
        normalize_path=table.boolean("normalize_path", True),
        strip_fields=_strip_fields(table),
    )


def _x_forwarded(table: Table) -> bool | Literal["append"]:
    value = table.data.get("x_forwarded", True)
    if value == "append" or isinstance(value, bool):
        return value
    given = json.dumps(value) if isinstance(value, str) else describe(value)
    problem = f'must be true, false or "append", not {given}'
    raise table.error("x_forwarded", f"{problem}; write e.g. x_forwarded = true")


def _strip_fields(table: Table) -> frozenset[bytes]:
    value = table.data.get("strip_fields", [])
    if not isinstance(value, list):
        problem = f"must be an array of field names, not {describe(value)}"
        raise table.error("strip_fields", f"{problem}; write e.g. {_STRIP_EXAMPLE}")
    names: list[bytes] = []
    for item in value:
        if not isinstance(item, str):
            problem = f"must list field names as strings, not {describe(item)}"
            raise table.error("strip_fields", f"{problem}; write e.g. {_STRIP_EXAMPLE}")
        refusal = _unstrippable(item)
        if refusal is not None:
            raise table.error("strip_fields", f"{json.dumps(item)} {refusal}")
        # As backends read it: WSGI and CGI take "_" for "-" (http/fields.dashed).
        names.append(item.lower().replace("_", "-").encode("ascii"))
    return frozenset(names)


def _unstrippable(name: str) -> str | None:
    """Why ``name`` cannot be listed in ``strip_fields``, or None if it can."""
    lowered = name.lower()
    if name.startswith(":"):
        return "is a pseudo-header, not a field; the proxy writes the request line itself"
    if not _TOKEN.fullmatch(name):
        return (
            "is not a field name (letters, digits and !#$%&'*+-.^_`|~ only); "
            f"write e.g. {_STRIP_EXAMPLE}"
        )
    if lowered in HOP_BY_HOP_NAMES:
        return "is hop-by-hop: the proxy never forwards the client's; remove it from the list"
    if lowered in _SET_BY_PROXY or lowered.startswith("sec-websocket-"):
        return "is set by the proxy itself on the backend request; remove it from the list"
    return None
