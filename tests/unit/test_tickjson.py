"""The C tick encoder equals the official parser's ticks, number for number (JSON parsed back)."""

from __future__ import annotations

import os
import struct
import tracemalloc
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from ticker_worker.holder import ticks
from ticker_worker.holder.ticks import IsoTimes, encode_ticks, encode_ticks_python
from ticker_worker.kite import codec

IST = timezone(timedelta(hours=5, minutes=30))
u32 = st.integers(0, 2**32 - 1)
segments = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 12])


def test_accelerator_is_built() -> None:
    if ticks.frame_to_json is None:
        message = "ticker_worker.kite._tickjson was not compiled (gcc and Python headers needed)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@st.composite
def packet(draw: st.DrawFn) -> bytes:
    token = (draw(st.integers(1, 2**24 - 1)) << 8) | draw(segments)
    kind = draw(st.sampled_from([8, 28, 32, 44, 184]))
    if kind == 8:
        return struct.pack(">II", token, draw(u32))
    if kind in (28, 32):
        values = [draw(u32) for _ in range(kind // 4 - 1)]
        return struct.pack(f">{kind // 4}I", token, *values)
    if kind == 44:
        return struct.pack(">11I", token, *[draw(u32) for _ in range(10)])
    head = [draw(u32) for _ in range(15)]
    depth = [x for _ in range(10) for x in (draw(u32), draw(u32), draw(st.integers(0, 65535)))]
    return struct.pack(codec.FULL_FORMAT, token, *head, *depth)


def official_as_json(frame: bytes, is_mock: bool) -> list[dict[str, Any]]:
    """The official ticks with their naive local datetimes rendered as IST ISO strings."""
    out = []
    for tick in KiteTicker("k", "t")._parse_binary(frame):
        for key in ("last_trade_time", "exchange_timestamp"):
            if isinstance(tick.get(key), datetime):
                tick[key] = tick[key].astimezone(IST).isoformat()
        if is_mock:
            tick["is_mock"] = True
        out.append(tick)
    return out


@settings(max_examples=400, deadline=None)
@given(st.lists(packet(), max_size=12), st.booleans())
def test_c_encoder_equals_the_official_parser(packets: list[bytes], is_mock: bool) -> None:
    frame = codec.encode_frame(packets)
    body, tokens = encode_ticks(frame, is_mock, IsoTimes())
    expected = official_as_json(frame, is_mock)
    assert orjson.loads(body) == expected
    assert tokens == [t["instrument_token"] for t in expected]
    python_body, _ = encode_ticks_python(frame, is_mock, IsoTimes())
    assert orjson.loads(python_body) == expected


@pytest.mark.parametrize("frame", [
    b"", b"\x00", b"\x00\x01\x00\x08\x00\x00",            # heartbeat, truncated packet
    codec.encode_frame([b"\x00\x01"]),                   # packet shorter than a token
    codec.encode_frame([b"\x00" * 12]),                  # unknown length: skipped
])
def test_malformed_frames_behave_like_the_python_path(frame: bytes) -> None:
    try:
        expected = orjson.loads(encode_ticks_python(frame, True, IsoTimes())[0])
    except struct.error:
        with pytest.raises(struct.error):
            encode_ticks(frame, True, IsoTimes())
        return
    assert orjson.loads(encode_ticks(frame, True, IsoTimes())[0]) == expected


@pytest.mark.parametrize("segment", [1, 3, 6, 9, 12])
@pytest.mark.parametrize("raw", [0, 1, 9, 999, 1000, 1001, 10**4, 10**7, 123456789, 2**32 - 1])
def test_price_edges_for_every_divisor(segment: int, raw: int) -> None:
    token = (4242 << 8) | segment
    frame = codec.encode_frame([
        struct.pack(">II", token, raw),
        struct.pack(">11I", token, raw, 5, raw, 100, 1, 1, raw, raw, raw, raw),
        struct.pack(codec.FULL_FORMAT, token, raw, 5, raw, 100, 1, 1, raw, raw, raw, 1,
                    0, 0, 0, 0, 0, *([raw, raw, 3] * 10)),
    ])
    assert orjson.loads(encode_ticks(frame, False, IsoTimes())[0]) == official_as_json(frame, False)


def test_a_frame_that_lies_about_its_count_reserves_nothing_big() -> None:
    if ticks.frame_to_json is None:
        pytest.skip("the C accelerator is not built (test_accelerator_is_built says why)")
    ltp = struct.pack(">HII", 8, 408065, 123456)
    tracemalloc.start()
    try:
        for frame in (b"\xff\xff", b"\xff\xff" + ltp, b"\xff\xff" + ltp * 100):
            tracemalloc.reset_peak()
            assert ticks.frame_to_json(frame, True) is None
            # Before the fix the header alone reserved 65535 * 760 bytes (50 MB).
            assert tracemalloc.get_traced_memory()[1] < 64 * 1024
    finally:
        tracemalloc.stop()


def test_malformed_frames_are_counted_as_fallbacks_or_rejections() -> None:
    counts = ticks.DecodeCounts()
    ltp = struct.pack(">HII", 8, 408065, 123456)
    encode_ticks(b"\x00", True, IsoTimes(), counts)  # a heartbeat is not malformed
    assert orjson.loads(encode_ticks(b"\x00\x01" + ltp[:8], True, IsoTimes(), counts)[0]) == []
    with pytest.raises(struct.error):
        encode_ticks(b"\x00\x02" + ltp, True, IsoTimes(), counts)  # promises 2, holds 1
    expected_fallbacks = 2 if ticks.frame_to_json is not None else 0
    assert (counts.fallback, counts.rejected) == (expected_fallbacks, 1)


def test_the_gil_free_and_the_gil_holding_encoders_agree() -> None:
    if ticks.frame_to_json is None:
        pytest.skip("the C accelerator is not built (test_accelerator_is_built says why)")
    frame = codec.encode_frame([struct.pack(">11I", (i << 8) | 1, *range(i, i + 10))
                                for i in range(1, 200)])
    assert ticks.frame_to_json(frame, True, True) == ticks.frame_to_json(frame, True, False)
