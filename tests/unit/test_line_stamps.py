"""An access line's time stamp across seconds (``log_lines.py``).

The sink stamps a line of the same second as the last one from the second it kept (two
comparisons with that second's start and the next's), and stamps anew when a line's time is
in any other second: a later one, or an earlier one (the wall clock set back). Every line's
stamp is ``log_texts.stamp`` of its time, as ``LogRecord`` renders it, whatever came before,
for both ways a line is written (``access_line`` and ``kept_access_line``).
"""

from __future__ import annotations

import io
import logging
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from h2ws_proxy import log_lines
from h2ws_proxy.log_lines import AccessLine, LineSink
from h2ws_proxy.log_texts import stamp

LINE = AccessLine(logging.INFO, "h2ws_proxy.tunnel", "test.closed", ("a", "stream", "b", "c", "d"))
VALUES = ("v", 1, 2, 3, "0.1")
KEY = (LINE, "stamps")
#: Times near a few second boundaries, so that a list of them moves across seconds both ways.
BASES = (1_765_146_000.0, 1_765_146_001.0, 1_765_146_002.0, 1_765_146_060.0)
TIMES = st.builds(
    lambda base, offset: base + offset,
    st.sampled_from(BASES),
    st.floats(min_value=-0.002, max_value=0.999999, allow_nan=False),
)


def _kept_sink(stream: io.StringIO) -> tuple[LineSink, tuple[str, ...]]:
    sink = LineSink(stream)
    sink.keep_access_template(KEY, LINE, VALUES, (1, 2, 3, 4))
    sink.keep_access_template(KEY, LINE, VALUES, (1, 2, 3, 4))
    return sink, sink.kept_access_templates[KEY]


@given(times=st.lists(TIMES, min_size=1, max_size=12), kept=st.lists(st.booleans(), min_size=12))
@example(
    times=[BASES[1] + 0.5, BASES[1] + 0.9995, BASES[2] + 0.0, BASES[1] + 0.25], kept=[True] * 12
)
@example(times=[BASES[2] + 0.1, BASES[1] + 0.1, BASES[1] + 0.1], kept=[False, True, False] * 4)
def test_every_line_is_stamped_with_its_own_second(times: list[float], kept: list[bool]) -> None:
    stream = io.StringIO()
    sink, pieces = _kept_sink(stream)
    for created, by_kept in zip(times, kept, strict=False):
        with mock.patch.object(log_lines.time, "time", return_value=created):
            if by_kept:
                sink.kept_access_line(pieces, 1, 2, 3, "0.1")
            else:
                sink.access_line(LINE, VALUES)
    sink.flush()
    stamps = [line.split(" ", 1)[0] for line in stream.getvalue().splitlines()]
    assert stamps == [stamp(created) for created in times]
