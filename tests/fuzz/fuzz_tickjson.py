"""Coverage-guided fuzz target (atheris) for the C tick encoder, `ticker_worker.kite._tickjson`.

Each input becomes a frame, either as raw bytes or shaped from the input: a packet count
that may be absurd, packets of Kite's lengths or of any length, a frame cut short anywhere.
The C encoder must not crash (run this under AddressSanitizer: tests/fuzz/test_fuzz_tickjson.py
builds a sanitized copy), must answer None for a frame it calls malformed, and otherwise
must produce exactly the ticks of the official client's parser; its `frame_slices` must call
the same frames malformed and cut the others into the right number of slices.

Run: `python tests/fuzz/fuzz_tickjson.py [libFuzzer flags, e.g. -runs=100000]`.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import sys
import sysconfig
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import atheris
import orjson
from kiteconnect import KiteTicker

# Only the official parser's branches are traced on the Python side (instrumenting whole
# imports costs minutes of start-up); the C encoder's own comparisons come from its build.
KiteTicker._parse_binary = atheris.instrument_func(KiteTicker._parse_binary)


def load_encoder() -> Any:
    """The extension at $TICKJSON_SO (an instrumented or sanitized build), else the installed one."""
    path = os.environ.get("TICKJSON_SO")
    if not path:
        from ticker_worker.kite import _tickjson

        return _tickjson
    spec = importlib.util.spec_from_file_location("_tickjson", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_tickjson: Any = None  # loaded once libFuzzer's hooks are there

IST = timezone(timedelta(hours=5, minutes=30))
KITE_LENGTHS = (8, 28, 32, 44, 184)
PARSER = KiteTicker("k", "t")


def frame_from(data: bytes) -> bytes:
    """Turn fuzzer bytes into a frame: raw, or shaped like Kite's (possibly lying)."""
    fdp = atheris.FuzzedDataProvider(data)
    if fdp.ConsumeBool():
        return fdp.ConsumeBytes(fdp.remaining_bytes())
    count = fdp.ConsumeIntInRange(0, 0xFFFF)
    packets = []
    for _ in range(fdp.ConsumeIntInRange(0, 12)):
        if fdp.ConsumeBool():
            length = KITE_LENGTHS[fdp.ConsumeIntInRange(0, len(KITE_LENGTHS) - 1)]
        else:
            length = fdp.ConsumeIntInRange(0, 0xFFFF)
        body = fdp.ConsumeBytes(min(length, 184))
        packets.append(struct.pack(">H", length) + body.ljust(min(length, 184), b"\x00"))
    frame = struct.pack(">H", count) + b"".join(packets)
    cut = fdp.ConsumeIntInRange(0, len(frame))
    return frame[:cut] if fdp.ConsumeBool() else frame


def official(frame: bytes) -> list[dict[str, Any]]:
    ticks = PARSER._parse_binary(frame)
    for tick in ticks:
        for key in ("last_trade_time", "exchange_timestamp"):
            if isinstance(tick.get(key), datetime):
                tick[key] = tick[key].astimezone(IST).isoformat()
    return list(ticks)


def check_frame(frame: bytes, release_gil: bool = True) -> None:
    """The encoder's contract for one frame (an AssertionError or a sanitizer report if not)."""
    result = _tickjson.frame_to_json(frame, True, release_gil)
    per = 1 + len(frame) % 5
    bounds = _tickjson.frame_slices(frame, per)  # the holder's slicing walks the same frame
    assert (bounds is None) == (result is None), frame.hex()
    if result is None:
        return  # malformed: the holder's Python path decides (and counts it)
    count = struct.unpack_from(">H", frame)[0]
    assert len(bounds) == 1 + -(-count // per) and bounds[0] == 2 and bounds[-1] <= len(frame)
    body, tokens = result
    ticks = orjson.loads(body)
    assert tokens == [t["instrument_token"] for t in ticks]
    expected = official(frame)
    for tick in expected:
        tick["is_mock"] = True
    assert ticks == expected, (frame.hex(), ticks, expected)


def edge_frames() -> list[bytes]:
    """Frames written by hand, checked before fuzzing: lies about counts and lengths."""
    full = struct.pack(">H", 184) + bytes(range(184))
    ltp = struct.pack(">HII", 8, 408065, 123456)
    return [
        b"", b"\x00", b"\xff", b"\xff\xff", b"\x00\x00",
        b"\xff\xff" + ltp,                             # claims 65535 packets, holds one
        b"\x00\x01" + full[:100],                       # a full packet cut short
        b"\x00\x02" + full + struct.pack(">H", 0xFFFF),  # second length points past the end
        b"\x00\x01\x00\x00", b"\x00\x01\x00\x03abc",  # packets too short for a token
        struct.pack(">H", 0xFFFF) + ltp * 0xFFFF,      # the most packets a frame can hold
        struct.pack(">H", 3) + ltp * 10,                 # fewer claimed than present
        struct.pack(">H", 1) + struct.pack(">H", 9) + bytes(9),  # unknown length: skipped
    ]


_edges_left = edge_frames()


def test_one_input(data: bytes) -> None:
    # The hand-written frames go first, once libFuzzer runs (cov_shim.c finds it only then).
    while _edges_left:
        check_frame(_edges_left.pop())
    check_frame(frame_from(data), release_gil=bool(data[:1]) and data[0] & 1 == 0)


def main() -> None:
    global _tickjson
    os.environ.setdefault("ATHERIS_CORE", str(Path(atheris.__file__).with_name(
        "core_with_libfuzzer" + sysconfig.get_config_var("EXT_SUFFIX"))))  # see cov_shim.c
    atheris.Setup(sys.argv, test_one_input)
    _tickjson = load_encoder()
    atheris.Fuzz()


if __name__ == "__main__":
    main()
