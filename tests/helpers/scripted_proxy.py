"""A proxy in front of a scripted backend (``scripted_http.py``), and a client connection to
it: the set-up of the tests of ordinary requests on kept backend connections."""

from __future__ import annotations

import trio

from tests.conftest import StartProxy
from tests.helpers.backends import ScriptedBackend
from tests.helpers.scripted_http import Answer, scripted
from tests.helpers.setup import backend_url, make_config


async def proxy_for(
    nursery: trio.Nursery, start_proxy: StartProxy, answer: Answer, **limits: float
) -> tuple[ScriptedBackend, trio.SocketStream]:
    """A backend answering with ``answer`` (started in ``nursery``), a proxy routing ``/`` to
    it with ``limits``, and a TCP connection to the proxy."""
    backend = ScriptedBackend(scripted(answer))
    port = await nursery.start(backend.run)
    address = await start_proxy(make_config(("/", backend_url(port)), **limits))
    return backend, await trio.open_tcp_stream(address.host, address.port)
