"""How the differential tests compare our session with h2's: outcomes and normalisations.

Each step's outcome is the events (as comparable tuples), the connection error's code if
any, and the frames sent (type, flags, stream, key field). :func:`justified_divergence`
recognises where we differ from h2 on purpose; each case names its RFC section.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import h2.connection
import h2.events
import h2.exceptions
import hpack

from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    Event,
    GoAwayReceived,
    H2Session,
    InformationalResponseReceived,
    PingAcknowledged,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    SettingsAcknowledged,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_specs import KNOWN_SETTINGS, Spec


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
        if isinstance(event, h2.events.DataReceived):
            padding = event.flow_controlled_length - len(event.data)
            if padding:  # we credit padding at once (events.DataReceived); h2 leaves it to us
                conn.acknowledge_received_data(padding, event.stream_id)
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
    closed = [
        e for e in raw if isinstance(e, ConnectionFailed) and e.reason.endswith("closed stream")
    ]
    if closed and ours.error == 5 and theirs.error is None and spec.kind in ("data", "headers"):
        # RFC 9113 §5.1 "closed": a frame after the peer's END_STREAM, on a stream closed both
        # ways, is a connection error STREAM_CLOSED (h2spec 5.1/12); h2 makes it a connection
        # error or a stream error depending on which side ended last.
        return ours.events == [] and ours.sent[-1][0] == w.GOAWAY
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


def run_sequence(
    ours: H2Session,
    theirs: h2.connection.H2Connection,
    sequence: list[Spec],
    build_frame: Callable[[Spec, hpack.Encoder], bytes],
    *,
    from_server: bool = False,
    divergence: Callable[[Spec, Outcome, Outcome, str], bool] | None = None,
) -> None:
    """Feed each frame of ``sequence`` to both sessions and require the same outcome, or a
    divergence named and checked (``justified_divergence``, then the role's own)."""
    encoder = hpack.Encoder()
    we_reset: set[int] = set()
    for index, spec in enumerate(sequence):
        wire = build_frame(spec, encoder)
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
        if justified_divergence(
            spec, wire, mine, h2s, message, raw, we_reset, from_server=from_server
        ):
            return
        if divergence is not None and divergence(spec, mine, h2s, message):
            return
        raise AssertionError(f"frame {index} {spec}:\n ours {mine}\n h2   {h2s}\n {message}")
