"""Subscription desired state in Postgres: bulk upserts for the command tasks.

Every write bumps `generation` only when something really changes, so a repeated or
redelivered command is a no-op (`changed: false`) and does not wake the holder for nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from ticker_worker.keys import DIRTY_PASS, MAX_NUDGE_TOKENS, NUDGE_CHANNEL


@dataclass(frozen=True)
class Outcome:
    """The state of one subscription after a command."""

    instrument_token: int
    mode: str | None
    status: str
    changed: bool

    def as_dict(self) -> dict[str, object]:
        """The task result shape of DESIGN 4.1."""
        return {
            "instrument_token": self.instrument_token,
            "mode": self.mode,
            "status": self.status,
            "changed": self.changed,
        }


# The nudge rides in the same statement: an uncorrelated subquery in the select list runs once,
# and only when at least one row changed. NOTIFY is delivered on commit, never on rollback.
_UPSERT = text("""
WITH changed AS (
INSERT INTO subscriptions AS s (instrument_token, mode, wanted, status)
SELECT t, :mode, true, 'pending' FROM unnest(CAST(:tokens AS bigint[])) AS t
ON CONFLICT (instrument_token) DO UPDATE
SET mode = EXCLUDED.mode,
    wanted = true,
    generation = s.generation + 1,
    status = CASE WHEN s.status IN ('removed', 'failed') THEN 'pending' ELSE s.status END,
    reason = CASE WHEN s.status IN ('removed', 'failed') THEN NULL ELSE s.reason END,
    requested_at = CASE WHEN s.wanted THEN s.requested_at ELSE now() END,
    updated_at = now()
WHERE NOT s.wanted OR s.mode <> EXCLUDED.mode OR s.status = 'failed'
RETURNING instrument_token, mode, status)
SELECT instrument_token, mode, status, (SELECT pg_notify(:channel, :payload)) AS nudged FROM changed
""")

_UNSUBSCRIBE = text("""
WITH changed AS (
UPDATE subscriptions SET wanted = false, generation = generation + 1, updated_at = now()
WHERE instrument_token = :token AND wanted
RETURNING instrument_token, mode, status)
SELECT instrument_token, mode, status, (SELECT pg_notify(:channel, :payload)) AS nudged FROM changed
""")

_SET_MODE = text("""
WITH changed AS (
UPDATE subscriptions SET mode = :mode, generation = generation + 1, updated_at = now()
WHERE instrument_token = :token AND wanted AND mode <> :mode
RETURNING instrument_token, mode, status)
SELECT instrument_token, mode, status, (SELECT pg_notify(:channel, :payload)) AS nudged FROM changed
""")

_CURRENT = text("""
SELECT instrument_token, mode, status, wanted FROM subscriptions
WHERE instrument_token = ANY(CAST(:tokens AS bigint[]))
""")


def nudge_payload(tokens: Sequence[int]) -> str:
    """Name the changed tokens when they are few, so the holder reads them by primary key."""
    if len(tokens) > MAX_NUDGE_TOKENS:
        return DIRTY_PASS
    return ",".join(str(t) for t in tokens)


def current(conn: Connection, tokens: Sequence[int]) -> dict[int, tuple[str, str, bool]]:
    """token -> (mode, status, wanted) for the rows that exist."""
    rows = conn.execute(_CURRENT, {"tokens": list(tokens)}).all()
    return {r.instrument_token: (r.mode, r.status, r.wanted) for r in rows}


def upsert_wanted(
    conn: Connection, tokens: Sequence[int], mode: str
) -> dict[int, tuple[str, str]]:
    """Mark `tokens` wanted in `mode` in one statement; return token -> (mode, status) of the
    rows that changed."""
    if not tokens:
        return {}
    rows = conn.execute(_UPSERT, {"tokens": list(tokens), "mode": mode,
                                  "channel": NUDGE_CHANNEL, "payload": nudge_payload(tokens)})
    return {r.instrument_token: (r.mode, r.status) for r in rows}


def unwant(conn: Connection, token: int) -> tuple[str, str] | None:
    """Mark `token` no longer wanted (and nudge); its (mode, status) if anything changed."""
    row = conn.execute(_UNSUBSCRIBE, {"token": token, "channel": NUDGE_CHANNEL,
                                      "payload": str(token)}).first()
    return (row.mode, row.status) if row else None


def change_mode(conn: Connection, token: int, mode: str) -> tuple[str, str] | None:
    """Change a wanted subscription's mode (and nudge); its (mode, status) if it changed."""
    row = conn.execute(
        _SET_MODE, {"token": token, "mode": mode, "channel": NUDGE_CHANNEL,
                    "payload": str(token)}).first()
    return (row.mode, row.status) if row else None


def wanted_modes(conn: Connection) -> dict[int, str]:
    """Every wanted instrument with its mode, placed or not."""
    rows = conn.execute(text("SELECT instrument_token, mode FROM subscriptions WHERE wanted"))
    return {r.instrument_token: r.mode for r in rows}
