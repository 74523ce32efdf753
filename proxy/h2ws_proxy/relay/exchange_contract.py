"""The exchange's contract with the front ends: the client side it drives, what it reports.

Each front end gives the exchange a :class:`ClientSide` for the client's end of one request;
the exchange fills an :class:`ExchangeResult` as it goes and raises :class:`ExchangeAborted`
once the answer has begun and then fails (the front end must then cut the answer short in
its protocol's way: an HTTP/2 reset, a closed HTTP/1.1 connection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from h2ws_proxy.relay.outcome import RelayEnd

Header = tuple[bytes, bytes]


class ClientSide(Protocol):
    """What the exchange needs from the client's end; each frontend provides one."""

    #: True when the client speaks HTTP/2 (response fields differ slightly).
    for_h2: bool
    #: True if :meth:`wait_gone` can tell that the client left (an HTTP/2 stream cannot,
    #: and need not: a reset cancels the exchange directly, so no watcher task is spawned).
    watches_disconnect: bool

    async def receive_body(self) -> bytes:
        """The next chunk of the request body; ``b""`` once it is complete.

        Raises trio.BrokenResourceError if the client broke off or broke the framing.
        """

    def request_trailers(self) -> list[Header]:
        """Trailer fields of the request, once :meth:`receive_body` returned ``b""``."""

    async def wait_gone(self) -> None:
        """Return if the client goes away while it waits for the answer; else never."""

    async def send_informational(self, status: int, headers: list[Header]) -> None: ...

    async def send_head(self, status: int, headers: list[Header], *, has_body: bool) -> None:
        """The final answer's head: ``headers`` as the backend's HTTP/1.1 parser gave them
        (names lowercase, values without surrounding whitespace), hop-by-hop fields removed."""

    async def send_body(self, data: bytes) -> None: ...

    async def end(self, trailers: list[Header]) -> None:
        """The answer is complete (with ``trailers`` if the client's protocol carries them)."""

    def hold(self) -> None:
        """What the answer writes from here may wait for :meth:`flush` to go out together.

        The exchange holds while it relays what one backend read brought, and flushes
        before it waits for the backend again and when it stops; the client side flushes
        itself before any wait of its own. A front end that writes at once ignores both.
        """

    def flush(self) -> None:
        """Send what was held (see :meth:`hold`), without waiting."""


class ExchangeAborted(Exception):
    """The exchange failed after the answer's head had gone to the client."""

    def __init__(self, end: RelayEnd, reason: str) -> None:
        super().__init__(reason)
        #: How the exchange ended: the side that failed, or the idle timeout.
        self.end = end
        self.reason = reason


@dataclass(slots=True)
class ExchangeResult:
    """What happened, for the frontend's decisions and the log record."""

    status: int | None = None
    #: True once the answer's head went to the client.
    head_sent: bool = False
    #: True once the whole request body reached the backend.
    request_complete: bool = False
    #: True if the backend connection may serve the next request (see backend_pool).
    reusable: bool = False
    #: True if the scope handed to ``on_start`` was cancelled (the caller decides what
    #: that means); the exchange then raised nothing.
    cancelled: bool = False
    #: A field the proxy adds to the backend's answer (a sticky cookie), or None.
    answer_field: tuple[bytes, bytes] | None = None


async def watch_client_gone(client: ClientSide, result: ExchangeResult) -> None:
    """While the answer is awaited: a client that leaves cancels the backend request
    (raises ExchangeAborted).

    Once the answer's head went out, the writes decide instead: a client that read a
    complete answer and closed is not an abort, and one that is gone breaks the next write.
    """
    await client.wait_gone()
    if result.head_sent:
        return
    raise ExchangeAborted(RelayEnd.CLIENT_ABORTED, "the client went away before the answer began")
