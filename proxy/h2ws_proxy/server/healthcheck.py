"""``h2ws-proxy healthcheck --admin HOST:PORT``: ask a running proxy's admin server whether
it is alive, for a container's ``HEALTHCHECK`` (an image with no curl or wget).

One ``GET`` (``/healthz`` by default, ``--path /readyz`` for readiness) over a new
connection, each step within ``--timeout-s``; exit 0 on a 200, else 1 with one line on
stderr saying what was wrong. The standard library only (``http.client``): no event loop,
nothing to install.
"""

from __future__ import annotations

import argparse
import http.client
import sys
from collections.abc import Sequence

from h2ws_proxy.config import parse_socket_address


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="h2ws-proxy healthcheck",
        description="GET the admin server's /healthz: exit 0 on 200, else 1.",
    )
    parser.add_argument(
        "--admin", metavar="HOST:PORT", required=True, help="the admin server ([admin] bind)"
    )
    parser.add_argument("--path", default="/healthz", help="/healthz (default) or /readyz")
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=3.0,
        help="seconds to connect, and for each read (default 3)",
    )
    return parser


def healthcheck_main(argv: Sequence[str]) -> int:
    """The subcommand: 0 when the admin server answers 200, 1 otherwise, 2 for bad usage."""
    args = _parser().parse_args(argv)
    try:
        address = parse_socket_address(args.admin)
    except ValueError as error:
        print(f"h2ws-proxy healthcheck: --admin {args.admin}: {error}", file=sys.stderr)
        return 2
    if not args.path.startswith("/"):
        print(f"h2ws-proxy healthcheck: --path {args.path}: must start with /", file=sys.stderr)
        return 2
    problem = check(address.host, address.port, args.path, args.timeout_s)
    if problem is not None:
        print(f"h2ws-proxy healthcheck: {address}{args.path}: {problem}", file=sys.stderr)
        return 1
    return 0


def check(host: str, port: int, path: str, timeout_s: float) -> str | None:
    """GET ``path``: None on a 200, else what went wrong."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path, headers={"User-Agent": "h2ws-proxy-healthcheck"})
        response = connection.getresponse()
        body = response.read(200).decode("utf-8", "replace").strip()
    except (OSError, http.client.HTTPException) as error:
        return f"no answer: {error or type(error).__name__}"
    finally:
        connection.close()
    if response.status != 200:
        return f"{response.status} {body}".rstrip()
    return None
