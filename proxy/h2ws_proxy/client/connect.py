"""``h2ws-proxy connect URL``: a WebSocket from the terminal, over HTTP/2 when it can.

The path taken:

1. ``ws://``/``wss://`` or ``--http1``: an HTTP/1.1 upgrade (TLS offers ALPN http/1.1).
2. Otherwise dial (TLS offers ALPN h2 and http/1.1). A TLS server that picks http/1.1, or
   none, gets the HTTP/1.1 upgrade on that same connection. Else HTTP/2 (h2c by prior
   knowledge on cleartext): wait for the server's SETTINGS, then extended CONNECT.
3. A server without extended CONNECT (SETTINGS without ENABLE_CONNECT_PROTOCOL, or no
   HTTP/2 at all): a new connection and the HTTP/1.1 upgrade; ``--http2-only``: exit 6.
4. The WebSocket runs (:mod:`.messages`) until it closes; then the HTTP/2 stream gets its
   END_STREAM and the connection a GOAWAY.

Rules: one line on stderr for any failure, prefixed ``h2ws-proxy connect:``, and the exit
code of :class:`~.options.Exit`; ``-v`` adds the path taken on stderr, lines starting
``*`` (what we did) or ``<`` (what the server answered).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import trio
from wsproto.connection import Connection, ConnectionType

from h2ws_proxy.client.dial import Dialled, dial
from h2ws_proxy.client.h1_open import upgrade
from h2ws_proxy.client.h2_open import new_connection, open_tunnel
from h2ws_proxy.client.messages import MessageLoop
from h2ws_proxy.client.options import ClientFailure, ConnectOptions, Exit, parse_options
from h2ws_proxy.transport.errors import STREAM_GONE

PROG = "h2ws-proxy connect"
#: After our GOAWAY, how long the server may take to close before we close anyway.
GOAWAY_GRACE_S = 1.0


def connect_main(argv: Sequence[str]) -> int:
    """The subcommand; returns the exit code (argparse exits 2 by itself on bad usage)."""
    options = parse_options(argv)
    try:
        trio.run(_connect, options)
    except KeyboardInterrupt:
        return 130  # the shell's convention for SIGINT
    except BaseException as error:  # a ClientFailure, maybe in groups; others re-raised
        failure = _failure_in(error)
        if failure is None:
            raise
        print(f"{PROG}: {failure.line}", file=sys.stderr)
        return int(failure.code)
    return int(Exit.CLEAN)


def _failure_in(error: BaseException) -> ClientFailure | None:
    """The ClientFailure in ``error``, also from inside trio's exception groups."""
    if isinstance(error, ClientFailure):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            if (found := _failure_in(inner)) is not None:
                return found
    return None


class Verbose:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, line: str) -> None:
        if self.enabled:
            print(line, file=sys.stderr, flush=True)


async def _connect(options: ConnectOptions) -> None:
    log = Verbose(options.verbose)
    target = options.target
    if options.http1:
        await _over_http1(options, log)
        return
    dialled = await dial(options, ["h2", "http/1.1"])
    log(f"* connected to {target.host}:{target.port}" + _alpn_note(dialled, options))
    if target.tls and dialled.alpn != "h2":
        if options.http2_only:
            await trio.aclose_forcefully(dialled.stream)
            raise ClientFailure(
                Exit.NO_EXTENDED_CONNECT,
                f"{target.host}:{target.port} does not offer HTTP/2 (ALPN chose "
                f"{dialled.alpn or 'nothing'}); drop --http2-only to use HTTP/1.1",
            )
        await _run_http1(dialled.stream, options, log)
        return
    if await _over_http2(dialled, options, log):
        return
    if options.http2_only:
        raise ClientFailure(
            Exit.NO_EXTENDED_CONNECT,
            f"{target.host}:{target.port} does not take WebSockets over HTTP/2 (no "
            "SETTINGS_ENABLE_CONNECT_PROTOCOL); drop --http2-only to use HTTP/1.1",
        )
    log("* falling back to an HTTP/1.1 upgrade on a new connection")
    await _over_http1(options, log)


def _alpn_note(dialled: Dialled, options: ConnectOptions) -> str:
    if not options.target.tls:
        return " (cleartext)"
    return f" (TLS, ALPN: {dialled.alpn or 'none'})"


async def _over_http1(options: ConnectOptions, log: Verbose) -> None:
    dialled = await dial(options, ["http/1.1"])
    where = f"{options.target.host}:{options.target.port}"
    log(f"* connected to {where}{_alpn_note(dialled, options)}")
    await _run_http1(dialled.stream, options, log)


async def _run_http1(stream: trio.abc.Stream, options: ConnectOptions, log: Verbose) -> None:
    try:
        ws = await upgrade(stream, options, log)
        await MessageLoop(stream, ws, options, log).run()
    finally:
        await trio.aclose_forcefully(stream)


async def _over_http2(dialled: Dialled, options: ConnectOptions, log: Verbose) -> bool:
    """The WebSocket over HTTP/2; False (nothing done) if the server does not take it."""
    target = options.target
    connection = new_connection(dialled.stream, f"{target.host}:{target.port}")
    run_done = trio.Event()

    async def run() -> None:
        try:
            await connection.run()
        finally:
            run_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            tunnel = await open_tunnel(connection, options, log)
            if tunnel is None:
                return False
            ws = Connection(ConnectionType.CLIENT)
            try:
                await MessageLoop(tunnel.channel, ws, options, log).run()
                await tunnel.channel.send_eof()  # the WebSocket closed: END_STREAM
            except STREAM_GONE:
                pass  # the close handshake completed; the stream's end does not matter
            return True
        finally:
            # GOAWAY, then give the server a moment to close: its close ends our reader
            # (and lets the writer flush the GOAWAY first); we stop waiting after the grace.
            connection.close()
            with trio.move_on_after(GOAWAY_GRACE_S):
                await run_done.wait()
            nursery.cancel_scope.cancel()
