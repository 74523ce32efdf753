"""The proxy's error tree.

Every error the proxy raises on purpose derives from :class:`ProxyError` and carries the
answer the client should get (``status_hint``, in the style of h11's ``error_status_hint``)
and what the metrics call it (``outcome``: a WebSocket handshake's ``outcome`` label, a fixed
word per kind of failure, never a message).
Library and OS exceptions are translated into these once, at the edge where they arise
(``backend.py`` for backend sockets, the frontends for client protocol errors), so the
code that decides never has to know which library failed.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Root of the tree; never raised directly."""

    status_hint: int = 502
    outcome: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ProxyError):
    """The configuration is unusable. The message names the file, key path and line."""

    status_hint = 500


class ClientProtocolError(ProxyError):
    """The client's request is malformed or not something we proxy.

    ``extra_headers`` go into the error response (``sec-websocket-version: 13`` for a
    version mismatch, RFC 6455 §4.4). ``stream_error`` marks a malformed request (RFC 9113
    §8.1.1): the HTTP/2 frontend resets the stream with PROTOCOL_ERROR after answering.
    """

    status_hint = 400

    def __init__(
        self,
        message: str,
        *,
        status_hint: int = 400,
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
        stream_error: bool = False,
    ) -> None:
        super().__init__(message)
        self.status_hint = status_hint
        self.outcome = _CLIENT_OUTCOMES.get(status_hint, "bad_request")
        self.extra_headers = extra_headers
        self.stream_error = stream_error


#: ClientProtocolError's outcome by its status (400 and any other: ``bad_request``).
_CLIENT_OUTCOMES = {426: "bad_version", 431: "headers_too_large", 501: "not_implemented"}


class RouteNotFound(ProxyError):
    """No route's prefix matches the request path."""

    status_hint = 404
    outcome = "no_route"


class MisdirectedRequest(ProxyError):
    """The request's host is not one the connection's certificate covers (RFC 9110
    §15.5.20): the client may retry on a connection of its own to that host."""

    status_hint = 421
    outcome = "misdirected"


class OriginRefused(ProxyError):
    """A WebSocket request from an ``Origin`` its route does not allow, or with none on a
    route that requires one (``allowed_origins``, ``require_origin``)."""

    status_hint = 403
    outcome = "origin_refused"

    def __init__(self, message: str, *, route: str) -> None:
        super().__init__(message)
        #: The path of the route that refused it (the metrics' route label).
        self.route = route


class TooManyRequests(ProxyError):
    """The client is over one of its own limits (``max_tunnels_per_client``)."""

    status_hint = 429
    outcome = "over_client_limit"


class BackendUnavailable(ProxyError):
    """The backend could not be reached (refused, unreachable, reset during handshake)."""

    status_hint = 502
    outcome = "backend_unavailable"


class BackendTimeout(ProxyError):
    """The backend did not connect or answer within the configured timeout."""

    status_hint = 504
    outcome = "timeout"


class BackendConnectFailed(BackendUnavailable):
    """The connect itself failed (refused, unreachable): nothing was sent, so the work may
    go to another server of the group."""

    outcome = "refused"


class BackendConnectTimeout(BackendTimeout):
    """The connect did not complete in time: nothing was sent (see BackendConnectFailed)."""

    outcome = "connect_timeout"


class NoServerAvailable(ProxyError):
    """Every server of the route's backend group is down, or busy past its queue time."""

    status_hint = 503
    outcome = "no_server"


class ShuttingDown(ProxyError):
    """The proxy drains: it takes no new tunnel (an HTTP/1.1 upgrade; HTTP/2 streams are
    refused by the GOAWAY instead)."""

    status_hint = 503


class BackendProtocolError(ProxyError):
    """The backend answered, but its answer cannot be used (bad accept, unoffered subprotocol).

    ``outcome`` says which check failed: ``bad_upgrade`` (no ``upgrade``/``connection``
    field), ``bad_accept``, ``bad_subprotocol``, ``bad_extension``, or ``bad_answer`` (not
    HTTP/1.1, a 2xx, a body too large).
    """

    status_hint = 502

    def __init__(self, message: str, *, outcome: str = "bad_answer") -> None:
        super().__init__(message)
        self.outcome = outcome


class BackendRejected(ProxyError):
    """The backend answered the upgrade with something other than 101.

    The answer goes back to the client as it came: ``status``, end-to-end ``headers`` and
    the ``body`` bytes read so far (bounded by the response size limit).
    """

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        super().__init__(f"backend answered {status} instead of 101")
        self.status_hint = status
        self.outcome = _BACKEND_STATUS_OUTCOMES.get(status // 100, "backend_status_other")
        self.status = status
        self.headers = headers
        self.body = body


#: BackendRejected's outcome by the class of the backend's status.
_BACKEND_STATUS_OUTCOMES = {n: f"backend_status_{n}xx" for n in range(1, 6)}
