"""A client's last routed HTTP/1.1 request, remembered by its connection.

A client repeats its requests. The request as the exchange takes it
(:func:`~h2ws_proxy.http.message.request_from_h1`) and its route depend on nothing but the
request's method, target, version and header lines, the connection's TLS and the server's
router; so a request equal to the last one takes them as they were, without translating and
routing it again, and, being the same objects, the same entry of kept_start's
:class:`~h2ws_proxy.relay.kept_start.LastRequest` (the backend request and its head, the
balancer). The HTTP/2 front end remembers its heads the same way (``http2/admission.py``).

Rules:

* Equal means byte-equal: the method, the target, the HTTP version and every header line as
  the client wrote it (names in their case, in their order). Anything else is translated
  and routed as itself.
* Kept with the router that routed it: after a reload (a new router) a request is routed
  afresh.
* Only a request that was translated and routed is remembered (a refused one raised
  first); one entry per connection: bounded.
* Only a small request (at most ``MAX_LINES`` header lines of ``MAX_BYTES`` in all) is
  remembered, and only then does kept_start's memory keep it: what an idle connection
  holds for a repeat must stay small beside what it holds anyway, for as long as the
  idle timeout lets it wait. A larger one forgets the last (and its lean start gets a
  memory of its own, dropped with it); clients repeat small requests.
"""

from __future__ import annotations

import h11

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.relay.kept_start import LastRequest
from h2ws_proxy.relay.routing import Router

#: A request's method, target, HTTP version and raw header lines, as h11 read them.
RequestFields = tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]

#: The largest request remembered: header lines, and bytes of target, names and values.
MAX_LINES = 64
MAX_BYTES = 8192


class H1RequestMemory:
    """One client connection's last routed request (see the module rules)."""

    __slots__ = ("_asked", "_fields", "_routed", "_router", "kept_start", "remembering")

    def __init__(self) -> None:
        self._fields: RequestFields | None = None
        self._router: Router | None = None
        self._routed: tuple[HttpRequest, RouteConfig] | None = None
        self._asked: RequestFields | None = None
        #: kept_start's memory of this connection's last lean request.
        self.kept_start = LastRequest()
        #: The request last asked of :meth:`recall` is small enough to be remembered.
        self.remembering = True

    def recall(
        self, request: h11.Request, router: Router
    ) -> tuple[HttpRequest, RouteConfig] | None:
        """The translated request and route of the last request if ``request`` equals it and
        ``router`` routed it; None: translate and route it, then :meth:`remember` them."""
        lines = request.headers.raw_items()
        target = request.target
        if len(lines) > MAX_LINES or (
            len(target) + sum([len(name) + len(value) for name, value in lines]) > MAX_BYTES
        ):
            self.forget()
            return None
        fields = (request.method, target, request.http_version, lines)
        if self._routed is not None and router is self._router and fields == self._fields:
            return self._routed
        self._asked = fields
        self.remembering = True
        return None

    def lean_memory(self) -> LastRequest:
        """kept_start's memory for the request last asked of :meth:`recall`: the
        connection's, or, for a request too large to remember, one of its own."""
        return self.kept_start if self.remembering else LastRequest()

    def forget(self) -> None:
        """Nothing remembered (a request too large to be: see the module rules)."""
        self._fields = self._asked = None
        self._router = self._routed = None
        self.kept_start = LastRequest()
        self.remembering = False

    def remember(self, router: Router, http_request: HttpRequest, route: RouteConfig) -> None:
        """The request last asked of :meth:`recall`, as translated and routed by ``router``."""
        if not self.remembering:
            return
        self._fields, self._router = self._asked, router
        self._routed = http_request, route
