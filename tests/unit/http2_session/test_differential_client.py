"""Differential tests, client role: our client session against h2's, fed the same server frames.

Both clients open streams 1 and 3 with the same request, read the server's SETTINGS and
ACKs, then take frames a server might send (responses, 1xx, trailers, DATA, resets, push,
and the server-independent frames of the server-role test). Outcomes are compared as in
:mod:`test_differential`, with the same normalisations.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.settings
import hpack
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import H2Session, LocalSettings, Role
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_outcomes import (
    MALFORMED_MESSAGES,
    STREAM_STATE_MESSAGE,
    Outcome,
    run_sequence,
)
from tests.unit.http2_session.diff_specs import Spec, build, specs

STATUSES = st.sampled_from([b"100", b"103", b"200", b"404"])
EXTRA = st.lists(st.tuples(st.sampled_from([b"x-a", b"set-cookie"]), st.just(b"1")), max_size=2)


@st.composite
def server_specs(draw: st.DrawFn) -> Spec:
    """A response head (or trailers) half the time, else any frame of the server-role test."""
    if draw(st.booleans()):
        stream_id = draw(st.sampled_from([1, 1, 3, 2, 5]))
        status = [] if draw(st.integers(0, 4)) == 0 else [(b":status", draw(STATUSES))]
        return Spec(
            "headers",
            stream_id,
            fields=status + draw(EXTRA),
            flags=draw(st.sampled_from([0, w.END_STREAM])),
            pieces=draw(st.integers(1, 2)),
        )
    spec = draw(specs())
    if spec.kind == "headers":  # a request is not what a server sends
        spec.fields = [(b":status", b"200")]
    if spec.kind == "unknown" and draw(st.booleans()):
        return Spec("push_promise", 1)
    return spec


def build_server_frame(spec: Spec, encoder: hpack.Encoder) -> bytes:
    if spec.kind == "push_promise":
        return w.frame(w.PUSH_PROMISE, w.END_HEADERS, spec.stream_id, bytes(4) + b"\x82")
    return build(spec, encoder)


def new_clients() -> tuple[H2Session, h2.connection.H2Connection]:
    ours = H2Session(Role.CLIENT, LocalSettings())
    ours.initiate()
    theirs = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_inbound_headers=False
        )
    )
    theirs.initiate_connection()
    # Advertise what we do (ENABLE_PUSH=0 etc.); h2 applies it at the server's ACK.
    theirs.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
    for stream_id in (1, 3):
        ours.send_headers(stream_id, w.REQUEST)
        theirs.send_headers(stream_id, w.REQUEST)
    start = w.settings() + w.settings(ack=True) + w.settings(ack=True)
    ours.receive_data(start)
    theirs.receive_data(start)
    ours.take_outbound()
    theirs.data_to_send()
    return ours, theirs


def run_client_differential(sequence: list[Spec]) -> None:
    ours, theirs = new_clients()
    run_sequence(
        ours, theirs, sequence, build_server_frame, from_server=True, divergence=client_divergence
    )


def client_divergence(spec: Spec, ours: Outcome, theirs: Outcome, message: str) -> bool:
    """Client-role differences from h2, each checked and justified."""
    if spec.kind in ("headers", "bad_hpack") and not spec.stream_id & 1 and ours.error == 1:
        # RFC 9113 §5.1.1, §8.4: a server opens streams only by PUSH_PROMISE (disabled
        # here), so HEADERS on an even stream is a connection PROTOCOL_ERROR and that
        # stream was never processed (GOAWAY's last-stream-id stays 0). h2 reports it to
        # the client as a *request*, or fails naming it as processed.
        if theirs.events[:1]:
            return theirs.events[0][0] == "request"
        return theirs.sent == [(w.GOAWAY, spec.stream_id, 1)] and ours.sent == [(w.GOAWAY, 0, 1)]
    if message in MALFORMED_MESSAGES:
        # RFC 9113 §8.1, §8.1.1: a malformed response is a stream PROTOCOL_ERROR; h2 ends
        # the connection.
        # On a stream already half-closed (remote) ours is STREAM_CLOSED (§5.1). Refused
        # DATA still returns its connection credit (§6.9): a WINDOW_UPDATE on stream 0.
        resets = ([(w.RST_STREAM, spec.stream_id, 1)], [(w.RST_STREAM, spec.stream_id, 5)])
        credit = [f for f in ours.sent[:-1] if f[0] == w.WINDOW_UPDATE and f[1] == 0]
        return ours.error is None and ours.sent[-1:] in resets and credit == ours.sent[:-1]
    if theirs.events[:1] and theirs.events[0][0] == "goaway":
        # RFC 9113 §6.8: our streams above the GOAWAY's last-stream-id were not processed;
        # we report them reset (REFUSED_STREAM, so the caller may retry), h2 does not.
        last = theirs.events[0][2]
        extra = [e for e in ours.events if e[0] == "reset" and e[1] > last and e[2] == 7]
        return [e for e in ours.events if e not in extra] == theirs.events
    if message.startswith(STREAM_STATE_MESSAGE) and ours.error is None:
        # RFC 9113 §5.1: HEADERS on a half-closed (remote) or closed stream is a *stream*
        # error STREAM_CLOSED; h2's stream state machine makes some of them a connection
        # PROTOCOL_ERROR.
        return ours.sent == [(w.RST_STREAM, spec.stream_id, 5)]
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(server_specs(), min_size=1, max_size=8))
@example([Spec("headers", 1, [(b":status", b"100")]), Spec("headers", 1, [(b":status", b"200")])])
@example([Spec("headers", 1, [(b":status", b"200")]), Spec("headers", 1, [(b"x", b"1")], flags=1)])
@example([Spec("push_promise", 1)])
@example([Spec("headers", 1, [(b":status", b"100")], flags=w.END_STREAM)])
@example([Spec("headers", 2, [])])
@example([Spec("data", 1, raw=b"x"), Spec("headers", 1, [(b":status", b"100")], flags=1)])
@example([Spec("data", 1, raw=b"x"), Spec("headers", 1, [(b":status", b"100")])])
@example(
    [
        Spec("headers", 1, [(b":status", b"200")], flags=1),
        Spec("headers", 1, [(b":status", b"100")], flags=1),
    ]
)
@example([Spec("headers", 2, [(b":status", b"100")], flags=w.END_STREAM)])
@example(
    [
        Spec("headers", 1, [(b":status", b"200")], flags=1),
        Spec("headers", 1, [(b":status", b"100")]),
    ]
)
@example([Spec("headers", 2, [(b":status", b"100")])])
@example([Spec("headers", 1, [(b":status", b"200")]), Spec("headers", 1, [(b":status", b"100")])])
@example([Spec("goaway", raw=bytes(8))])
@example([Spec("data", 1, raw=b"")])
@example([Spec("data", 1, raw=bytes(16384))] * 3)
def test_client_session_matches_h2(sequence: list[Spec]) -> None:
    run_client_differential(sequence)
