"""What a request run without a task (:mod:`~h2ws_proxy.http2.polled_request`) needs of its
HTTP/2 connection: the contract :class:`~h2ws_proxy.http2.lean_requests.LeanRequests` keeps."""

from __future__ import annotations

from typing import Protocol

from h2ws_proxy.config import RouteConfig
from h2ws_proxy.errors import ProxyError
from h2ws_proxy.http.message import HttpRequest
from h2ws_proxy.http2.proxy_session import ProxySession
from h2ws_proxy.http2.stream import H2Stream
from h2ws_proxy.relay.context import ServerContext
from h2ws_proxy.relay.exchange_contract import ExchangeResult
from h2ws_proxy.relay.record import RelayRecord


class LeanConnection(Protocol):
    """What a lean request needs of its connection (:class:`~h2ws_proxy.http2.lean_requests.
    LeanRequests`)."""

    session: ProxySession
    server: ServerContext

    def refuse(self, stream_id: int, error: ProxyError) -> None:
        """Answer a proxy error on a stream (the registry's ``refuse``)."""

    def finish(self, stream: H2Stream, record: RelayRecord, result: ExchangeResult) -> None:
        """End a stream's exchange as a task's end would (``StreamTasks.finish_exchange``)."""

    def forget(self, stream: H2Stream) -> None:
        """Drop a stream whose work is over and logged (the registry's ``forget``): what
        is left of the end of a request answered whole at once (``PolledRequest``)."""

    def run_on_task(
        self, stream: H2Stream, request: HttpRequest, route: RouteConfig, fresh: bool
    ) -> None:
        """Run a request on the task path (``fresh``: on a new backend connection)."""
