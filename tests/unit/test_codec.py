"""The binary codec against the official parser: `decode_frame` must equal `_parse_binary`."""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kiteconnect import KiteTicker

from ticker_worker.kite.codec import (
    HEARTBEAT,
    decode_frame,
    divisor,
    encode_frame,
    encode_full,
    encode_index,
    encode_ltp,
    encode_quote,
    is_index,
)

OFFICIAL = KiteTicker("k", "t")
NIFTY, INFY = 256265, 408065
CDS_TOKEN = (40000 << 8) | 3
BCD_TOKEN = (40000 << 8) | 6
NCO_TOKEN = (40000 << 8) | 12
EPOCH = 1_764_216_000


def official(frame: bytes) -> list[dict[str, Any]]:
    return list(OFFICIAL._parse_binary(frame))


def ohlc(price: float) -> dict[str, float]:
    return {"open": price, "high": price * 1.01, "low": price * 0.99, "close": price * 0.995}


def quote_fields(price: float) -> dict[str, Any]:
    return {
        "last_price": price, "last_traded_quantity": 7, "average_traded_price": price,
        "volume_traded": 12_345, "total_buy_quantity": 500, "total_sell_quantity": 600,
        "ohlc": ohlc(price),
    }


def full_fields(price: float) -> dict[str, Any]:
    step = 1 / divisor(CDS_TOKEN) * 25_000
    levels = [{"quantity": 10 * n, "price": price - n * step, "orders": n} for n in range(1, 6)]
    asks = [{"quantity": 20 * n, "price": price + n * step, "orders": n} for n in range(1, 6)]
    return {
        **quote_fields(price), "last_trade_time": EPOCH, "oi": 10, "oi_day_high": 12,
        "oi_day_low": 9, "exchange_timestamp": EPOCH + 1, "depth": {"buy": levels, "sell": asks},
    }


def test_segments_follow_the_official_client() -> None:
    assert divisor(CDS_TOKEN) == 1e7 and divisor(BCD_TOKEN) == 1e4 and divisor(NCO_TOKEN) == 1e4
    assert divisor(INFY) == 100.0 and divisor(NIFTY) == 100.0
    assert is_index(NIFTY) and not is_index(INFY)


@pytest.mark.parametrize("segment", range(256))
def test_every_segment_divides_like_the_official_client(segment: int) -> None:
    frame = encode_frame([struct.pack(">II", (1234 << 8) | segment, 987_654_321)])
    assert decode_frame(frame) == official(frame)


@pytest.mark.parametrize("token", [INFY, CDS_TOKEN, BCD_TOKEN, NCO_TOKEN, NIFTY])
def test_every_packet_kind_round_trips_through_the_official_parser(token: int) -> None:
    price = 83.2525 if token in (CDS_TOKEN, BCD_TOKEN, NCO_TOKEN) else 1874.35
    packets = [
        encode_ltp(token, price),
        encode_index(token, last_price=price, ohlc=ohlc(price)),
        encode_index(token, last_price=price, ohlc=ohlc(price), exchange_timestamp=EPOCH),
        encode_quote(token, **quote_fields(price)),
        encode_full(token, **full_fields(price)),
    ]
    assert [len(p) for p in packets] == [8, 28, 32, 44, 184]
    frame = encode_frame(packets)
    ticks = decode_frame(frame)
    assert ticks == official(frame)
    assert [t["mode"] for t in ticks] == ["ltp", "quote", "full", "quote", "full"]
    assert all(t["last_price"] == pytest.approx(price) for t in ticks)
    assert ticks[4]["depth"]["sell"][4]["quantity"] == 100
    assert ticks[4]["exchange_timestamp"] == datetime.fromtimestamp(EPOCH + 1)


def test_heartbeats_and_short_frames_decode_to_nothing() -> None:
    for frame in (b"", HEARTBEAT, b"\x00\x00"):
        assert decode_frame(frame) == official(frame) == []


def test_unknown_packet_lengths_are_skipped() -> None:
    frame = encode_frame([b"\x01" * 12, encode_ltp(INFY, 10.5), b"\x00" * 4, b"\x02" * 183])
    assert decode_frame(frame) == official(frame) == [
        {"tradable": True, "mode": "ltp", "instrument_token": INFY, "last_price": 10.5}
    ]


@pytest.mark.parametrize("length", [0, 1, 3])
def test_packets_without_a_token_raise_like_the_official_parser(length: int) -> None:
    frame = encode_frame([encode_ltp(INFY, 10.5), b"\x01" * length])
    with pytest.raises(struct.error):
        official(frame)
    with pytest.raises(struct.error):
        decode_frame(frame)


def test_truncated_frames_behave_like_the_official_parser() -> None:
    full = encode_frame([encode_full(INFY, **full_fields(100.0))])
    cut_to_quote = full[: 4 + 44]  # the official slice is then 44 bytes long: a quote
    assert decode_frame(cut_to_quote) == official(cut_to_quote)
    assert decode_frame(cut_to_quote)[0]["mode"] == "quote"
    too_few = struct.pack(">H", 2) + full[2:]
    with pytest.raises(struct.error):
        official(too_few)
    with pytest.raises(struct.error):
        decode_frame(too_few)


def test_the_datetime_hook_converts_both_timestamps() -> None:
    frame = encode_frame([encode_full(INFY, **full_fields(100.0))])
    [tick] = decode_frame(frame, to_datetime=lambda epoch: f"t{epoch}")
    assert tick["last_trade_time"] == f"t{EPOCH}" and tick["exchange_timestamp"] == f"t{EPOCH + 1}"

    def broken(epoch: int) -> Any:
        raise OverflowError(epoch)

    [tick] = decode_frame(frame, to_datetime=broken)
    assert tick["last_trade_time"] is None and tick["exchange_timestamp"] is None


def test_index_packets_carry_the_signed_price_change() -> None:
    packet = encode_index(NIFTY, last_price=99.0, ohlc={"open": 1, "high": 2, "low": 0.5, "close": 100.0})
    assert struct.unpack(">i", packet[24:28])[0] == -100


# Random frames: raw wire values for every field, any segment, any mix of packet kinds.
U32 = st.integers(0, 0xFFFFFFFF)
TOKENS = st.builds(lambda high, seg: (high << 8) | seg, st.integers(0, 0xFFFFFF),
                   st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 200]))
PACKETS = st.one_of(
    st.tuples(TOKENS, U32).map(lambda v: struct.pack(">II", *v)),
    st.tuples(TOKENS, st.lists(U32, min_size=6, max_size=6)).map(
        lambda v: struct.pack(">7I", v[0], *v[1])),
    st.tuples(TOKENS, st.lists(U32, min_size=7, max_size=7)).map(
        lambda v: struct.pack(">8I", v[0], *v[1])),
    st.tuples(TOKENS, st.lists(U32, min_size=10, max_size=10)).map(
        lambda v: struct.pack(">11I", v[0], *v[1])),
    st.tuples(TOKENS, st.lists(U32, min_size=15, max_size=15),
              st.lists(st.tuples(U32, U32, st.integers(0, 0xFFFF)), min_size=10, max_size=10)).map(
        lambda v: struct.pack(">16I" + "IIH2x" * 10, v[0], *v[1], *[x for e in v[2] for x in e])),
    st.binary(max_size=200),  # mostly lengths the parser must skip
)


@settings(max_examples=300, deadline=None)
@given(st.lists(PACKETS, max_size=12))
def test_random_frames_decode_exactly_like_the_official_parser(packets: list[bytes]) -> None:
    frame = encode_frame(packets)
    assert outcome(decode_frame, frame) == outcome(official, frame)


def outcome(parse: Any, frame: bytes) -> tuple[str, Any]:
    """The parse result, or the exception type when the frame is malformed."""
    try:
        return "ok", parse(frame)
    except struct.error:
        return "error", struct.error


@settings(max_examples=200, deadline=None)
@given(token=TOKENS, raw=st.lists(st.integers(1, 2_000_000_000), min_size=6, max_size=6),
       quantities=st.lists(st.integers(0, 10**9), min_size=5, max_size=5))
def test_float_encoders_round_trip(token: int, raw: list[int], quantities: list[int]) -> None:
    div = divisor(token)
    price, o, h, low, c, avg = (r / div for r in raw)
    fields = {
        "last_price": price, "last_traded_quantity": quantities[0], "average_traded_price": avg,
        "volume_traded": quantities[1], "total_buy_quantity": quantities[2],
        "total_sell_quantity": quantities[3], "ohlc": {"open": o, "high": h, "low": low, "close": c},
    }
    frame = encode_frame([
        encode_ltp(token, price),
        encode_quote(token, **fields),
        encode_index(token, last_price=price, ohlc=fields["ohlc"], exchange_timestamp=quantities[4]),
    ])
    ltp, quote, index = decode_frame(frame)
    assert [ltp, quote, index] == official(frame)
    assert ltp["last_price"] == quote["last_price"] == index["last_price"] == raw[0] / div
    assert quote["ohlc"] == index["ohlc"] == {"open": o, "high": h, "low": low, "close": c}
    assert quote["volume_traded"] == quantities[1]
