"""``receive_data_frames``: the DATA frames that open a read, fed without event objects,
exactly as ``receive_data`` takes them; from the first other frame on, ``receive_data``'s.

The differential tests run one session the front end's way (``receive_data_frames`` first,
then ``receive_data`` for the rest of the read) and one through ``receive_data`` alone, with
the same consumer: what each stream was fed, the other events, the windows, the credit and
resets sent, and errors must be the same. The reference reads each read whole and handles
its events after, also where the consumer returns credit as it is fed: credit returned for
one frame of a read must not make room for a later frame of the same read (the peer has
not seen that WINDOW_UPDATE, RFC 9113 §6.9.1), and it goes out after the read's own
answers (PING and SETTINGS ACKs, resets, a GOAWAY), as the reference sends it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import hpack
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from h2ws_proxy.h2session import (
    ConnectionFailed,
    DataReceived,
    ErrorCode,
    Event,
    H2Session,
    LocalSettings,
    Role,
)
from tests.unit.http2_session import wire as w
from tests.unit.http2_session.diff_specs import Spec, build, specs

OPEN_1 = w.headers(1, w.block(w.REQUEST))
Record = tuple[object, ...]


def taking_all(stream_id: int, payload: bytes) -> bool:
    return True


def never(stream_id: int, payload: bytes) -> bool:
    raise AssertionError("feed called")


def state(session: H2Session) -> tuple[object, ...]:
    windows = {
        sid: (s.recv_window, s.send_window, s.unacked, s.state)
        for sid, s in session._streams.items()
    }
    return (
        session._recv_window,
        session._unacked,
        windows,
        bytes(session.take_outbound()),
        session.closed,
    )


# -- the differential tests -------------------------------------------------------------------


class Consumer:
    """The application: records what it is given; returns credit for DATA as it takes it
    (``inline``) or after each read; streams in ``tunnels`` take DATA without an event."""

    def __init__(self, session: H2Session, tunnels: frozenset[int], inline: bool) -> None:
        self.session = session
        self.tunnels = tunnels
        self.inline = inline
        self.records: list[Record] = []
        self._owed: list[tuple[int, int]] = []

    def feed(self, stream_id: int, payload: bytes) -> bool:
        if stream_id not in self.tunnels:
            return False
        self._data(stream_id, payload, len(payload), False)
        return True

    def handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, DataReceived):
                self._data(
                    event.stream_id, event.data, event.flow_controlled_length, event.end_stream
                )
            else:
                self.records.append(("event", event))

    def _data(self, stream_id: int, data: bytes, length: int, end: bool) -> None:
        self.records.append(("data", stream_id, data, length, end))
        if self.inline:
            self.session.acknowledge_received_data(stream_id, len(data))
        else:
            self._owed.append((stream_id, len(data)))

    def read_done(self) -> None:
        for stream_id, size in self._owed:
            self.session.acknowledge_received_data(stream_id, size)
        self._owed.clear()
        self.records.append(("out", w.summary(self.session.take_outbound())))


def session_with(initial_window: int) -> H2Session:
    session = H2Session(Role.SERVER, LocalSettings(initial_window_size=initial_window))
    session.initiate()
    session.receive_data(w.PREFACE + w.settings() + w.settings(ack=True))
    session.take_outbound()
    return session


def run_both(
    wire: bytes, cuts: list[int], tunnels: frozenset[int], inline: bool, initial_window: int
) -> tuple[list[int], list[Record], list[Record], H2Session, H2Session]:
    """The front end's way and ``receive_data`` alone, over ``wire`` read in pieces cut at
    ``cuts``: (bytes taken per read, records of each, the two sessions). The reference's
    consumer returns credit (``inline``: while it handles the read's events) only after the
    read was parsed whole."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(wire))), len(wire)]
    reads = [wire[a:b] for a, b in itertools.pairwise(bounds)]
    fast = session_with(initial_window)
    fast_consumer = Consumer(fast, tunnels, inline)
    taken_per_read = []
    for read in reads:
        taken = fast.receive_data_frames(read, fast_consumer.feed)
        assert 0 <= taken <= len(read)
        taken_per_read.append(taken)
        if taken < len(read):
            fast_consumer.handle(fast.receive_data(read[taken:]))
        fast_consumer.read_done()
    plain = session_with(initial_window)
    plain_consumer = Consumer(plain, tunnels, inline)
    for read in reads:
        plain_consumer.handle(plain.receive_data(read))
        plain_consumer.read_done()
    return taken_per_read, fast_consumer.records, plain_consumer.records, fast, plain


@st.composite
def tunnel_reads(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Streams 1, 3 and 5 opened (a read of its own), then mostly DATA on them (of sizes
    that run windows out), with now and then any other frame a client might send; and
    where the reads end: mostly between frames, sometimes inside one."""
    encoder = hpack.Encoder()
    opening = b"".join(build(Spec("headers", sid, w.REQUEST), encoder) for sid in (1, 3, 5))
    data_specs = st.builds(
        lambda sid, payload, end, pad: Spec("data", sid, raw=payload, flags=end, pad=pad),
        st.sampled_from([1, 1, 3, 3, 5, 7, 0]),
        st.binary(min_size=1, max_size=40)
        | st.sampled_from([b"", bytes(60), bytes(90), bytes(600), bytes(16384)]),
        st.sampled_from([0] * 12 + [1]),
        st.sampled_from([None] * 12 + [0, 3]),
    )
    sequence = draw(st.lists(data_specs | data_specs | data_specs | specs(), max_size=24))
    frames = [build(spec, encoder) for spec in sequence]
    ends = [len(opening)]
    for piece in frames:
        ends.append(ends[-1] + len(piece))
    wire = opening + b"".join(frames)
    cuts = draw(st.lists(st.sampled_from(ends) | st.integers(0, len(wire)), max_size=8))
    return wire, [len(opening), *cuts]


TUNNELS = st.frozensets(st.sampled_from([1, 3, 5, 7]))
WINDOWS = st.sampled_from([100, 1000, 65535])
ALL = frozenset({1, 3, 5})


def over_the_connection_window() -> tuple[bytes, list[int]]:
    """Streams 1, 3, 5 opened, then full frames on them, past the connection's window
    (65,535) at the fourth: those in a read of their own."""
    opening = b"".join(w.headers(sid, w.block(w.REQUEST)) for sid in (1, 3, 5))
    frames = b"".join(w.data(sid, bytes(16384)) for sid in (1, 3, 5, 1, 3))
    return opening + frames, [len(opening)]


def over_a_small_stream_window() -> tuple[bytes, list[int]]:
    """Stream 1 opened, then one read of two 60-byte frames on it: over a 100-byte stream
    window at the second, unless credit for the first (queued as it was fed) counted."""
    opening = w.headers(1, w.block(w.REQUEST))
    return opening + w.data(1, bytes(60)) + w.data(1, bytes(60)), [len(opening)]


@settings(max_examples=300, deadline=None)
@given(tunnel_reads(), TUNNELS, WINDOWS)
@example(over_the_connection_window(), ALL, 65535)
def test_the_same_as_receive_data_for_the_same_reads(
    reads: tuple[bytes, list[int]], tunnels: frozenset[int], window: int
) -> None:
    """Credit returned after each read: the fast path changes nothing the session does."""
    _, fast_records, plain_records, fast, plain = run_both(*reads, tunnels, False, window)
    assert fast_records == plain_records
    assert state(fast) == state(plain)


@settings(max_examples=300, deadline=None)
@given(tunnel_reads(), TUNNELS, WINDOWS)
@example(over_the_connection_window(), ALL, 65535)
@example(over_a_small_stream_window(), ALL, 100)
def test_the_same_as_receive_data_with_credit_returned_while_feeding(
    reads: tuple[bytes, list[int]], tunnels: frozenset[int], window: int
) -> None:
    """Credit returned as DATA is fed: the windows a read's frames are judged by, and the
    output, are still those of the whole read parsed first (its credit held till then)."""
    _, fast_records, plain_records, fast, plain = run_both(*reads, tunnels, True, window)
    assert fast_records == plain_records
    assert state(fast) == state(plain)


def test_the_reference_refuses_what_the_fast_path_must_leave() -> None:
    """The reference is not the fast path's own word: a frame over its stream's window,
    taken anyway, would show (the reference resets the stream)."""
    head = w.headers(1, w.block(w.REQUEST))
    wire = head + w.data(1, bytes(60)) + w.data(1, bytes(60))
    taken, fast_records, plain_records, *_ = run_both(wire, [len(head)], frozenset({1}), False, 100)
    assert taken == [0, len(w.data(1, bytes(60)))]  # the second is over the stream's window
    assert fast_records == plain_records
    assert ("out", [(w.RST_STREAM, 1, ErrorCode.FLOW_CONTROL_ERROR)]) in plain_records


# -- what it takes and what it leaves ----------------------------------------------------------


def test_dat_frames_of_several_streams_are_fed_in_order() -> None:
    session = w.server()
    session.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST)))
    window = session._recv_window
    windows = {sid: session._streams[sid].recv_window for sid in (1, 3)}
    fed: list[tuple[int, bytes]] = []

    def feed(stream_id: int, payload: bytes) -> bool:
        fed.append((stream_id, payload))
        return True

    read = w.data(1, b"hello") + w.data(3, b"abc") + w.data(1, b"!")
    assert session.receive_data_frames(read, feed) == len(read)
    assert fed == [(1, b"hello"), (3, b"abc"), (1, b"!")]
    assert session._recv_window == window - 9
    assert session._streams[1].recv_window == windows[1] - 6
    assert session._streams[3].recv_window == windows[3] - 3
    assert not session.take_outbound()


FIRST = w.data(1, b"first")


@pytest.mark.parametrize(
    "other",
    [
        w.data(1, b"hi", end_stream=True),  # the end: the stream's state moves
        w.data(1, b"hi", pad=3),  # padding: credited at once
        w.data(1, b""),  # empty: the front end counts it
        w.data(3, b"hi"),  # an idle stream: a connection error
        w.data(1, bytes(16385)),  # over MAX_FRAME_SIZE: a connection error
        w.frame(w.DATA, 0, 0, b"hi"),  # stream 0
        w.window_update(1, 10),  # not DATA
        w.window_update(0, 10),
        w.ping(),
        w.rst_stream(1, 8),
    ],
)
def test_the_first_other_frame_and_the_rest_are_left_to_receive_data(other: bytes) -> None:
    session, plain = w.server(), w.server()
    session.receive_data(OPEN_1)
    plain.receive_data(OPEN_1)
    plain.receive_data(FIRST)
    read = FIRST + other + w.data(1, b"after")
    assert session.receive_data_frames(read, taking_all) == len(FIRST)
    assert state(session) == state(plain)  # the first frame as receive_data takes it
    assert session.receive_data(read[len(FIRST) :]) == plain.receive_data(read[len(FIRST) :])
    assert state(session) == state(plain)


@pytest.mark.parametrize("cut", [1, 5, 9, 10, 13])
def test_a_frame_not_all_here_is_left_to_receive_data(cut: int) -> None:
    session, plain = w.server(), w.server()
    session.receive_data(OPEN_1)
    plain.receive_data(OPEN_1)
    plain.receive_data(FIRST)
    read = FIRST + w.data(1, b"hello")[:cut]
    assert session.receive_data_frames(read, taking_all) == len(FIRST)
    assert state(session) == state(plain)
    assert session.receive_data(read[len(FIRST) :]) == plain.receive_data(read[len(FIRST) :])
    assert state(session) == state(plain)


def test_nothing_on_a_stream_the_peer_ended() -> None:
    session = w.server()
    session.receive_data(w.headers(1, w.block(w.REQUEST), end_stream=True))
    assert session.receive_data_frames(w.data(1, b"x"), never) == 0


def test_a_frame_the_consumer_does_not_take_is_left_with_its_windows_as_they_were() -> None:
    session, plain = w.server(), w.server()
    session.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST)))
    plain.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST)))
    plain.receive_data(FIRST)
    read = FIRST + w.data(3, b"not a tunnel") + w.data(1, b"after")
    assert session.receive_data_frames(read, lambda sid, _: sid == 1) == len(FIRST)
    assert state(session) == state(plain)


def test_a_frame_over_either_window_is_left_to_receive_data() -> None:
    session = w.server(initial_window_size=10)
    session.receive_data(w.settings(ack=True) + OPEN_1)
    over = w.data(1, bytes(6)) + w.data(1, bytes(6))
    assert session.receive_data_frames(over, taking_all) == len(over) // 2
    events = session.receive_data(over[len(over) // 2 :])
    assert not any(isinstance(event, ConnectionFailed) for event in events)
    assert events[-1].error_code == ErrorCode.FLOW_CONTROL_ERROR  # type: ignore[attr-defined]
    connection = w.server()
    connection.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST)))
    big = b"".join(w.data(sid, bytes(16384)) for sid in (1, 3, 1, 3))  # 65,536 > 65,535
    assert connection.receive_data_frames(big, taking_all) == len(big) * 3 // 4
    assert isinstance(connection.receive_data(big[len(big) * 3 // 4 :])[-1], ConnectionFailed)


def test_nothing_while_a_frame_is_buffered_or_a_header_block_is_open() -> None:
    session = w.server()
    session.receive_data(OPEN_1)
    session.receive_data(w.data(1, b"abc")[:5])
    assert session.receive_data_frames(w.data(1, b"x"), never) == 0
    blocked = w.server()
    blocked.receive_data(OPEN_1 + w.headers(3, w.block(w.REQUEST), end_headers=False))
    assert blocked.receive_data_frames(w.data(1, b"x"), never) == 0


def test_nothing_before_the_peers_settings_nor_after_a_failure() -> None:
    session = H2Session(Role.SERVER, LocalSettings())
    session.initiate()
    assert session.receive_data_frames(w.PREFACE, never) == 0
    session.receive_data(w.PREFACE)
    assert session.receive_data_frames(w.data(1, b"x"), never) == 0
    failed = w.server()
    failed.receive_data(OPEN_1)
    failed.receive_data(w.frame(w.PUSH_PROMISE, 4, 1, bytes(4)))
    assert failed.closed
    assert failed.receive_data_frames(w.data(1, b"x"), never) == 0


def test_not_before_a_responses_final_head_in_the_client_role() -> None:
    session = H2Session(Role.CLIENT, LocalSettings())
    session.initiate()
    session.receive_data(w.settings())
    session.send_headers(1, w.REQUEST)
    assert session.receive_data_frames(w.data(1, b"x"), never) == 0
    session.receive_data(w.headers(1, hpack.Encoder().encode([(b":status", b"200")])))
    assert session.receive_data_frames(w.data(1, b"x"), taking_all) == len(w.data(1, b"x"))


def returning_credit(session: H2Session) -> Callable[[int, bytes], bool]:
    """A ``feed`` that takes everything and returns its credit at once."""
    acknowledge: Callable[[int, int], None] = session.acknowledge_received_data

    def feed(stream_id: int, payload: bytes) -> bool:
        acknowledge(stream_id, len(payload))
        return True

    return feed


def test_credit_returned_while_feeding_does_not_count_for_the_same_read() -> None:
    """The peer sent the second frame past the window it was given (the WINDOW_UPDATE for
    the first was only queued): a FLOW_CONTROL_ERROR for the stream, as ``receive_data``
    of the whole read gives (RFC 9113 §6.9.1)."""
    session = w.server(initial_window_size=100)
    session.receive_data(w.settings(ack=True) + OPEN_1)
    read = w.data(1, bytes(60)) + w.data(1, bytes(60))  # 120 > 100 without the credit
    assert session.receive_data_frames(read, returning_credit(session)) == len(read) // 2
    assert not session.outbound  # held until the read is parsed
    session.receive_data(read[len(read) // 2 :])
    assert w.summary(session.take_outbound()) == [(w.RST_STREAM, 1, ErrorCode.FLOW_CONTROL_ERROR)]
    assert session._unacked == 120  # the first frame's credit too, the connection's only


def test_credit_of_a_whole_read_taken_goes_out_at_its_end() -> None:
    session = w.server(initial_window_size=100)
    session.receive_data(w.settings(ack=True) + OPEN_1)
    read = w.data(1, bytes(30)) + w.data(1, bytes(30)) + w.data(1, bytes(30))
    assert session.receive_data_frames(read, returning_credit(session)) == len(read)
    assert w.summary(session.take_outbound()) == [(w.WINDOW_UPDATE, 1, 60)]
    assert session._streams[1].recv_window == 100 - 90 + 60


def test_credit_goes_after_the_reads_answers_and_not_after_a_goaway() -> None:
    session = w.server(initial_window_size=100)
    session.receive_data(w.settings(ack=True) + OPEN_1)
    fed = w.data(1, bytes(60))
    session.receive_data_frames(fed + w.ping(), returning_credit(session))
    session.receive_data(w.ping())
    kinds = [kind for kind, *_ in w.summary(session.take_outbound())]
    assert kinds == [w.PING, w.WINDOW_UPDATE]
    failing = w.server(initial_window_size=100)
    failing.receive_data(w.settings(ack=True) + OPEN_1)
    bad = w.frame(w.PUSH_PROMISE, 4, 1, bytes(4))
    failing.receive_data_frames(fed + bad, returning_credit(failing))
    failing.receive_data(bad)
    assert [kind for kind, *_ in w.summary(failing.take_outbound())] == [w.GOAWAY]
    failing.acknowledge_received_data(1, 10)  # held credit does not stay held
    assert not failing.outbound
