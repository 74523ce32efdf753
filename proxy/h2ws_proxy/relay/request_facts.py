"""What a repeated request's records share: its facts, made once per client connection.

A client repeats its requests (the same HPACK block gives the same ``HttpRequest`` object),
so the fields of a record that come from the request, its route and the connection (front,
connection id, method, target, host, client, user agent, route) are the same from one
request to the next. :class:`RequestFacts` holds them once, with what a record's end
derives from them: the ``requests`` counter's key for the last status seen, and the access
line's kept pieces (``LineSink.kept_access_line``) for the last backend, status and end.
A record begun from them (``RelayRecord.of_facts``) copies the fields and, at its end,
counts itself and writes its line from these instead of a key of fifteen values per line.

Rules:

* Facts describe one request object on one route of one client connection: the caller
  keeps one beside the connection's last request (``relay/kept_start.py``'s ``LastRequest``)
  and makes new ones when either changes (:meth:`RequestFacts.made_for` is False), so
  nothing here is ever stale for the record begun from it. A record whose fields change
  after its start (a refusal naming another route) drops its facts.
* The kept pieces are the sink's own, taken from its bounded templates once it kept them
  (so lines are written from kept pieces from the third of a kind on, as before), and are
  valid for that sink while its process fields stay (while its ``kept_access_templates``
  is the same dict: a change of the fields replaces it, a full one is only cleared); they
  are used only for a line whose every other value (backend, status, end, no error, no
  close codes) is the one they were taken with. Bounded: one set of pieces per client
  connection, each at most the sink's budget for one template.
* Times come from the run's clock (``trio.lowlevel.current_clock()``, bound once here: a
  connection's facts live inside its run), so a MockClock drives them in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import trio

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.counters import status_label
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.relay.outcome import RelayEnd


class RequestFacts:
    """The constant fields of one repeated request's records, and what is derived from them."""

    __slots__ = (
        "agent",
        "authority",
        "client",
        "connection_id",
        "count_key",
        "count_status",
        "fields",
        "front",
        "kept_backend",
        "kept_end",
        "kept_from",
        "kept_pieces",
        "kept_status",
        "method",
        "now",
        "path",
        "request",
        "route",
        "route_config",
    )

    def __init__(
        self,
        front: str,
        connection_id: int,
        client: str,
        request: HttpRequest,
        route: RouteConfig,
    ) -> None:
        #: What these facts were made from (held: their identities are the cache's key).
        self.request, self.route_config = request, route
        self.front, self.connection_id, self.client = front, connection_id, client
        self.method, self.path, self.authority = request.method, request.target, request.authority
        self.route = route.path
        self.agent = first_user_agent(request.headers)
        #: A record's fields from these, in ``RelayRecord.of_facts``'s order (one unpacking).
        self.fields = (
            front, connection_id, "request", self.method, self.path, self.authority, client,
            self.agent, self.route,
        )  # fmt: skip
        #: The run's clock (``trio.current_time`` without finding the runner each time).
        self.now: Callable[[], float] = trio.lowlevel.current_clock().current_time
        #: The ``requests`` counter's key (route, front, status label) for ``count_status``.
        self.count_status: int | None = -1
        self.count_key: tuple[str, str, str] = ("", "", "")
        #: The access line's pieces, for the sink epoch, backend, status and end they were
        #: taken with (``kept_from``: the sink's templates they were taken from; None: none).
        self.kept_from: object = None
        self.kept_pieces: tuple[str, ...] = ()
        self.kept_backend = ""
        self.kept_status: int | None = None
        self.kept_end: RelayEnd | None = None

    def made_for(self, request: HttpRequest, route: RouteConfig) -> bool:
        """True: these facts are ``request``'s on ``route`` (the same objects)."""
        return self.request is request and self.route_config is route

    def requests_key(self, status: int | None) -> tuple[str, str, str]:
        """The ``requests`` counter's key for a record of these facts answered ``status``."""
        if status != self.count_status:
            self.count_key = (self.route, self.front, status_label(status))
            self.count_status = status
        return self.count_key


def first_user_agent(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The first ``User-Agent`` of a request's fields (lowercase names); None: none."""
    for name, value in headers:
        if name == b"user-agent":
            return value
    return None
