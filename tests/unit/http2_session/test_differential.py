"""Differential tests: our server-role session against ``h2.H2Connection``, fed the same bytes.

Hypothesis writes sequences of frames a client might send, valid and not. After both
endpoints have initiated and read the client preface, each frame goes to both; after each,
the events (normalised to comparable tuples), any connection error's code, and the frames
each sent back (type, flags, stream, key field) must match.

Where we differ from h2 on purpose, :func:`justified_divergence` recognises the case, checks
that we did the right thing, and ends the comparison there (h2's state has parted from ours).
Each names its RFC section; nothing else is allowed to differ.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.http2.session import (
    ConnectionFailed,
    DataReceived,
    Event,
    GoAwayReceived,
    H2Session,
    InformationalResponseReceived,
    LocalSettings,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    Role,
    SettingsAcknowledged,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from tests.unit.http2_session import wire as w

STREAM_IDS = st.sampled_from([1, 1, 1, 3, 3, 5, 2, 0, 7])
KNOWN_SETTINGS = (1, 2, 3, 4, 5, 6, 8)


# -- what a client might send ---------------------------------------------------------------


@dataclass
class Spec:
    """One frame to build, with its header fields encoded at build time (HPACK is ordered)."""

    kind: str
    stream_id: int = 1
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    flags: int = 0
    pieces: int = 1
    raw: bytes = b""
    pad: int | None = None
    depends_on: int | None = None

    def __repr__(self) -> str:
        raw = self.raw if len(self.raw) <= 16 else b"<%d bytes>" % len(self.raw)
        return (
            f"Spec({self.kind!r}, {self.stream_id}, {self.fields!r}, flags={self.flags}, "
            f"pieces={self.pieces}, raw={raw!r}, pad={self.pad}, depends_on={self.depends_on})"
        )


FIELD_NAMES = st.sampled_from([b"x-a", b"cookie", b"user-agent", b"content-length", b":path"])
FIELDS = st.lists(st.tuples(FIELD_NAMES, st.sampled_from([b"1", b"v=2", b"", b"abc"])), max_size=3)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    kind = draw(
        st.sampled_from(
            ["headers"] * 4
            + ["data"] * 3
            + ["window_update", "settings", "ping", "rst", "priority", "goaway", "unknown"]
            + ["bad_hpack", "continuation"]
        )
    )
    stream_id = draw(STREAM_IDS)
    if kind == "headers":
        return Spec(
            kind,
            stream_id,
            fields=w.REQUEST + draw(FIELDS),
            flags=draw(st.sampled_from([0, w.END_STREAM])),
            pieces=draw(st.integers(1, 3)),
            pad=draw(st.none() | st.integers(0, 4)),
            depends_on=draw(st.none() | st.sampled_from([0, 1, stream_id])),
        )
    if kind == "data":
        payload = draw(st.binary(max_size=40) | st.just(bytes(16384)))
        pad = draw(st.none() | st.integers(0, 6))
        return Spec(kind, stream_id, flags=draw(st.sampled_from([0, 1])), raw=payload, pad=pad)
    if kind == "window_update":
        increment = draw(st.sampled_from([0, 1, 1000, 2**31 - 1]))
        return Spec(kind, draw(st.sampled_from([0, 1, 3])), raw=struct.pack(">L", increment))
    if kind == "settings":
        if draw(st.booleans()):
            return Spec(kind, raw=b"", flags=w.ACK)
        pairs = draw(
            st.lists(
                st.tuples(
                    st.sampled_from([*KNOWN_SETTINGS, 0x99]),
                    st.sampled_from([0, 1, 2, 100, 16384, 65535, 2**24, 2**31]),
                ),
                max_size=3,
            )
        )
        return Spec(kind, raw=b"".join(struct.pack(">HL", c, v) for c, v in pairs))
    if kind == "ping":
        return Spec(
            kind,
            raw=draw(st.sampled_from([b"12345678", b"1234567"])),
            flags=draw(st.sampled_from([0, 1])),
        )
    if kind == "rst":
        return Spec(kind, stream_id, raw=struct.pack(">L", draw(st.sampled_from([0, 5, 8, 0x77]))))
    if kind == "priority":
        return Spec(kind, stream_id, depends_on=draw(st.sampled_from([0, 3, stream_id])))
    if kind == "goaway":
        return Spec(
            kind,
            raw=struct.pack(
                ">LL", draw(st.sampled_from([0, 1, 3])), draw(st.sampled_from([0, 2, 0x77]))
            ),
        )
    if kind == "bad_hpack":
        return Spec(
            kind, stream_id, raw=draw(st.sampled_from([b"\x80", b"\xbe", b"\x00\x01a\x81\x18"]))
        )
    if kind == "continuation":
        return Spec(kind, stream_id, flags=w.END_HEADERS)
    return Spec(kind, stream_id, raw=b"junk")


def build(spec: Spec, encoder: hpack.Encoder) -> bytes:
    """The wire bytes for ``spec``."""
    if spec.kind == "headers":
        block = encoder.encode(spec.fields)
        size = -(-len(block) // spec.pieces) or 1
        pieces = [block[i : i + size] for i in range(0, len(block), size)] or [b""]
        first = pieces[0]
        flags = spec.flags | (w.END_HEADERS if len(pieces) == 1 else 0)
        if spec.depends_on is not None:
            flags |= w.PRIORITY_FLAG
            first = struct.pack(">LB", spec.depends_on, 15) + first
        if spec.pad is not None:
            flags |= w.PADDED
            first = bytes([spec.pad]) + first + b"\0" * spec.pad
        wire = w.frame(w.HEADERS, flags, spec.stream_id, first)
        for index, piece in enumerate(pieces[1:], 2):
            end = w.END_HEADERS if index == len(pieces) else 0
            wire += w.frame(w.CONTINUATION, end, spec.stream_id, piece)
        return wire
    if spec.kind == "data":
        return w.data(spec.stream_id, spec.raw, end_stream=bool(spec.flags), pad=spec.pad)
    simple = {
        "window_update": (w.WINDOW_UPDATE, spec.stream_id),
        "settings": (w.SETTINGS, 0),
        "ping": (w.PING, 0),
        "rst": (w.RST_STREAM, spec.stream_id),
        "goaway": (w.GOAWAY, 0),
        "unknown": (0xBB, spec.stream_id),
        "bad_hpack": (w.HEADERS, spec.stream_id),
        "continuation": (w.CONTINUATION, spec.stream_id),
    }
    if spec.kind == "priority":
        return w.priority(spec.stream_id, spec.depends_on or 0)
    kind, stream_id = simple[spec.kind]
    flags = w.END_HEADERS if spec.kind == "bad_hpack" else spec.flags
    return w.frame(kind, flags, stream_id, spec.raw)


# -- the two endpoints, and their outcomes as comparable values ----------------------------


@dataclass
class Outcome:
    events: list[tuple[object, ...]]
    error: int | None
    sent: list[tuple[int, ...]]


def ours_after(session: H2Session, wire: bytes) -> tuple[Outcome, list[Event]]:
    events = session.receive_data(wire)
    error = None
    comparable: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, ConnectionFailed):
            error = int(event.error_code)
        else:
            comparable.append(our_tuple(event))
    return Outcome(comparable, error, w.summary(session.take_outbound())), events


def our_tuple(event: Event) -> tuple[object, ...]:
    if isinstance(event, RequestReceived):
        return ("request", event.stream_id, event.headers, event.end_stream)
    if isinstance(event, DataReceived):
        return ("data", event.stream_id, event.data, event.flow_controlled_length, event.end_stream)
    if isinstance(event, TrailersReceived):
        return ("trailers", event.stream_id, event.headers)
    if isinstance(event, ResponseReceived):
        return ("response", event.stream_id, event.headers, event.end_stream)
    if isinstance(event, InformationalResponseReceived):
        return ("informational", event.stream_id, event.headers)
    if isinstance(event, StreamReset):
        return ("reset", event.stream_id, int(event.error_code), event.remote)
    if isinstance(event, WindowUpdated):
        return ("window", event.stream_id, event.delta)
    if isinstance(event, RemoteSettingsChanged):
        return ("settings", event.changes)
    if isinstance(event, SettingsAcknowledged):
        return ("settings_ack",)
    if isinstance(event, PingReceived):
        return ("ping", event.data)
    if isinstance(event, PingAcknowledged):
        return ("ping_ack", event.data)
    if isinstance(event, GoAwayReceived):
        return ("goaway", int(event.error_code), event.last_stream_id, event.debug_data)
    raise AssertionError(event)


def h2_after(conn: h2.connection.H2Connection, wire: bytes) -> tuple[Outcome, str]:
    error, message = None, ""
    try:
        events = conn.receive_data(wire)
    except h2.exceptions.ProtocolError as exc:
        events, error, message = [], int(exc.error_code), type(exc).__name__ + str(exc)
    comparable: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, h2.events.StreamEnded):
            last = comparable[-1] if comparable else None
            if last and last[0] in ("request", "response", "data") and last[1] == event.stream_id:
                comparable[-1] = (*last[:-1], True)  # our end_stream flag (events.py)
            continue
        if isinstance(event, h2.events.PriorityUpdated | h2.events.UnknownFrameReceived):
            continue  # RFC 9113 §5.3.2, §5.5: we ignore priority and unknown frames
        comparable.append(h2_tuple(event))
    return Outcome(comparable, error, w.summary(conn.data_to_send())), message


def h2_tuple(event: h2.events.Event) -> tuple[object, ...]:
    if isinstance(event, h2.events.RequestReceived):
        return ("request", event.stream_id, [tuple(h) for h in event.headers], False)
    if isinstance(event, h2.events.DataReceived):
        return ("data", event.stream_id, event.data, event.flow_controlled_length, False)
    if isinstance(event, h2.events.TrailersReceived):
        return ("trailers", event.stream_id, [tuple(h) for h in event.headers])
    if isinstance(event, h2.events.ResponseReceived):
        return ("response", event.stream_id, [tuple(h) for h in event.headers], False)
    if isinstance(event, h2.events.InformationalResponseReceived):
        return ("informational", event.stream_id, [tuple(h) for h in event.headers])
    if isinstance(event, h2.events.StreamReset):
        return ("reset", event.stream_id, int(event.error_code), event.remote_reset)
    if isinstance(event, h2.events.WindowUpdated):
        return ("window", event.stream_id, event.delta)
    if isinstance(event, h2.events.RemoteSettingsChanged):
        changes = {int(k): v.new_value for k, v in event.changed_settings.items()}
        # RFC 9113 §6.5.2: unknown settings are ignored; h2 reports them.
        return ("settings", {k: v for k, v in changes.items() if k in KNOWN_SETTINGS})
    if isinstance(event, h2.events.SettingsAcknowledged):
        return ("settings_ack",)
    if isinstance(event, h2.events.PingReceived):
        return ("ping", event.ping_data)
    if isinstance(event, h2.events.PingAckReceived):
        return ("ping_ack", event.ping_data)
    if isinstance(event, h2.events.ConnectionTerminated):
        return ("goaway", int(event.error_code), event.last_stream_id, event.additional_data or b"")
    raise AssertionError(event)


#: h2's messages for a connection error its stream state machine raises.
STREAM_STATE_MESSAGE = "ProtocolErrorInvalid input StreamInputs.RECV_"
#: h2's messages for malformed responses, which it makes connection errors.
MALFORMED_MESSAGES = (
    "ProtocolErrorCannot set END_STREAM on informational responses",
    "ProtocolErrorcannot receive data before headers",
    "ProtocolErrorInformational response after final response",
)


def bad(code: int, value: int, *, from_server: bool) -> int:
    """The error a SETTINGS value makes (RFC 9113 §6.5.2, RFC 8441 §3), or 0."""
    if (code in (2, 8) and value > 1) or (code == 2 and value and from_server):
        return 1
    if code == 4 and value > 2**31 - 1:
        return 3
    if code == 5 and not 16384 <= value <= 2**24 - 1:
        return 1
    return 0


def justified_divergence(
    spec: Spec,
    wire: bytes,
    ours: Outcome,
    theirs: Outcome,
    message: str,
    raw: list[Event],
    reset: set[int],
    *,
    from_server: bool = False,
) -> bool:
    """True where we differ from h2 on purpose (checked here); the comparison then stops."""
    if spec.stream_id in reset and (ours.events, ours.error) == ([], None):
        # RFC 9113 §5.1 "closed": after sending RST_STREAM an endpoint MUST ignore frames on
        # that stream; h2 answers HEADERS or DATA there with another RST_STREAM
        # (STREAM_CLOSED), or (client role, a 1xx head) a connection PROTOCOL_ERROR. DATA's
        # connection credit is the same on both sides.
        if theirs.error == 1 and (
            message.startswith(STREAM_STATE_MESSAGE) or message in MALFORMED_MESSAGES
        ):
            return True
        again = [(w.RST_STREAM, spec.stream_id, 5)]
        if theirs.events == [] and theirs.sent == [*ours.sent, *again]:
            return True
    if ours.error == 6 and theirs.error is not None and len(wire) > 9 + 16384:
        # RFC 9113 §4.2: a frame over our SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR, and
        # we refuse it from its 9-byte header, before any other check; h2 checks others first.
        return ours.events == [] and ours.sent == [(w.GOAWAY, theirs.sent[0][1], 6)]
    codes = [c for c, _ in struct.iter_unpack(">HL", spec.raw)] if spec.kind == "settings" else []
    if len(set(codes)) < len(codes) and ours.error is not None and theirs.error is None:
        # RFC 9113 §6.5.3: values are processed in order, so an invalid one is an error even
        # if a later value for the same identifier is valid; hyperframe keeps only the last.
        return ours.sent == [(w.GOAWAY, ours.sent[0][1], ours.error)]
    if spec.kind == "settings" and ours.error is not None and theirs.error is not None:
        # RFC 9113 §6.5.3: values are processed in the order they appear, so the first
        # invalid one names the error; h2 checks its own order.
        pairs = struct.iter_unpack(">HL", spec.raw)
        first = next((code for pair in pairs if (code := bad(*pair, from_server=from_server))), 0)
        return ours.error == first and ours.sent == [(w.GOAWAY, theirs.sent[0][1], first)]
    if spec.kind == "continuation" and ours.error == 1:
        # RFC 9113 §6.10: CONTINUATION outside a header block is a connection PROTOCOL_ERROR,
        # whatever its stream; h2 judges the stream first (STREAM_CLOSED as a stream or
        # connection error, or PROTOCOL_ERROR).
        return ours.events == [] and ours.sent == [(w.GOAWAY, ours.sent[0][1], 1)]
    if "Error decoding header block" in message and ours.error == 9 and theirs.error == 1:
        # RFC 9113 §4.3: a field block that fails to decode is a COMPRESSION_ERROR; h2
        # reports PROTOCOL_ERROR. Everything else (events, GOAWAY's last id) must match.
        return (
            ours.events == theirs.events
            and [(*frame[:2], 1) if frame[0] == w.GOAWAY else frame for frame in ours.sent]
            == theirs.sent
        )
    if (
        spec.kind in ("rst", "window_update")
        and ours.error == 1
        and theirs == Outcome([], None, [])
    ):
        # RFC 9113 §6.4, §6.9 (and §5.1 "idle"): RST_STREAM or WINDOW_UPDATE on an idle
        # stream is a connection PROTOCOL_ERROR; h2 drops them silently.
        return ours.events == [] and ours.sent == [(w.GOAWAY, ours.sent[0][1], 1)]
    if spec.kind == "window_update" and spec.raw == bytes(4) and spec.stream_id:
        # RFC 9113 §6.9: an increment of 0 on a stream is a *stream* PROTOCOL_ERROR;
        # hyperframe refuses the frame and h2 makes it a connection error. On a closed
        # stream we ignore it, as any WINDOW_UPDATE there (§5.1 "closed").
        reset = [(w.RST_STREAM, spec.stream_id, 1)]
        return theirs.error == 1 and ours.error is None and ours.sent in (reset, [])
    if theirs.events[:1] and theirs.events[0][0] == "trailers" and ours.error is None:
        # RFC 9113 §8.1: trailers MUST NOT hold pseudo-header fields (malformed: a stream
        # PROTOCOL_ERROR); h2 with validate_inbound_headers=False passes them on.
        fields = theirs.events[0][2]
        pseudo = any(name[:1] == b":" for name, _ in fields)
        return pseudo and ours.sent == [(w.RST_STREAM, spec.stream_id, 1)]
    our_resets = [e for e in raw if isinstance(e, StreamReset) and not e.remote]
    if theirs.error == 1 and ours.error is None and our_resets:
        if "may not depend on itself" in message:
            # RFC 9113 §5.3.1: a stream depending on itself is a *stream* PROTOCOL_ERROR.
            return our_resets[-1].error_code == 1
        if "Trailers must have END_STREAM" in message:
            # RFC 9113 §8.1, §8.1.1: a malformed message is a stream error.
            return our_resets[-1].error_code == 1
    # content-length is the proxy's to police per stream (RFC 9113 §8.1.1), not the session's.
    return ("InvalidBodyLength" in message or "content-length" in message) and ours.error is None


def drop_local_resets(outcome: Outcome) -> None:
    """Resets we sent are compared as RST_STREAM frames: h2 reports some as StreamReset
    events (HEADERS on a half-closed stream) and not others (DATA there); we report all."""
    outcome.events = [
        e
        for e in outcome.events
        if not (e[0] == "reset" and e[3] is False and (w.RST_STREAM, e[1], e[2]) in outcome.sent)
    ]


def new_pair() -> tuple[H2Session, h2.connection.H2Connection]:
    ours = H2Session(Role.SERVER, LocalSettings())
    ours.initiate()
    theirs = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=False
        )
    )
    theirs.initiate_connection()
    start = w.PREFACE + w.settings() + w.settings(ack=True)
    ours.receive_data(start)
    theirs.receive_data(start)
    ours.take_outbound()
    theirs.data_to_send()
    return ours, theirs


def run_differential(sequence: list[Spec]) -> None:
    ours, theirs = new_pair()
    encoder = hpack.Encoder()
    we_reset: set[int] = set()
    for index, spec in enumerate(sequence):
        wire = build(spec, encoder)
        mine, raw = ours_after(ours, wire)
        h2s, message = h2_after(theirs, wire)
        drop_local_resets(mine)
        drop_local_resets(h2s)
        if mine == h2s:
            we_reset.update(e.stream_id for e in raw if isinstance(e, StreamReset) and not e.remote)
            if mine.error is not None or any(e[0] == "goaway" for e in h2s.events):
                # After a GOAWAY from the peer h2 4.x closes (h2#1181); we go on, as
                # RFC 9113 §6.8 says: the rest is covered by test_frame_rules.
                return
            continue
        if justified_divergence(spec, wire, mine, h2s, message, raw, we_reset):
            return
        raise AssertionError(f"frame {index} {spec}:\n ours {mine}\n h2   {h2s}\n {message}")


#: Most sequences first open stream 1, so that later frames meet an open stream.
SEQUENCES = st.builds(
    lambda opened, rest: ([Spec("headers", 1, w.REQUEST)] if opened else []) + rest,
    st.booleans() | st.just(True),
    st.lists(specs(), min_size=1, max_size=8),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQUENCES)
@example([Spec("headers", 1, w.REQUEST, depends_on=1)])
@example([Spec("priority", 1, depends_on=1)])
@example([Spec("headers", 1, w.REQUEST), Spec("headers", 1, [(b"x", b"y")])])
@example([Spec("headers", 1, w.REQUEST), Spec("goaway", raw=bytes(8)), Spec("data", 1, raw=b"x")])
@example([Spec("bad_hpack", 1, raw=b"\x80")])
@example([Spec("settings", raw=struct.pack(">HLHL", 4, 2**31, 2, 2))])
@example(
    [Spec("data", 1, raw=b"x", flags=1), Spec("data", 1), Spec("window_update", 1, raw=bytes(4))]
)
@example([Spec("headers", 1, w.REQUEST), Spec("headers", 1, w.REQUEST, flags=w.END_STREAM)])
@example([Spec("headers", 1, w.REQUEST, flags=1), Spec("data", 1), Spec("continuation", 1)])
@example(
    [Spec("headers", 1, w.REQUEST), Spec("rst", 1, raw=bytes(4))]
    + [Spec("data", 1, raw=bytes(16384))] * 2
)
@example([Spec("headers", 3, w.REQUEST), Spec("data", 1, raw=b"x"), Spec("headers", 1, w.REQUEST)])
@example([Spec("settings", raw=struct.pack(">HLHL", 2, 2, 2, 0))])
@example([Spec("data", 0, raw=bytes(16384), pad=0)])
@example(
    [
        Spec("headers", 1, w.REQUEST),
        Spec("rst", 1, raw=bytes(4)),
        Spec("window_update", 1, raw=bytes(4)),
    ]
)
@example([Spec("headers", 1, w.REQUEST, flags=w.END_STREAM)] + [Spec("headers", 1, w.REQUEST)] * 2)
@example([Spec("headers", 1, w.REQUEST), Spec("window_update", 1, raw=bytes(4))])
@example([Spec("headers", 1, w.REQUEST), Spec("rst", 3, raw=bytes(4))])
@example([Spec("headers", 3, w.REQUEST), Spec("continuation", 1, flags=w.END_HEADERS)])
@example([Spec("headers", 1, [*w.REQUEST, (b"content-length", b"1")], flags=w.END_STREAM)])
@example([Spec("headers", 1, [*w.REQUEST, (b"content-length", b"v=2")])])
def test_server_session_matches_h2(sequence: list[Spec]) -> None:
    run_differential(sequence)
