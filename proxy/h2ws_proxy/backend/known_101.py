"""A backend's plain ``101``, remembered around its accept token (see :class:`Known101`).

The upgrade (``upgrade.py``) and the opening that reads the first answer in the poller's
turn (``http2/tunnel_opening.py``) both look an answer up here before reading it afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2ws_proxy.config import BackendAddress
from h2ws_proxy.http.backend_handshake import accept_token
from h2ws_proxy.http.handshake import BackendAccepted, WebSocketRequest


@dataclass(frozen=True, slots=True)
class Known101:
    """A plain ``101`` a backend sent as its first answer, split around its accept token.

    A backend answers tunnel after tunnel with the same head but for that token (our key's).
    The same bytes with the token for a new key, to a request with the same offers, are
    the same answer: :func:`read_interim_head` would split them into the same fields (the
    token holds no line end, and appeared once), :func:`check_backend_101` would find
    every check as before and the token right, and build the same :class:`BackendAccepted`
    (the token is not relayed). Reading and checking them again cost more than the rest
    of the upgrade's Python.
    """

    before: bytes
    after: bytes  #: to the end of the head, its blank line included
    offers: tuple[tuple[bytes, ...], tuple[bytes, ...]]
    accepted: BackendAccepted
    #: Where the token starts and ends in the answer (every token has the same length).
    token_at: int
    token_end: int

    def match(
        self, buffer: bytes | bytearray, key: bytes, request: WebSocketRequest
    ) -> tuple[BackendAccepted, bytes] | None:
        """This answer again at the start of ``buffer`` (and what trails it), or None."""
        # (``_offers`` inline: one call fewer per new tunnel.)
        offers = (request.subprotocols, request.extension_names)
        if not buffer.startswith(self.before) or self.offers != offers:
            return None
        end = self.token_end
        if buffer[self.token_at : end] != accept_token(key):
            return None
        if not buffer.startswith(self.after, end):
            return None
        return self.accepted, bytes(buffer[end + len(self.after) :])


#: The last plain 101 per backend (the configured backends bound it; emptied when full).
_known_101s: dict[BackendAddress, Known101] = {}
_KNOWN_101S_MAX = 64


def known_101(address: BackendAddress) -> Known101 | None:
    """The plain 101 ``address`` answered last, if remembered."""
    return _known_101s.get(address)


def remember_101(
    address: BackendAddress,
    head: bytes,
    key: bytes,
    request: WebSocketRequest,
    accepted: BackendAccepted,
) -> None:
    token = accept_token(key)
    if head.count(token) != 1:
        return
    before, after = head.split(token)
    if len(_known_101s) >= _KNOWN_101S_MAX:
        _known_101s.clear()
    at = len(before)
    _known_101s[address] = Known101(before, after, _offers(request), accepted, at, at + len(token))


def _offers(request: WebSocketRequest) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """What of the request :func:`check_backend_101` reads besides the key."""
    return request.subprotocols, request.extension_names
