"""One ordinary request on a backend's HTTP/1.1 connection: our request out, its answer in.
Pure, no I/O: the exchange moves the bytes.

h11 is the reference, but running it was a large part of a plain GET's CPU (bench/README.md,
the "Plain GETs" step). So the common case is read and written here, by h11's own grammar
(:mod:`~h2ws_proxy.http.grammar`), and everything else is left to h11 itself:

* A request without a body is written here: its head is the bytes h11 would write (the
  request line, ``host`` first, then the other fields), and :func:`~h2ws_proxy.http.message
  .build_backend_request` already checked it against h11's patterns. A request with a body
  goes through h11 from its first byte (h11 holds the body to its framing).
* A *plain* answer is read here: a head that :func:`~h2ws_proxy.backend.h1_wire_head
  .parse_plain_head` accepts (its rules say which), then the body as it arrives, then the
  end, as the events h11 would give. h11's keep-alive rule holds (``connection: close``
  ends reuse).
  A chunked body is read as h11's ChunkedReader reads it, with its errors and words (chunk
  header pattern, CRLF after each chunk, buffer limit, EOF); trailer fields, if any, are
  handed to h11 behind a made-up head and last chunk that bring it to the same point.
* Anything else (a 1xx, a close-delimited body, HTTP/1.0, obs-fold, a bare LF, an odd
  ``content-length`` or ``transfer-encoding``, both, a head still incomplete past the size
  limit or starting with a byte h11 rejects at once) goes to a fresh h11 client connection
  from the first byte of the answer, after our request was replayed into it: h11 then
  judges, reads and refuses exactly as it does on its own.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import h11

from h2ws_proxy.backend.h1_wire_head import (
    CHUNKED,
    ResponseHead,
    parse_plain_head,
    whole_bounds,
)
from h2ws_proxy.http.grammar import CHUNK_HEADER, HEAD_END
from h2ws_proxy.http.message import BackendRequest, BodyFraming

Header = tuple[bytes, bytes]

#: h11's chunk header, extensions read and dropped as h11 does.
_CHUNK_HEADER = re.compile(CHUNK_HEADER)
#: A trailer section h11 must read, after a head that says as much as the real one did.
_TRAILER_PREFIX = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n"


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class AnswerEnd:
    trailers: list[Header]


@dataclass(frozen=True, slots=True)
class BackendClosed:
    """The backend closed the connection where h11 allows it (an answer that was
    delimited by the close ends with :class:`AnswerEnd` first)."""


Event = ResponseHead | BodyData | AnswerEnd | BackendClosed


class Need(enum.Enum):
    DATA = "need data"  #: feed :meth:`H1BackendWire.receive_data` first
    SWITCHED = "switched"  #: h11's PAUSED: the backend switched protocols


class _Stage(enum.Enum):
    HEAD = "head"
    BODY = "body"
    CHUNKED = "chunked"
    TRAILERS = "trailers"
    DONE = "done"


_HEAD, _BODY = _Stage.HEAD, _Stage.BODY  # (globals: cheaper to read)
_NO_BODY = BodyFraming.NONE


class H1BackendWire:
    """Our side of one request/answer cycle; a new one per request on a kept connection.

    Errors in the answer raise ``h11.RemoteProtocolError`` (the exchange's 502 or abort);
    ``h11.LocalProtocolError`` from :meth:`send_body` / :meth:`end_request` means the
    client's body broke its declared length.
    """

    # Slots: one is made per request (the lean path's hot loop).
    __slots__ = (
        "_chunk_left",
        "_data",
        "_eof",
        "_footer",
        "_h11",
        "_is_head",
        "_keep_alive",
        "_max_head_bytes",
        "_pos",
        "_received",
        "_remaining",
        "_request",
        "_stage",
    )

    def __init__(self, request: BackendRequest, *, max_head_bytes: int) -> None:
        self._max_head_bytes = max_head_bytes
        self._is_head = request.method == b"HEAD"
        self._request = request
        self._h11: h11.Connection | None = None
        #: Received bytes not yet handed out start at ``_pos`` (kept as they came: the
        #: common answer arrives in one read and is cut out of it without a copy).
        self._data = b""
        self._pos = 0
        self._eof = False
        self._stage = _HEAD
        # ``_remaining`` and ``_received`` (a body), ``_chunk_left`` and ``_footer`` (what
        # remains of a chunk and of the CRLF after it) are set as their stage begins.
        self._keep_alive = True
        if request.framing is not _NO_BODY:
            self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)

    # ---- our request ----

    def request_head(self) -> bytes:
        if self._h11 is None:
            return self._request.head_bytes()
        return self._h11.send(self._request.h11_event()) or b""

    def send_body(self, chunk: bytes) -> bytes:
        assert self._h11 is not None, "only requests with a body have one"
        return self._h11.send(h11.Data(data=chunk)) or b""

    def end_request(self, trailers: list[Header]) -> bytes:
        if self._h11 is None:
            return b""  # a bodiless request's head is the whole request
        return self._h11.send(h11.EndOfMessage(headers=trailers)) or b""

    # ---- the answer ----

    @property
    def awaiting_head(self) -> bool:
        """No final answer head yet (an EOF now means the backend did not answer)."""
        if self._h11 is not None:
            return self._h11.their_state is h11.SEND_RESPONSE
        return self._stage is _Stage.HEAD

    def receive_data(self, data: bytes) -> None:
        """Bytes from the backend; ``b""`` for its EOF."""
        if self._h11 is not None:
            self._h11.receive_data(data)
        elif not data:
            self._eof = True
        elif self._pos == len(self._data):
            self._data, self._pos = data, 0
        else:
            self._data, self._pos = self._data[self._pos :] + data, 0

    def next_event(self) -> Event | Need:
        if self._h11 is not None:
            return _from_h11(self._h11.next_event())
        if self._stage is _Stage.HEAD:
            return self._read_head()
        if self._stage is _Stage.BODY:
            return self._read_body()
        if self._stage is _Stage.CHUNKED:
            return self._read_chunked()
        if self._stage is _Stage.TRAILERS:
            return self._read_trailers()
        raise RuntimeError("the answer is complete")  # the exchange stops at AnswerEnd

    def receive_whole(self, data: bytes) -> tuple[ResponseHead, bytes, bool] | None:
        """:meth:`receive_data` of ``data`` (not the EOF); then, when the final head and the
        whole body are in hand and the head is plain with a ``content-length`` (the common
        answer, in one read), the head and the body (``b""``: none) that :meth:`next_event`
        would hand out, and what :meth:`reusable` will say once the answer's end is read, the
        wire left where it would then be (:meth:`body_ends_here`; the end next: ``AnswerEnd([])``
        from :meth:`next_event`, which a caller that sent all of the body need not read).
        None: nothing was taken; read with :meth:`next_event`."""
        if self._h11 is not None or self._stage is not _HEAD:
            self.receive_data(data)
            return None
        if self._pos != len(self._data):
            data = self._data[self._pos :] + data  # (as ``receive_data``)
        self._data, self._pos = data, 0
        found = whole_bounds(data, is_head=self._is_head)
        if found is None:
            return None
        event, head_end, body_end, keep_alive = found
        self._keep_alive = keep_alive
        self._stage = _BODY
        self._remaining = 0
        self._received = body_end - head_end
        self._pos = body_end
        if body_end == len(data):  # (no body: ``b""`` either way); reusable as ``reusable``
            return event, data[head_end:], keep_alive and not self._eof
        return event, data[head_end:body_end], False  # a byte beyond the answer: never kept

    def body_ends_here(self) -> bool:
        """The body bytes just handed out were the last of a length-delimited body: the next
        event is the answer's end, with no trailers."""
        return self._h11 is None and self._stage is _Stage.BODY and not self._remaining

    def reusable(self) -> bool:
        """Both messages are complete, keep-alive holds, and no extra byte arrived."""
        if self._h11 is not None:
            conn = self._h11
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return False
            if not self._keep_alive:  # said by a head read here (see _trailers_to_h11)
                return False
            leftover, closed = conn.trailing_data
            return not leftover and not closed
        return (
            self._stage is _Stage.DONE
            and self._keep_alive
            and self._pos == len(self._data)
            and not self._eof
        )

    def _read_head(self) -> Event | Need:
        data, pos = self._data, self._pos
        end = HEAD_END.search(data, pos)
        if end is None:
            if len(data) - pos > self._max_head_bytes or (len(data) > pos and data[pos] < 0x21):
                return self._to_h11()  # h11 refuses these: let it say so
            return Need.DATA
        parsed = parse_plain_head(data, pos, end.end(), is_head=self._is_head)
        if parsed is None:
            return self._to_h11()
        event, length, keep_alive = parsed
        self._pos = end.end()
        self._keep_alive = keep_alive
        if length == CHUNKED:
            self._chunk_left = 0
            self._footer = b""
            self._stage = _Stage.CHUNKED
        else:
            self._remaining = length
            self._received = 0
            self._stage = _Stage.BODY
        return event

    def _read_body(self) -> Event | Need:
        if not self._remaining:
            self._stage = _Stage.DONE
            return AnswerEnd([])
        data, pos = self._data, self._pos
        if pos < len(data):
            size = min(self._remaining, len(data) - pos)
            self._pos = pos + size
            if pos or size < len(data):
                data = data[pos : pos + size]
            self._remaining -= size
            self._received += size
            return BodyData(data)
        if self._eof:
            expected = self._received + self._remaining
            raise h11.RemoteProtocolError(  # h11's words (ContentLengthReader.read_eof)
                "peer closed connection without sending complete message body "
                f"(received {self._received} bytes, expected {expected})"
            )
        return Need.DATA

    def _read_chunked(self) -> Event | Need:
        """The next piece of a chunked body, as h11's ChunkedReader reads it."""
        data, pos = self._data, self._pos
        if self._footer:
            got = data[pos : pos + len(self._footer)]
            if got != self._footer[: len(got)]:
                raise h11.RemoteProtocolError(  # h11's words
                    f"malformed chunk footer: {bytearray(got)!r} (expected {self._footer!r})"
                )
            self._footer = self._footer[len(got) :]
            pos = self._pos = pos + len(got)
            if self._footer:
                return self._chunked_need_data()
        if not self._chunk_left:
            line_end = data.find(b"\r\n", pos)
            if line_end < 0:
                return self._chunked_need_data()
            line = data[pos : line_end + 2]
            header = _CHUNK_HEADER.fullmatch(line)
            if header is None:
                raise h11.RemoteProtocolError(f"illegal chunk header: {bytearray(line)!r}")
            pos = self._pos = line_end + 2
            self._chunk_left = int(header.group(1), 16)
            if not self._chunk_left:
                self._stage = _Stage.TRAILERS
                return self._read_trailers()
        size = min(self._chunk_left, len(data) - pos)
        if not size:
            return self._chunked_need_data()
        self._pos = pos + size
        self._chunk_left -= size
        if not self._chunk_left:
            self._footer = b"\r\n"
        return BodyData(data if size == len(data) else data[pos : pos + size])

    def _read_trailers(self) -> Event | Need:
        """After the last chunk: no trailer fields ends here; any goes to h11."""
        rest = self._data[self._pos : self._pos + 2]
        if rest[:1] == b"\n" or rest == b"\r\n":
            self._pos += 1 if rest[:1] == b"\n" else 2
            self._stage = _Stage.DONE
            return AnswerEnd([])
        if rest in (b"", b"\r"):
            return self._chunked_need_data()
        return self._trailers_to_h11()

    def _trailers_to_h11(self) -> Event | Need:
        """Trailer fields: h11 reads them, after a head and last chunk made up to bring it to
        the same point (keep-alive stays ours: the made-up head does not say close)."""
        conn = self._hand_to_h11(_TRAILER_PREFIX + self._data[self._pos :])
        assert isinstance(conn.next_event(), h11.Response)
        return self.next_event()

    def _chunked_need_data(self) -> Need:
        """Need.DATA, or the error h11 raises instead at this point."""
        unconsumed = len(self._data) - self._pos
        if unconsumed > self._max_head_bytes:
            raise h11.RemoteProtocolError("Receive buffer too long")
        if self._eof:
            if not unconsumed:
                raise h11.RemoteProtocolError(  # ChunkedReader.read_eof
                    "peer closed connection without sending complete message body "
                    "(incomplete chunked read)"
                )
            raise h11.RemoteProtocolError("peer unexpectedly closed connection")
        return Need.DATA

    def _to_h11(self) -> Event | Need:
        """Not a plain answer: h11 reads it from its first byte."""
        self._hand_to_h11(self._data[self._pos :])
        return self.next_event()

    def _hand_to_h11(self, answer: bytes) -> h11.Connection:
        """From now on h11 reads, from ``answer`` on, with our request replayed into it."""
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_head_bytes)
        conn.send(self._request.h11_event())
        conn.send(h11.EndOfMessage())
        conn.receive_data(answer)
        if self._eof:
            conn.receive_data(b"")
        self._data, self._pos = b"", 0
        self._h11 = conn
        return conn


def _from_h11(event: h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]) -> Event | Need:
    if event is h11.NEED_DATA:
        return Need.DATA
    if event is h11.PAUSED:
        return Need.SWITCHED
    if isinstance(event, h11.InformationalResponse | h11.Response):
        return ResponseHead(event.status_code, list(event.headers))
    if isinstance(event, h11.Data):
        return BodyData(bytes(event.data))
    if isinstance(event, h11.EndOfMessage):
        return AnswerEnd(list(event.headers))
    assert isinstance(event, h11.ConnectionClosed), event
    return BackendClosed()


__all__ = [
    "AnswerEnd",
    "BackendClosed",
    "BodyData",
    "Event",
    "H1BackendWire",
    "Need",
    "ResponseHead",
]
