"""The instrument registry: lookups for validation and event metadata, and the bulk sync."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, text

from ticker_worker.core.ist import IST
from ticker_worker.keys import FULL_PASS, NUDGE_CHANNEL

COLUMNS = (
    "instrument_token", "exchange_token", "tradingsymbol", "name", "last_price", "expiry",
    "strike", "tick_size", "lot_size", "instrument_type", "segment", "exchange",
)

_LOOKUP = text("""
SELECT instrument_token, tradingsymbol, exchange, listed, expiry FROM instruments
WHERE instrument_token = ANY(CAST(:tokens AS bigint[]))
""")


def today_ist() -> date:
    """Kite's trading day: contracts expire by the IST calendar."""
    return datetime.now(IST).date()


def count(conn: Connection) -> int:
    """How many instruments the registry holds."""
    return int(conn.execute(text("SELECT count(*) FROM instruments")).scalar_one())


def lookup(conn: Connection, tokens: Sequence[int]) -> dict[int, Any]:
    """token -> row (tradingsymbol, exchange, listed, expiry) for the known tokens."""
    return {r.instrument_token: r for r in conn.execute(_LOOKUP, {"tokens": list(tokens)})}


def metadata(conn: Connection, tokens: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Event metadata (DESIGN 4.3) for each known token."""
    rows = conn.execute(
        text("""SELECT instrument_token, tradingsymbol, exchange, segment, instrument_type, name,
                       expiry, strike, lot_size, tick_size
                FROM instruments WHERE instrument_token = ANY(CAST(:tokens AS bigint[]))"""),
        {"tokens": list(tokens)},
    )
    return {r.instrument_token: metadata_of(r) for r in rows}


def metadata_of(r: Any) -> dict[str, Any]:
    """The event metadata of one row that carries the instrument's columns."""
    return {
        "tradingsymbol": r.tradingsymbol, "exchange": r.exchange, "segment": r.segment,
        "instrument_type": r.instrument_type, "name": r.name,
        "expiry": r.expiry.isoformat() if r.expiry else None,
        "strike": r.strike, "lot_size": r.lot_size, "tick_size": r.tick_size,
    }


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_UPSERT = text(f"""
INSERT INTO instruments ({", ".join(COLUMNS)}, listed, synced_at)
SELECT *, true, now() FROM unnest(
    CAST(:instrument_token AS bigint[]), CAST(:exchange_token AS text[]),
    CAST(:tradingsymbol AS text[]), CAST(:name AS text[]), CAST(:last_price AS float8[]),
    CAST(:expiry AS date[]), CAST(:strike AS float8[]), CAST(:tick_size AS float8[]),
    CAST(:lot_size AS int[]), CAST(:instrument_type AS text[]), CAST(:segment AS text[]),
    CAST(:exchange AS text[]))
ON CONFLICT (instrument_token) DO UPDATE SET
{", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])}, listed = true, synced_at = now()
""")


def upsert_batch(conn: Connection, batch: Sequence[dict[str, Any]]) -> None:
    """Upsert one batch of dump rows with a single statement (column arrays + unnest)."""
    params: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for row in batch:
        for c in COLUMNS:
            value = row.get(c)
            if c == "expiry" and not isinstance(value, date):
                value = None
            elif c == "exchange_token":
                value = str(value)
            params[c].append(value)
    conn.execute(_UPSERT, params)


def sync(
    conn: Connection, rows: Iterable[dict[str, Any]], *, batch_size: int = 10_000,
    progress: Any = None,
) -> tuple[int, int]:
    """Upsert every dump row and mark tokens missing from the dump unlisted.

    Returns (rows upserted, rows newly unlisted). `progress(n)` is called after each batch.
    """
    started = conn.execute(text("SELECT now()")).scalar_one()
    total = 0
    for batch in _chunks(rows, batch_size):
        upsert_batch(conn, batch)
        total += len(batch)
        if progress is not None:
            progress(len(batch))
    unlisted = conn.execute(
        text("UPDATE instruments SET listed = false WHERE listed AND synced_at < :t"),
        {"t": started},
    ).rowcount
    # A full pass of the holder unsubscribes and fails what left the dump (or expired), now
    # rather than at its next timer.
    conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": NUDGE_CHANNEL, "p": FULL_PASS})
    return total, unlisted
