"""RecordBounds: where whole TLS records end, whatever pieces the bytes come in."""

from __future__ import annotations

import random

from h2ws_proxy.transport.tls_records import RecordBounds


def _records(lengths: list[int]) -> tuple[bytes, list[int]]:
    """Records with bodies of ``lengths`` (content type 23, TLS 1.2's version) and where
    each ends."""
    stream = bytearray()
    ends = []
    for index, length in enumerate(lengths):
        stream += bytes([23, 3, 3]) + length.to_bytes(2, "big") + bytes([index % 251]) * length
        ends.append(len(stream))
    return bytes(stream), ends


def _whole_end(ends: list[int], fed: int) -> int:
    return max([end for end in ends if end <= fed], default=0)


def _check_pieces(stream: bytes, ends: list[int], cuts: list[int]) -> None:
    bounds = RecordBounds()
    previous = 0
    for cut in [*cuts, len(stream)]:
        bounds.feed(stream[previous:cut])
        previous = cut
        assert bounds.fed == cut
        assert bounds.whole_end == _whole_end(ends, cut), (cuts, cut)


def test_split_at_every_byte_once() -> None:
    # Empty records, a short one, a header-sized one, one longer than 255 (both length
    # bytes), and a full-size one.
    stream, ends = _records([0, 1, 5, 0, 300, 17, 16384 + 256, 3])
    for cut in range(len(stream) + 1):
        _check_pieces(stream, ends, [cut])


def test_split_at_every_pair_of_bytes_of_small_records() -> None:
    stream, ends = _records([0, 3, 1, 6, 0, 2])
    for first in range(len(stream) + 1):
        for second in range(first, len(stream) + 1):
            _check_pieces(stream, ends, [first, second])


def test_fed_one_byte_at_a_time() -> None:
    stream, ends = _records([4, 0, 260, 1])
    _check_pieces(stream, ends, list(range(1, len(stream))))


def test_random_pieces() -> None:
    rng = random.Random(8441)
    for _ in range(300):
        stream, ends = _records(
            [rng.choice([0, 1, 4, 5, 6, 100, 255, 256, 4000]) for _ in range(6)]
        )
        cuts = sorted(rng.sample(range(len(stream) + 1), rng.randint(0, 8)))
        _check_pieces(stream, ends, cuts)


def test_whole_end_only_grows_with_whole_records() -> None:
    bounds = RecordBounds()
    bounds.feed(bytes([23, 3, 3, 0, 4]) + b"ab")
    assert bounds.whole_end == 0  # the body is not all here
    bounds.feed(b"cd" + bytes([23, 3]))
    assert bounds.whole_end == 9
    bounds.feed(bytes([3, 0, 0]))  # an empty record, its header split
    assert bounds.whole_end == 14
