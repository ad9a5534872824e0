"""The Kite ticker binary codec: packet and frame layouts, encoders, and a fast decoder.

Pure (no I/O). The decoder returns exactly what the official `KiteTicker._parse_binary` returns.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any

#: Segment codes (`token & 0xFF`), as in `KiteTicker.EXCHANGE_MAP`.
EXCHANGE_SEGMENTS: dict[str, int] = {
    "nse": 1, "nfo": 2, "cds": 3, "bse": 4, "bfo": 5, "bcd": 6,
    "mcx": 7, "mcxsx": 8, "indices": 9, "nco": 12,
}
INDEX_SEGMENT = 9
#: Price divisors that differ from the default 100.0 (the official client's exact floats).
SEGMENT_DIVISORS: dict[int, float] = {3: 10000000.0, 6: 10000.0, 12: 10000.0}
_DEFAULT_DIVISOR = 100.0

#: One 1-byte binary message; the official client hands it to `on_message` only.
HEARTBEAT = b"\x00"

# Field order of each packet, big-endian. Depth entries are quantity, price, orders(uint16), pad.
LTP_FORMAT = ">II"  # token, last_price
INDEX_QUOTE_FORMAT = ">7I"  # token, last_price, high, low, open, close, price change (int32)
INDEX_FULL_FORMAT = ">8I"  # ... plus exchange_timestamp
QUOTE_FORMAT = ">11I"  # token, ltp, ltq, atp, volume, buy qty, sell qty, open, high, low, close
# quote fields, last_trade_time, oi, oi_day_high, oi_day_low, exchange_timestamp, 10 depth entries
FULL_FORMAT = ">16I" + "IIH2x" * 10

_COUNT = struct.Struct(">H")
_LTP = struct.Struct(LTP_FORMAT)
_INDEX_QUOTE = struct.Struct(INDEX_QUOTE_FORMAT)
_INDEX_FULL = struct.Struct(INDEX_FULL_FORMAT)
_QUOTE = struct.Struct(QUOTE_FORMAT)
_FULL = struct.Struct(FULL_FORMAT)
_U32_MASK = 0xFFFFFFFF
_DEPTH_LEVELS = 5

ToDatetime = Callable[[int], Any]


def divisor(token: int) -> float:
    """Return the price divisor for an instrument token, chosen by its segment byte."""
    return SEGMENT_DIVISORS.get(token & 0xFF, _DEFAULT_DIVISOR)


def is_index(token: int) -> bool:
    """Return True when the token is an index (segment 9): not tradable, index packet layouts."""
    return token & 0xFF == INDEX_SEGMENT


def _scale(price: float, div: float) -> int:
    return round(price * div)


def encode_ltp(token: int, last_price: float) -> bytes:
    """Encode an 8-byte LTP packet."""
    return _LTP.pack(token, _scale(last_price, divisor(token)))


def encode_index(
    token: int,
    *,
    last_price: float,
    ohlc: Mapping[str, float],
    exchange_timestamp: int | None = None,
) -> bytes:
    """Encode an index packet: 28 bytes (quote) without a timestamp, 32 bytes (full) with one."""
    div = divisor(token)
    close = _scale(ohlc["close"], div)
    last = _scale(last_price, div)
    # Bytes 24-28 carry the absolute price change as an int32; the Python client ignores them.
    head = (
        token, last, _scale(ohlc["high"], div), _scale(ohlc["low"], div),
        _scale(ohlc["open"], div), close, (last - close) & _U32_MASK,
    )
    if exchange_timestamp is None:
        return _INDEX_QUOTE.pack(*head)
    return _INDEX_FULL.pack(*head, exchange_timestamp)


def _quote_fields(
    token: int,
    div: float,
    last_price: float,
    last_traded_quantity: int,
    average_traded_price: float,
    volume_traded: int,
    total_buy_quantity: int,
    total_sell_quantity: int,
    ohlc: Mapping[str, float],
) -> tuple[int, ...]:
    return (
        token, _scale(last_price, div), last_traded_quantity,
        _scale(average_traded_price, div), volume_traded, total_buy_quantity,
        total_sell_quantity, _scale(ohlc["open"], div), _scale(ohlc["high"], div),
        _scale(ohlc["low"], div), _scale(ohlc["close"], div),
    )


def encode_quote(
    token: int,
    *,
    last_price: float,
    last_traded_quantity: int,
    average_traded_price: float,
    volume_traded: int,
    total_buy_quantity: int,
    total_sell_quantity: int,
    ohlc: Mapping[str, float],
) -> bytes:
    """Encode a 44-byte quote packet for a tradable instrument."""
    return _QUOTE.pack(*_quote_fields(
        token, divisor(token), last_price, last_traded_quantity, average_traded_price,
        volume_traded, total_buy_quantity, total_sell_quantity, ohlc,
    ))


def _depth_fields(depth: Mapping[str, Sequence[Mapping[str, float]]], div: float) -> list[int]:
    fields: list[int] = []
    for side in ("buy", "sell"):
        levels = depth.get(side, ())
        if len(levels) > _DEPTH_LEVELS:
            raise ValueError(f"depth.{side} has {len(levels)} levels; a packet holds 5")
        for level in levels:
            fields += (int(level["quantity"]), _scale(level["price"], div), int(level["orders"]))
        fields += (0, 0, 0) * (_DEPTH_LEVELS - len(levels))
    return fields


def encode_full(
    token: int,
    *,
    last_price: float,
    last_traded_quantity: int,
    average_traded_price: float,
    volume_traded: int,
    total_buy_quantity: int,
    total_sell_quantity: int,
    ohlc: Mapping[str, float],
    last_trade_time: int,
    oi: int,
    oi_day_high: int,
    oi_day_low: int,
    exchange_timestamp: int,
    depth: Mapping[str, Sequence[Mapping[str, float]]],
) -> bytes:
    """Encode a 184-byte full packet; `depth` holds up to 5 `buy` and 5 `sell` levels."""
    div = divisor(token)
    head = _quote_fields(
        token, div, last_price, last_traded_quantity, average_traded_price,
        volume_traded, total_buy_quantity, total_sell_quantity, ohlc,
    )
    return _FULL.pack(
        *head, last_trade_time, oi, oi_day_high, oi_day_low, exchange_timestamp,
        *_depth_fields(depth, div),
    )


def encode_frame(packets: Sequence[bytes]) -> bytes:
    """Wrap packets in one binary message: uint16 count, then uint16 length + bytes for each."""
    parts = [_COUNT.pack(len(packets))]
    for packet in packets:
        parts.append(_COUNT.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


def _memoized(to_datetime: ToDatetime) -> ToDatetime:
    """Wrap `to_datetime` for one frame: consecutive packets usually share their timestamps."""
    last_epoch = -1
    last_value: Any = None

    def convert(epoch: int) -> Any:
        nonlocal last_epoch, last_value
        if epoch != last_epoch:
            try:
                last_value = to_datetime(epoch)
            except Exception:  # noqa: BLE001 - the official client maps any failure to None
                last_value = None
            last_epoch = epoch
        return last_value

    return convert


def _decode_full(data: bytes, start: int, convert: ToDatetime) -> dict[str, Any]:
    # Indexing one tuple beats star-unpacking here: no extra list per packet for the GC.
    v = _FULL.unpack_from(data, start)
    token = v[0]
    segment = token & 0xFF
    div = SEGMENT_DIVISORS.get(segment, _DEFAULT_DIVISOR)
    last_price = v[1] / div
    close = v[10] / div
    return {
        "tradable": segment != INDEX_SEGMENT,
        "mode": "full",
        "instrument_token": token,
        "last_price": last_price,
        "last_traded_quantity": v[2],
        "average_traded_price": v[3] / div,
        "volume_traded": v[4],
        "total_buy_quantity": v[5],
        "total_sell_quantity": v[6],
        "ohlc": {"open": v[7] / div, "high": v[8] / div, "low": v[9] / div, "close": close},
        "change": (last_price - close) * 100 / close if close != 0 else 0,
        "last_trade_time": convert(v[11]),
        "oi": v[12],
        "oi_day_high": v[13],
        "oi_day_low": v[14],
        "exchange_timestamp": convert(v[15]),
        "depth": _depth(v, div),
    }


def _depth(v: tuple[int, ...], div: float) -> dict[str, list[dict[str, Any]]]:
    # Unrolled on purpose: this is the hot path of full-mode decoding.
    return {
        "buy": [
            {"quantity": v[16], "price": v[17] / div, "orders": v[18]},
            {"quantity": v[19], "price": v[20] / div, "orders": v[21]},
            {"quantity": v[22], "price": v[23] / div, "orders": v[24]},
            {"quantity": v[25], "price": v[26] / div, "orders": v[27]},
            {"quantity": v[28], "price": v[29] / div, "orders": v[30]},
        ],
        "sell": [
            {"quantity": v[31], "price": v[32] / div, "orders": v[33]},
            {"quantity": v[34], "price": v[35] / div, "orders": v[36]},
            {"quantity": v[37], "price": v[38] / div, "orders": v[39]},
            {"quantity": v[40], "price": v[41] / div, "orders": v[42]},
            {"quantity": v[43], "price": v[44] / div, "orders": v[45]},
        ],
    }


def _decode_quote(data: bytes, start: int, convert: ToDatetime) -> dict[str, Any]:
    (token, last, ltq, atp, volume, buy_qty, sell_qty, open_, high, low, close_raw,
     ) = _QUOTE.unpack_from(data, start)
    segment = token & 0xFF
    div = SEGMENT_DIVISORS.get(segment, _DEFAULT_DIVISOR)
    last_price = last / div
    close = close_raw / div
    return {
        "tradable": segment != INDEX_SEGMENT,
        "mode": "quote",
        "instrument_token": token,
        "last_price": last_price,
        "last_traded_quantity": ltq,
        "average_traded_price": atp / div,
        "volume_traded": volume,
        "total_buy_quantity": buy_qty,
        "total_sell_quantity": sell_qty,
        "ohlc": {"open": open_ / div, "high": high / div, "low": low / div, "close": close},
        "change": (last_price - close) * 100 / close if close != 0 else 0,
    }


def _decode_index(data: bytes, start: int, convert: ToDatetime, full: bool) -> dict[str, Any]:
    token, last, high, low, open_, close_raw, _, ets = (
        _INDEX_FULL.unpack_from(data, start) if full
        else (*_INDEX_QUOTE.unpack_from(data, start), 0)
    )
    segment = token & 0xFF
    div = SEGMENT_DIVISORS.get(segment, _DEFAULT_DIVISOR)
    last_price = last / div
    close = close_raw / div
    tick = {
        "tradable": segment != INDEX_SEGMENT,
        "mode": "full" if full else "quote",
        "instrument_token": token,
        "last_price": last_price,
        "ohlc": {"high": high / div, "low": low / div, "open": open_ / div, "close": close},
        "change": (last_price - close) * 100 / close if close != 0 else 0,
    }
    if full:
        tick["exchange_timestamp"] = convert(ets)
    return tick


def _decode_ltp(data: bytes, start: int, convert: ToDatetime) -> dict[str, Any]:
    token, last = _LTP.unpack_from(data, start)
    segment = token & 0xFF
    return {
        "tradable": segment != INDEX_SEGMENT,
        "mode": "ltp",
        "instrument_token": token,
        "last_price": last / SEGMENT_DIVISORS.get(segment, _DEFAULT_DIVISOR),
    }


_Decoder = Callable[[bytes, int, ToDatetime], dict[str, Any]]
# The official client tells packet kinds apart by length alone.
_DECODERS: dict[int, _Decoder] = {
    184: _decode_full,
    44: _decode_quote,
    8: _decode_ltp,
    32: partial(_decode_index, full=True),
    28: partial(_decode_index, full=False),
}


def decode_frame(
    data: bytes, *, to_datetime: ToDatetime = datetime.fromtimestamp
) -> list[dict[str, Any]]:
    """Decode one binary message into tick dicts identical to `KiteTicker._parse_binary`'s.

    `to_datetime` converts the epoch seconds of `last_trade_time` and `exchange_timestamp`; the
    default gives the official client's naive local datetimes, and a failing conversion gives
    None. Packets of unknown length are skipped and messages under 2 bytes (heartbeats) give
    `[]`. Like the official parser, it raises `struct.error` for a header that promises more
    packets than the message holds and for a packet shorter than 4 bytes.
    """
    size = len(data)
    if size < 2:
        return []
    convert = _memoized(to_datetime)
    ticks: list[dict[str, Any]] = []
    pos = 2
    for _ in range(_COUNT.unpack_from(data, 0)[0]):
        (length,) = _COUNT.unpack_from(data, pos)
        start = pos + 2
        pos = start + length
        if pos > size:  # measure a truncated packet as the official slice would
            length = max(size - start, 0)
        decoder = _DECODERS.get(length)
        if decoder is not None:
            ticks.append(decoder(data, start, convert))
        elif length < 4:  # the official parser reads the token before it looks at the length
            raise struct.error(f"packet of {length} bytes has no instrument token")
    return ticks


def frame_tokens(frame: bytes) -> list[int]:
    """The instrument tokens of a frame's packets, without decoding them (a truncated frame
    yields the tokens of its whole packets)."""
    tokens: list[int] = []
    if len(frame) < 2:
        return tokens
    count, pos, end = int.from_bytes(frame[0:2], "big"), 2, len(frame)
    for _ in range(count):
        if pos + 6 > end:
            break
        length = int.from_bytes(frame[pos:pos + 2], "big")
        if length < 4 or pos + 2 + length > end:
            break
        tokens.append(int.from_bytes(frame[pos + 2:pos + 6], "big"))
        pos += 2 + length
    return tokens
