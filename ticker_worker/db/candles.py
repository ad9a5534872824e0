"""Candles in Postgres: the bulk, idempotent upsert and where a backfill left off.

Rows arrive in the official client's shape (`date` tz-aware, open, high, low, close, volume[,
oi]). One statement stores a whole chunk: each column travels as one array literal, and
`unnest` turns them back into rows on the server.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, text

CHUNK_ROWS = 10_000
_PRICES = ("open", "high", "low", "close")

# Unchanged rows are left alone (the WHERE on the update), so a repeated backfill writes no new
# row versions: idempotent in effect, and no table bloat from re-runs.
_UPSERT = text("""
INSERT INTO candles (instrument_token, interval, ts, open, high, low, close, volume, oi)
SELECT :instrument_token, :interval, u.* FROM unnest(
    CAST(:ts AS timestamptz[]), CAST(:open AS float8[]), CAST(:high AS float8[]),
    CAST(:low AS float8[]), CAST(:close AS float8[]), CAST(:volume AS bigint[]),
    CAST(:oi AS bigint[])) AS u
ON CONFLICT (instrument_token, interval, ts) DO UPDATE SET
    open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume, oi = EXCLUDED.oi
WHERE (candles.open, candles.high, candles.low, candles.close, candles.volume, candles.oi)
    IS DISTINCT FROM
    (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close, EXCLUDED.volume, EXCLUDED.oi)
""")

_LAST_TS = text("""
SELECT max(ts) FROM candles WHERE instrument_token = :instrument_token AND interval = :interval
""")


def _array(values: Iterable[object]) -> str:
    # A Postgres array literal built with str(): several times faster than letting psycopg2
    # adapt a Python list item by item, which was the bottleneck of the upsert.
    return "{" + ",".join(map(str, values)) + "}"


def _params(chunk: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    dates = list(map(itemgetter("date"), chunk))
    # A naive datetime would be read in the session's time zone and shift silently.
    naive = next((d for d in dates if d.tzinfo is None), None)
    if naive is not None:
        raise ValueError(f"candle time {naive.isoformat()} has no UTC offset")
    params = {"ts": _array(map(datetime.isoformat, dates))}
    for name in _PRICES:
        params[name] = _array(map(float, map(itemgetter(name), chunk)))
    params["volume"] = _array(map(int, map(itemgetter("volume"), chunk)))
    params["oi"] = _array(["NULL" if c.get("oi") is None else int(c["oi"]) for c in chunk])
    return params


def _encoded_ahead(chunks: Sequence[Sequence[Mapping[str, Any]]]) -> Iterator[dict[str, str]]:
    """Each chunk's parameters, the next one encoded on a helper thread meanwhile.

    psycopg2 releases the GIL while the server works on one chunk, so encoding the next one
    overlaps it instead of adding to it (encoding is about a third of the cost).
    """
    if len(chunks) < 2:
        yield from map(_params, chunks)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="candle-encode") as pool:
        pending = pool.submit(_params, chunks[0])
        for following in chunks[1:]:
            ready = pending.result()
            pending = pool.submit(_params, following)
            yield ready
        yield pending.result()


def upsert(
    conn: Connection, instrument_token: int, interval: str,
    candles: Sequence[Mapping[str, Any]], chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Insert or update `candles` of one instrument and interval; return how many were given.

    One statement per `chunk_rows` rows. Running it again with the same rows changes nothing.
    """
    chunks = [candles[i:i + chunk_rows] for i in range(0, len(candles), chunk_rows)]
    for params in _encoded_ahead(chunks):
        conn.execute(_UPSERT, {"instrument_token": instrument_token, "interval": interval,
                               **params})
    return len(candles)


def last_ts(conn: Connection, instrument_token: int, interval: str) -> datetime | None:
    """The start time of the newest stored candle, or None when there is none."""
    value: datetime | None = conn.execute(
        _LAST_TS, {"instrument_token": instrument_token, "interval": interval}
    ).scalar_one()
    return value


def last_prices(conn: Connection, tokens: Sequence[int]) -> dict[int, float]:
    """The last real price known per token: the newest candle's close, else the dump's price."""
    rows = conn.execute(text("""
        SELECT i.instrument_token, coalesce(
            (SELECT c.close FROM candles c WHERE c.instrument_token = i.instrument_token
             ORDER BY c.ts DESC LIMIT 1), nullif(i.last_price, 0)) AS price
        FROM instruments i WHERE i.instrument_token = ANY(CAST(:tokens AS bigint[]))"""),
        {"tokens": list(tokens)})
    return {r.instrument_token: float(r.price) for r in rows if r.price is not None}
