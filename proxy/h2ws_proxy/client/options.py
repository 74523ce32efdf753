"""The ``h2ws-proxy connect`` command line: its options, the URL, the exit codes.

Rules:

* ``https://`` and ``http://`` URLs mean HTTP/2 first (TLS with ALPN, or h2c by prior
  knowledge), HTTP/1.1 when the server does not take extended CONNECT; ``wss://`` and
  ``ws://`` mean HTTP/1.1 only, as browsers do.
* Every failure is a :class:`ClientFailure`: one line for stderr that says what to do next,
  and its exit code. Codes are part of the interface (scripts test them): never renumber.
"""

from __future__ import annotations

import argparse
import enum
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass


class Exit(enum.IntEnum):
    """The command's exit codes."""

    CLEAN = 0  # the close handshake completed (ours or the server's, 1000 or 1001)
    UNEXPECTED = 1  # a bug or an error nobody foresaw
    USAGE = 2  # bad arguments (argparse's own code)
    CONNECTION = 3  # DNS, refused, timeout, TLS, or the server broke the protocol before 200
    REFUSED = 4  # the server answered the handshake with another status than 200 / 101
    ABNORMAL_CLOSE = 5  # the server closed with another code, or without a Close at all
    NO_EXTENDED_CONNECT = 6  # --http2-only, and the server does not take extended CONNECT


class ClientFailure(Exception):
    """A failure the user can act on: ``line`` (one line) and the exit ``code``."""

    def __init__(self, code: Exit, line: str) -> None:
        super().__init__(line)
        self.code = code
        self.line = line


@dataclass(frozen=True)
class Target:
    """Where to connect and what to ask for, from the URL."""

    tls: bool
    host: str
    port: int
    authority: str  # host[:port] as the request carries it (the port only if not default)
    path: str  # path and query, at least "/"
    http1_only: bool  # ws:// or wss://

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


@dataclass(frozen=True)
class ConnectOptions:
    target: Target
    http2_only: bool
    http1: bool
    binary: bool
    raw: bool
    headers: tuple[tuple[str, str], ...]
    subprotocols: tuple[str, ...]
    origin: str | None
    cacert: str | None
    insecure: bool
    verbose: bool
    connect_timeout_s: float
    close_timeout_s: float


#: scheme: (TLS, HTTP/1.1 only)
_SCHEMES = {
    "https": (True, False),
    "http": (False, False),
    "wss": (True, True),
    "ws": (False, True),
}


def parse_target(url: str) -> Target:
    """The :class:`Target` of ``url``; raises ValueError with what is wrong."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError("the URL must start with https://, http://, wss:// or ws://")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username or parts.password:
        raise ValueError("credentials in the URL are not supported; send a header with -H")
    tls, http1_only = _SCHEMES[parts.scheme]
    default_port = 443 if tls else 80
    try:
        port = parts.port or default_port
    except ValueError as error:
        raise ValueError(f"bad port: {error}") from None
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == default_port else f"{shown}:{port}"
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    return Target(tls, host, port, authority, path, http1_only)


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise argparse.ArgumentTypeError(f"{text!r}: write -H 'name: value'")
    return name, value.strip()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="h2ws-proxy connect",
        description="Open a WebSocket over HTTP/2 (RFC 8441 extended CONNECT), or HTTP/1.1, "
        "send stdin's lines as messages and print the messages received, one per line.",
        epilog="exit codes: 0 clean close, 3 connection failed, 4 handshake refused, "
        "5 server closed abnormally, 6 no extended CONNECT (--http2-only), 2 usage, 1 bug",
    )
    p.add_argument("url", help="https:// or http:// (HTTP/2 first), wss:// or ws:// (HTTP/1.1)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--http2-only", action="store_true", help="fail instead of falling back to HTTP/1.1"
    )
    mode.add_argument("--http1", action="store_true", help="use an HTTP/1.1 upgrade")
    p.add_argument("--binary", action="store_true", help="send lines as binary messages")
    p.add_argument("--raw", action="store_true", help="print binary messages raw, not as hex")
    p.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header field (repeatable)",
    )
    p.add_argument(
        "--subprotocol", dest="subprotocols", action="append", default=[], help="(repeatable)"
    )
    p.add_argument("--origin", help="the Origin header field")
    p.add_argument("--cacert", metavar="FILE", help="trust this CA (PEM) for https:// and wss://")
    p.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    p.add_argument("-v", "--verbose", action="store_true", help="print the path taken to stderr")
    p.add_argument("--connect-timeout-s", type=float, default=10.0, metavar="S")
    p.add_argument(
        "--close-timeout-s",
        type=float,
        default=5.0,
        metavar="S",
        help="how long to wait for the server's Close after ours (default 5)",
    )
    return p


def parse_options(argv: Sequence[str]) -> ConnectOptions:
    """The options; argparse exits with 2 and a usage line for bad ones."""
    p = parser()
    args = p.parse_args(argv)
    try:
        target = parse_target(args.url)
    except ValueError as error:
        p.error(f"{args.url}: {error}")
    if target.http1_only and args.http2_only:
        p.error(f"{args.url}: ws:// and wss:// URLs are HTTP/1.1; use https:// or http://")
    return ConnectOptions(
        target=target,
        http2_only=args.http2_only,
        http1=args.http1 or target.http1_only,
        binary=args.binary,
        raw=args.raw,
        headers=tuple(args.headers),
        subprotocols=tuple(args.subprotocols),
        origin=args.origin,
        cacert=args.cacert,
        insecure=args.insecure,
        verbose=args.verbose,
        connect_timeout_s=args.connect_timeout_s,
        close_timeout_s=args.close_timeout_s,
    )
