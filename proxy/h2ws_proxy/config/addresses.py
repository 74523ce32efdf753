"""Where things are: listener binds (``host:port``) and backends (``http://``, ``unix:``). Pure.

Rules:

* A socket address is ``host:port``, an IPv6 literal in brackets (``[::1]:8443``); the host
  is an IP address or a host name (letters, digits, ``_``, ``.``, ``-``); the port is 0 to
  65535, 0 asking the OS for a free one.
* A backend is ``http://host[:port][/]`` (port 80 by default, port 0 refused),
  ``https://host[:port]`` (443), ``h2c://host[:port]`` (HTTP/2 in cleartext by prior
  knowledge, RFC 9113 §3.3; port 80) or ``unix:/path/to.sock`` (also ``unix:///path``, as
  Docker writes it). Other schemes, credentials, a path or a query are refused.
* Errors are ``ValueError`` with a readable reason and what to write instead; the caller
  adds the file, line and key path (:mod:`h2ws_proxy.config.parse`).
"""

from __future__ import annotations

import ipaddress
import re

from h2ws_proxy.config.model import BackendAddress, SocketAddress

__all__ = ["BACKEND_FORMS", "parse_backend", "parse_socket_address"]

BACKEND_FORMS = "write http://host:port, https://host:port, h2c://host:port or unix:/path/to.sock"
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
    """Parse ``http://``, ``https://``, ``h2c://`` (``host[:port][/]``) or ``unix:/path``;
    raise ValueError with a reason."""
    scheme, colon, rest = value.partition(":")
    scheme = scheme.lower()
    if colon and scheme == "unix":
        return _parse_unix_backend(value, rest)
    if not colon or not rest.startswith("//"):
        raise ValueError(f"{value!r} has no scheme; write http://{value} or unix:/path/to.sock")
    if scheme not in ("http", "https", "h2c"):
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
    default_port = 443 if scheme == "https" else 80
    port = default_port if port_text is None else _parse_port(port_text, value)
    if port == 0:
        raise ValueError(f"{value!r}: port 0 cannot be connected to; give the backend's port")
    if scheme == "h2c":
        return BackendAddress("http", host=host, port=port, protocol="h2")
    return BackendAddress("https" if scheme == "https" else "http", host=host, port=port)
