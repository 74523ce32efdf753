"""Host names and origins as routes match them: one canonical form, at load and per request. Pure.

The config stores a route's ``host`` and ``allowed_origins`` in the forms below (checked and
canonicalised by :mod:`~h2ws_proxy.config.routes`), and the relay brings what a request
carries to the same forms before comparing, so a match is a string comparison or a dict
access. Both sides use these functions: there is one definition of each form.

Rules:

* A host is lowercase, with no port and no trailing dot (``Chat.Example.COM.:8443`` is
  ``chat.example.com``); an IPv6 literal stays in brackets, compressed (``[0:0::1]`` is
  ``[::1]``).
* A wildcard ``*.example.com`` stands for exactly one label more: ``a.example.com``, not
  ``example.com`` and not ``a.b.example.com``, as a TLS certificate's wildcard does
  (RFC 6125 §6.4.3). So a host has at most one wildcard that can match it, the one made
  of its :func:`parent_domain`, and looking it up is one dict access.
* An origin is RFC 6454 §6.2's serialisation, ``scheme://host[:port]``: ``http`` or
  ``https``, the host canonical as above, the scheme's default port left out
  (``https://x:443`` is ``https://x``). ``*.`` may stand for the host's first label, with
  the same one-label rule. ``null`` (the opaque origin of sandboxed frames, ``file:``
  pages and some redirects: any site can produce it) is not an origin here, so no list
  entry matches it.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "DEFAULT_PORTS",
    "authority_host",
    "canonical_host",
    "canonical_origin",
    "origin_allowed",
    "parent_domain",
]

#: RFC 6454 §4: the origins a page can have over HTTP, and their default ports.
DEFAULT_PORTS = {"http": 80, "https": 443}
#: Dot-separated labels of letters, digits, ``-`` and ``_`` (seen in internal names), none
#: empty, none starting or ending with ``-``.
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
#: ``scheme://host[:port]`` with nothing after (a trailing ``/`` is the caller's to drop).
_ORIGIN = re.compile(r"([a-z][a-z0-9+.-]*)://(\[[^\]/]*\]|[^/:\[\]]+)(?::([0-9]{1,5}))?")


def canonical_host(text: str, *, wildcard: bool = False) -> str | None:
    """``text`` (a host name or a bracketed IPv6 literal, no port) in canonical form, or None
    when it is neither; with ``wildcard``, ``*.`` may replace the first label of a name."""
    host = text.lower().removesuffix(".")
    if host.startswith("["):
        return _ipv6_literal(host)
    if wildcard and host.startswith("*."):
        name = host[2:]
        return host if _HOST_NAME.fullmatch(name) else None
    return host if _HOST_NAME.fullmatch(host) else None


def _ipv6_literal(text: str) -> str | None:
    """``[address]`` compressed, or None (zone ids, ``%``, are not for Host fields)."""
    if not text.endswith("]") or "%" in text:
        return None
    try:
        return f"[{ipaddress.IPv6Address(text[1:-1]).compressed}]"
    except ValueError:
        return None


def authority_host(authority: str) -> str:
    """The host of a request's ``:authority`` or ``Host`` (already checked as ``host[:port]``),
    canonical for a name or an IPv6 literal; a host no route could name comes back
    lowercased, and simply matches none. Runs per request when routes name hosts."""
    if authority.startswith("["):
        literal = authority[: authority.find("]") + 1].lower()
        return _ipv6_literal(literal) or literal
    host = authority.partition(":")[0].lower()
    return host[:-1] if host.endswith(".") else host


def parent_domain(host: str) -> str | None:
    """What ``*.`` stands before in the one wildcard that matches ``host``
    (``a.example.com``: ``example.com``), or None for a single label or an IP literal."""
    dot = host.find(".")
    if dot <= 0 or host.startswith("["):
        return None
    return host[dot + 1 :]


def canonical_origin(text: str, *, wildcard: bool = False) -> str | None:
    """``text`` as a serialised origin in canonical form, or None when it is not one (a
    path, another scheme, ``null``, a list); with ``wildcard``, ``*.`` may replace the
    host's first label."""
    match = _ORIGIN.fullmatch(text.lower())
    if match is None:
        return None
    scheme, host_text, port_text = match.groups()
    default_port = DEFAULT_PORTS.get(scheme)
    host = canonical_host(host_text, wildcard=wildcard)
    if default_port is None or host is None:
        return None
    if port_text is None:
        return f"{scheme}://{host}"
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    return f"{scheme}://{host}" if port == default_port else f"{scheme}://{host}:{port}"


def origin_allowed(origin: str, allowed: tuple[str, ...]) -> bool:
    """Whether canonical ``origin`` is listed in ``allowed`` (canonical, ``*.`` wildcards
    included): the origin itself, or the one wildcard that can match it."""
    if origin in allowed:
        return True
    scheme, _, rest = origin.partition("://")
    dot = rest.find(".")
    if dot <= 0 or rest.startswith("["):
        return False
    return f"{scheme}://*{rest[dot:]}" in allowed
