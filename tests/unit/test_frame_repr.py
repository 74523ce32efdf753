"""The cheaper DATA frame repr (h2_session) renders exactly what hyperframe's did."""

from __future__ import annotations

import pytest
from hyperframe.frame import DataFrame, Flags, Frame

from h2ws_proxy.http2.h2lib_session import _data_frame_body_repr


@pytest.mark.parametrize("size", [0, 1, 9, 10, 11, 100, 16384])
@pytest.mark.parametrize("pad_length", [None, 0, 1, 3, 20])
@pytest.mark.parametrize("end_stream", [False, True])
def test_same_text_as_hyperframe(size: int, pad_length: int | None, end_stream: bool) -> None:
    frame = DataFrame(1, bytes(range(256)) * (size // 256) + bytes(range(size % 256)))
    frame.flags = Flags(frame.defined_flags)
    if end_stream:
        frame.flags.add("END_STREAM")
    if pad_length is not None:
        frame.flags.add("PADDED")
        frame.pad_length = pad_length
    # hyperframe's generic version: serialize the whole body, hexlify, cut.
    assert _data_frame_body_repr(frame) == Frame._body_repr(frame)
    assert repr(frame).endswith(_data_frame_body_repr(frame))
