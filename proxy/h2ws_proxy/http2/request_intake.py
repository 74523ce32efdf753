"""A new request stream on one HTTP/2 connection: refused, or admitted and started.

:class:`RequestIntake` takes the session's :class:`~h2ws_proxy.h2session.RequestReceived`
from the frontend's reader and decides, synchronously (the frontend's rule R2):

* Over MAX_CONCURRENT_STREAMS, or while the connection is closing, the stream is refused
  with REFUSED_STREAM, not the connection (RFC 9113 §5.1.2); the client may retry it (§8.7).
* A head that fails its checks (``http/request_head.py``, ``http2/admission.py``) is
  answered with its error (431, 400, 421, 404...) on its stream alone.
* A CONNECT becomes a tunnel (``http2/tunnel_opening.py``); any other request an exchange:
  without a task when nothing would wait (``http2/lean_requests.py``), else on a task of
  the connection.

A client repeats its requests, and what a request becomes depends on nothing but its
decoded fields, whether HEADERS ended the stream, and the routes (the connection's TLS and
certificate stay): the last request accepted here is remembered with a copy of its fields
and the identity of its router, so a repeated one (equal fields: a list comparison, the
same field objects when HPACK gave back its kept block) takes its request and route without
checking, hashing or looking up anything (``parse_h2_request_head`` and ``accept_http``
remember them across connections, keyed by hashes and identities, which is dearer per
request). An oversized head or a tunnel is never taken this way; the stream limits and
the connection's state are judged per request before it.
"""

from __future__ import annotations

from collections.abc import Callable

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ClientProtocolError, ProxyError
from h2ws_proxy.h2session import ErrorCode, RequestReceived
from h2ws_proxy.http.handshake import WebSocketRequest
from h2ws_proxy.http.message import BodyFraming, HttpRequest
from h2ws_proxy.http.request_head import H2RequestHead, parse_h2_request_head
from h2ws_proxy.http2.admission import accept_http, accept_websocket, check_authority, is_tunnel
from h2ws_proxy.http2.client_writer import ClientWriter
from h2ws_proxy.http2.lean_requests import LeanRequests
from h2ws_proxy.http2.lifetime import ConnectionLifetime
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.request_scope import CancelNoted
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ClientInfo, ServerContext
from h2ws_proxy.relay.routing import Router

_NO_BODY = BodyFraming.NONE
_LENGTH = BodyFraming.LENGTH

#: The last accepted request: a copy of its fields, the router, whether HEADERS ended the
#: stream, and what they made: the request, its route, and the body length its stream
#: declares (``H2Stream.declared_length``).
_Accepted = tuple[list[tuple[bytes, bytes]], Router, bool, HttpRequest, RouteConfig, int | None]


class RequestIntake:
    """One connection's new request streams (see the module)."""

    __slots__ = (
        "_accepted",
        "_count_reset",
        "_generation",
        "_info",
        "_lean",
        "_life",
        "_max_streams",
        "_open_streams",
        "_refuse",
        "_refuse_tunnel",
        "_run_on_task",
        "_seen",
        "_server",
        "_session",
        "_start_tunnel",
        "_streams",
        "_writer",
    )

    def __init__(
        self,
        session: ProxySession,
        writer: ClientWriter,
        server: ServerContext,
        info: ClientInfo,
        life: ConnectionLifetime,
        streams: dict[int, H2Stream],
        lean: LeanRequests,
        *,
        count_reset: Callable[[], None],
        refuse: Callable[[int, ProxyError], None],
        refuse_tunnel: Callable[[int, H2RequestHead, ProxyError], None],
        start_tunnel: Callable[[H2Stream, WebSocketRequest, RouteConfig], None],
        run_on_task: Callable[[H2Stream, HttpRequest, RouteConfig, bool], None],
    ) -> None:
        self._session = session
        self._writer = writer
        self._server = server
        self._info = info
        self._life = life
        #: The connection's stream registry (the frontend's).
        self._streams = streams
        self._lean = lean
        self._max_streams = server.config.limits.max_concurrent_streams
        #: The session's streams (``open_stream_count``'s) and the server's generation cell
        #: (``current``'s), each the same object for the connection's life: read per
        #: request without a property call.
        self._open_streams = session.open_streams
        self._generation = server.current_cell
        #: Spends the connection's budget of refused and reset streams.
        self._count_reset = count_reset
        #: Answers a proxy error on a stream (the registry's ``refuse``).
        self._refuse = refuse
        #: The same for an extended CONNECT, with its ``tunnel.refused`` line.
        self._refuse_tunnel = refuse_tunnel
        self._start_tunnel = start_tunnel
        self._run_on_task = run_on_task
        #: A request arrived on this connection (``life.request_received`` is set).
        self._seen = False
        self._accepted: _Accepted | None = None

    def on_request(self, event: RequestReceived) -> None:
        """The client opened a stream with a request head: refuse it or start its work."""
        stream_id = event.stream_id
        life = self._life
        if not self._seen:
            self._seen = True
            life.request_received.set()
        session = self._session
        if life.closing or len(self._open_streams) > self._max_streams:
            # RFC 9113 §5.1.2: over the limit (or draining) the stream is refused, not the
            # connection; the client may retry it (§8.7).
            session.reset(stream_id, ErrorCode.REFUSED_STREAM)
            if not life.closing:
                self._count_reset()
            return
        ended = event.end_stream
        generation = self._generation.generation  # (one read: the router, the lean start)
        router = generation.router
        accepted = self._accepted
        if (
            accepted is not None
            and accepted[1] is router
            and accepted[2] == ended
            and not event.oversized
            and accepted[0] == event.headers
        ):
            request, route, declared = accepted[3], accepted[4], accepted[5]
        else:
            judged = self._judge(event, router)
            if judged is None:
                return  # refused, or a tunnel started
            request, route, declared = judged
        # An accepted ordinary request: its stream, registered, then its run (inline: a
        # repeated request comes here with no other call).
        stream = H2Stream.for_request(session, self._writer, stream_id, ended, declared)
        self._streams[stream_id] = stream
        if life.idle_since is not None:  # (``stream_opened`` has nothing to do otherwise)
            life.stream_opened()
        if not (ended and self._lean.try_start(stream, request, route, generation)):
            self._run_on_task(stream, request, route, False)

    def _judge(
        self, event: RequestReceived, router: Router
    ) -> tuple[HttpRequest, RouteConfig, int | None] | None:
        """A request head not taken as the last one: its ordinary request, route and
        declared body length (remembered), or None: answered with its error, or a tunnel
        started."""
        stream_id, ended, headers = event.stream_id, event.end_stream, event.headers
        head: H2RequestHead | None = None
        tunnel: tuple[WebSocketRequest, RouteConfig] | None = None
        try:
            if event.oversized:
                raise ClientProtocolError(
                    "request header fields too large", status_hint=431, stream_error=True
                )
            head = parse_h2_request_head(headers)
            if self._info.certificate is not None:
                check_authority(head, self._info.certificate)  # 421: not this certificate's
            if is_tunnel(head):
                tunnel = self._accept_tunnel(head, router)
            else:
                request, route = accept_http(head, router, tls=self._info.tls, ended=ended)
                framing = request.framing
                declared = (
                    0
                    if framing is _NO_BODY
                    else request.content_length
                    if framing is _LENGTH
                    else None
                )
                self._accepted = (list(headers), router, ended, request, route, declared)
                return request, route, declared
        except ProxyError as error:
            if head is not None and head.protocol is not None:
                self._refuse_tunnel(stream_id, head, error)  # and its tunnel.refused line
            else:
                self._refuse(stream_id, error)
            return None
        # A cancel is noted until the opening adopts what cancels it (``tunnel_opening``).
        stream = H2Stream(self._session, self._writer, stream_id, CancelNoted())
        if ended:
            stream.feed_eof()
        self._streams[stream_id] = stream
        self._life.stream_opened()
        self._start_tunnel(stream, *tunnel)
        return None

    def _accept_tunnel(
        self, head: H2RequestHead, router: Router
    ) -> tuple[WebSocketRequest, RouteConfig]:
        """A CONNECT's request and route, counted as the client's tunnel; raises the
        ProxyError to answer."""
        accepted = accept_websocket(
            head,
            router,
            connect_protocol_enabled=self._session.connect_protocol_enabled,
            tls=self._info.tls,
        )
        self._info.slot.begin_tunnel()  # 429 past max_tunnels_per_client
        return accepted
