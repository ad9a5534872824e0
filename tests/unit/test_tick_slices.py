"""A frame cut into slices publishes the same ticks in the same order; the C encoder's quick
decimal text of a float parses back to the official parser's value."""

from __future__ import annotations

import re
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_tickjson import official_as_json, packet
from ticker_worker.holder import ticks
from ticker_worker.holder.ticks import IsoTimes, encode_ticks, split_frame
from ticker_worker.kite import codec

needs_c = pytest.mark.skipif(ticks.frame_to_json is None, reason="the C accelerator is not built "
                             "(tests/unit/test_tickjson.py::test_accelerator_is_built says why)")


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.lists(packet(), max_size=12), st.integers(1, 5), st.binary(max_size=3))
def test_slices_hold_the_frames_ticks_in_order(packets: list[bytes], per: int,
                                               tail: bytes) -> None:
    frame = codec.encode_frame(packets) + tail  # bytes past the count are not packets
    parts = split_frame(frame, per)
    assert all(struct.unpack_from(">H", p)[0] <= per for p in parts)
    whole, tokens = encode_ticks(frame, True, IsoTimes())
    encoded = [encode_ticks(p, True, IsoTimes()) for p in parts]
    assert [t for body, _ in encoded for t in orjson.loads(body)] == orjson.loads(whole)
    assert [t for _, part_tokens in encoded for t in part_tokens] == tokens


@needs_c
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(1, 3))
def test_a_malformed_frame_is_not_sliced(frame: bytes, per: int) -> None:
    malformed = ticks.frame_to_json(frame, False) is None
    assert (ticks.frame_slices(frame, per) is None) == malformed
    if malformed:
        assert split_frame(frame, per) == [frame]  # encode_ticks judges it whole


def index_quote(close: int, last: int) -> bytes:
    return struct.pack(">7I", (77 << 8) | 9, last, last, last, last, close, 0)


@pytest.mark.parametrize("close", [1, 3, 7, 100, 12_345, 10**6, 999_999_937, 2**32 - 1])
def test_change_values_parse_back_to_the_official_float(close: int) -> None:
    # (last - close) * 100 / close spans 1e-8 .. 4e11 here: both sides of the quick path's
    # plain-decimal range, powers of ten, and values that need 15, 16 and 17 digits.
    lasts = {0, 1, 2, close - 1, close + 1, close * 2, 2**32 - 1, close // 3, close * 7 // 3}
    lasts |= {min(2**32 - 1, close + close // 10**k) for k in range(10)}
    frame = codec.encode_frame([index_quote(close, last) for last in sorted(lasts)
                                if 0 <= last < 2**32])
    body, _ = encode_ticks(frame, False, IsoTimes())
    assert orjson.loads(body) == official_as_json(frame, False)


def test_values_of_up_to_15_digits_print_as_python_prints_them() -> None:
    pairs = [(100, 150), (400, 300), (800, 801), (10**6, 10**6 + 1), (3, 4), (12_345, 1)]
    body, _ = encode_ticks(codec.encode_frame([index_quote(c, last) for c, last in pairs]),
                           False, IsoTimes())
    texts = re.findall(rb'"change":([^,}]+)', body)
    short = 0
    for (close, last), text in zip(pairs, texts, strict=True):
        value = (last / 100 - close / 100) * 100 / (close / 100)
        assert float(text) == value
        if len(repr(value).lstrip("-0.").replace(".", "")) <= 15:
            assert text.decode() == repr(value)
            short += 1
    assert short >= 3  # 50.0, -25.0 and -99.9918995544755
