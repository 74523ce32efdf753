"""The connection's task drives a lean exchange (:mod:`~h2ws_proxy.http1.lean_exchange`).

Rules:

* One cancel scope per exchange; its deadline is the idle timer, moved as in the task path
  (``relay/exchange.py``, :func:`~h2ws_proxy.relay.exchange.idle_deadline`): a backend read
  or a client write is progress.
* The task waits on the poller's descriptor only; after each round it writes what the
  round queued for the client (without a timer when the kernel takes it all), and only
  then looks at how the exchange stands: a write that fails is the client's abort, as
  in the task path, whatever the backend did after it.
* The endings are :func:`~h2ws_proxy.relay.request_relay.relay_request`'s: a refusal is
  answered and ends the connection, an abort drops it, a clean end leaves it to the
  frontend's keep-alive rules; the record's status and ``opened`` are final on return.
"""

from __future__ import annotations

import trio

from h2ws_proxy.errors import BackendTimeout, ProxyError
from h2ws_proxy.http1.client_side import H1ClientSide
from h2ws_proxy.http1.lean_exchange import ClientWatch, LeanExchange
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.exchange import idle_deadline
from h2ws_proxy.relay.front_side import refuse
from h2ws_proxy.relay.outcome import RelayEnd
from h2ws_proxy.relay.record import RelayRecord
from h2ws_proxy.transport.errors import STREAM_GONE
from h2ws_proxy.transport.poller import BackendPoller


async def run_lean(
    exchange: LeanExchange,
    front: H1ClientSide,
    poller: BackendPoller,
    watch: ClientWatch,
    client_fd: int,
    record: RelayRecord,
    server: ServerContext,
) -> bool | None:
    """Run ``exchange`` to its end; True if it ran to its end cleanly, False after a
    refusal or an abort, None when the task path must retry it on a new connection."""
    result = exchange.result
    settled = False
    try:
        watch.exchange = exchange
        poller.register(client_fd, watch)  # (its place in the set carries over)
        await _drive(exchange, front, poller, server.config.limits.http_idle_timeout_s)
        watch.exchange = None
        settled = True
        if exchange.retry:
            exchange.stop(server.pool, keep=False)
            return None
        error = exchange.error
        if error is None:
            exchange.stop(server.pool, keep=result.reusable)
            record.stats.end = RelayEnd.CLEAN
            return True
        exchange.stop(server.pool, keep=False)
        poller.unregister(client_fd)
        if isinstance(error, ProxyError):
            await refuse(front, record, error)
        else:
            record.stats.end, record.error = error
            await front.cut_short()
        return False
    finally:
        watch.exchange = None
        if not settled:  # cancelled from outside, or a bug: nothing of it stays
            exchange.stop(server.pool, keep=False)
        if not exchange.retry:
            record.status = record.status or result.status
            record.opened = result.head_sent


async def _drive(
    exchange: LeanExchange, front: H1ClientSide, poller: BackendPoller, idle_timeout_s: float
) -> None:
    """Wait, dispatch, write, until the exchange is done (``exchange.error`` says how)."""
    scope = trio.CancelScope(deadline=idle_deadline(idle_timeout_s))
    push_at = scope.deadline - idle_timeout_s
    fd = poller.fileno()
    with scope:
        while True:
            moved = exchange.moved
            exchange.moved = False
            if exchange.out:
                data = bytes(exchange.out)
                exchange.out.clear()
                try:
                    await front.send_bytes(data)
                except STREAM_GONE as error:
                    exchange.error = (RelayEnd.CLIENT_ABORTED, f"client went away: {error}")
                    return
                moved = True
            if exchange.done:
                return
            if moved and trio.current_time() >= push_at:
                scope.deadline = idle_deadline(idle_timeout_s)
                push_at = scope.deadline - idle_timeout_s
            await trio.lowlevel.wait_readable(fd)
            poller.dispatch()
    if scope.cancelled_caught and exchange.error is None and not exchange.retry:
        reason = f"no byte moved either way for {idle_timeout_s}s"
        if exchange.result.head_sent:
            exchange.error = (RelayEnd.IDLE_TIMEOUT, reason)
        else:
            target = exchange.connection.address
            exchange.error = BackendTimeout(f"backend {target} did not answer: {reason}")
