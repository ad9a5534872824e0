"""The holder's SQL: read desired state, record what a plan made true, gaps, tick times.

Row updates and their outbox events are written in one statement, so an event exists if and only
if the change it reports was committed. Every write is fenced: it takes effect only while the
writer's epoch is the lease's (db/lease.py), so a holder that lost its lease writes nothing.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, text

from ticker_worker.core import outcomes
from ticker_worker.core.reconcile import PASS_LIMIT, Desired, Plan
from ticker_worker.db import instruments
from ticker_worker.db.lease import FENCE, Fenced

# Why an instrument can no longer stream: the daily rollover (expiry by the IST calendar) and
# `instruments sync` (a contract that left the dump) are both seen by the next full pass.
_EXPIRED = """CASE WHEN NOT i.listed THEN 'no longer listed in Kite''s instrument dump'
     WHEN i.expiry < (now() AT TIME ZONE 'Asia/Kolkata')::date
     THEN 'contract expired on ' || i.expiry END AS expired"""

_FULL = text(f"""
SELECT s.instrument_token, s.mode, s.wanted, s.status, s.account, s.connection, s.generation,
       s.generation <> s.observed_generation AS dirty, s.transitions,
       {_EXPIRED}
FROM subscriptions s JOIN instruments i USING (instrument_token)
WHERE s.wanted OR s.generation <> s.observed_generation
""")

# A nudge's pass reads the instruments' event metadata with the rows: one round trip. The
# lateral join keeps it to index lookups (a hash join would scan all ~100k instruments).
_DIRTY = """
SELECT s.instrument_token, s.mode, s.wanted, s.status, s.account, s.connection, s.generation,
       s.transitions, """ + _EXPIRED + """,
       i.tradingsymbol, i.exchange, i.segment, i.instrument_type, i.name, i.expiry, i.strike,
       i.lot_size, i.tick_size
FROM subscriptions s CROSS JOIN LATERAL (
    SELECT * FROM instruments WHERE instruments.instrument_token = s.instrument_token) i
WHERE s.generation <> s.observed_generation {named}
"""
# A bulk change is taken in slices, so one pass never holds 27,000 events in memory at once.
_DIRTY_ALL = text(_DIRTY.format(named="ORDER BY s.instrument_token LIMIT :limit"))
_DIRTY_NAMED = text(_DIRTY.format(named="AND s.instrument_token = ANY(CAST(:tokens AS bigint[]))"))

Metadata = dict[int, dict[str, Any]]


def read_desired(
    conn: Connection, full: bool, tokens: set[int] | None = None
) -> tuple[list[Desired], Metadata]:
    """Every wanted and dirty row (full); else the dirty rows (only those of `tokens` when
    given, read by primary key), with their event metadata."""
    # Modes interned: each placed instrument keeps its mode as long as it streams, and the
    # driver hands every row a fresh copy of the string.
    if full:
        return [Desired(r[0], sys.intern(r[1]), *r[2:]) for r in conn.execute(_FULL)], {}
    desired, meta = [], {}
    rows = conn.execute(_DIRTY_NAMED, {"tokens": list(tokens)}) if tokens else \
        conn.execute(_DIRTY_ALL, {"limit": PASS_LIMIT})
    for r in rows:
        desired.append(Desired(r[0], sys.intern(r[1]), r[2], r[3], r[4], r[5], r[6], True,
                               r[7], r[8]))
        meta[r.instrument_token] = instruments.metadata_of(r)
    return desired, meta


# Each outcome is one data-modifying CTE; `record` joins the non-empty ones and the outbox
# insert into a single statement, so a pass costs one round trip and commits atomically.
_ACTIVATE = """
UPDATE subscriptions s SET status = 'active', account = v.account, connection = v.conn,
    transitions = s.transitions + CASE WHEN s.status = 'active' THEN 0 ELSE 1 END,
    reason = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    activated_at = CASE WHEN s.status = 'active' THEN s.activated_at ELSE now() END,
    first_tick_at = CASE WHEN s.status = 'active' THEN s.first_tick_at END,
    updated_at = now()
FROM unnest(CAST(:a_tokens AS bigint[]), CAST(:a_accounts AS text[]), CAST(:a_conns AS int[]),
            CAST(:a_gens AS bigint[])) AS v(token, account, conn, gen)
WHERE s.instrument_token = v.token AND EXISTS (SELECT 1 FROM lease)
"""

_QUEUE = """
UPDATE subscriptions s SET status = 'queued', reason = v.reason, account = NULL,
    transitions = s.transitions + CASE WHEN s.status = 'queued' THEN 0 ELSE 1 END,
    connection = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:q_tokens AS bigint[]), CAST(:q_reasons AS text[]), CAST(:q_gens AS bigint[]))
    AS v(token, reason, gen)
WHERE s.instrument_token = v.token AND EXISTS (SELECT 1 FROM lease)
"""

_FAIL = """
UPDATE subscriptions s SET status = 'failed', reason = v.reason, account = NULL,
    connection = NULL, observed_generation = GREATEST(s.observed_generation, v.gen),
    transitions = s.transitions + CASE WHEN s.status = 'failed' THEN 0 ELSE 1 END,
    updated_at = now()
FROM unnest(CAST(:f_tokens AS bigint[]), CAST(:f_reasons AS text[]), CAST(:f_gens AS bigint[]))
    AS v(token, reason, gen)
WHERE s.instrument_token = v.token AND EXISTS (SELECT 1 FROM lease)
"""

_REMOVE = """
UPDATE subscriptions s SET status = 'removed', account = NULL, connection = NULL,
    transitions = s.transitions + CASE WHEN s.status IN ('active', 'queued') THEN 1 ELSE 0 END,
    reason = NULL, removed_at = now(), observed_generation = GREATEST(s.observed_generation, v.gen),
    updated_at = now()
FROM unnest(CAST(:r_tokens AS bigint[]), CAST(:r_gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token AND EXISTS (SELECT 1 FROM lease)
"""

_SETTLE = """
UPDATE subscriptions s SET observed_generation = GREATEST(s.observed_generation, v.gen)
FROM unnest(CAST(:s_tokens AS bigint[]), CAST(:s_gens AS bigint[])) AS v(token, gen)
WHERE s.instrument_token = v.token AND EXISTS (SELECT 1 FROM lease)
"""

# A transition already in the outbox (a retry after a commit whose answer was lost) is kept
# once: its id is derived from the transition, so the retry's row is the same event.
_OUTBOX = """
INSERT INTO outbox (event_id, event_type, payload)
SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[]), CAST(:payloads AS jsonb[]))
WHERE EXISTS (SELECT 1 FROM lease)
ON CONFLICT (event_id) DO NOTHING
"""


def _events(conn: Connection, plan: Plan, known: Metadata) -> list[dict[str, Any]]:
    tokens = outcomes.needs_metadata(plan)
    if not tokens:
        return []
    missing = [t for t in tokens if t not in known]
    meta = {**known, **instruments.metadata(conn, missing)} if missing else known
    return outcomes.events(plan, meta, datetime.now(UTC))


def _outcomes(plan: Plan) -> tuple[list[str], dict[str, Any]]:
    parts: list[str] = []
    params: dict[str, Any] = {}
    if plan.activated:
        parts.append(_ACTIVATE)
        params.update(a_tokens=[d.token for d, _ in plan.activated],
                      a_accounts=[s[0] for _, s in plan.activated],
                      a_conns=[s[1] for _, s in plan.activated],
                      a_gens=[d.generation for d, _ in plan.activated])
    if plan.queued:
        parts.append(_QUEUE)
        params.update(q_tokens=[d.token for d, _ in plan.queued],
                      q_reasons=[r for _, r in plan.queued],
                      q_gens=[d.generation for d, _ in plan.queued])
    if plan.failed:
        parts.append(_FAIL)
        params.update(f_tokens=[d.token for d, _ in plan.failed],
                      f_reasons=[r for _, r in plan.failed],
                      f_gens=[d.generation for d, _ in plan.failed])
    if plan.removed:
        parts.append(_REMOVE)
        params.update(r_tokens=[d.token for d in plan.removed],
                      r_gens=[d.generation for d in plan.removed])
    if plan.settled:
        parts.append(_SETTLE)
        params.update(s_tokens=[d.token for d in plan.settled],
                      s_gens=[d.generation for d in plan.settled])
    return parts, params


def record(conn: Connection, plan: Plan, epoch: int,
           known: Metadata | None = None) -> list[dict[str, Any]]:
    """Write the plan's outcome and its events in one statement; return the events.

    One statement is atomic on its own, so `conn` may be in autocommit mode. Raises Fenced (and
    writes nothing) when `epoch` is no longer the lease's.
    """
    events = _events(conn, plan, known or {})
    parts, params = _outcomes(plan)
    if not parts and not events:
        return events
    if events:
        parts.append(_OUTBOX)
        params.update(_outbox_params(events))
    ctes = ", ".join(f"o{i} AS ({sql})" for i, sql in enumerate(parts))
    params["epoch"] = epoch
    fenced = conn.execute(text(f"WITH {FENCE}, {ctes} SELECT EXISTS (SELECT 1 FROM lease)"),
                          params).scalar_one()
    if not fenced:
        raise Fenced(epoch)
    return events


def _outbox_params(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {"ids": [uuid.UUID(e["event_id"]) for e in events],
            "types": [e["event_type"] for e in events],
            "payloads": [orjson.dumps(e).decode() for e in events]}


def record_events(conn: Connection, events: Sequence[dict[str, Any]], epoch: int) -> None:
    """Put events that change no row (stream gaps) into the outbox, fenced by `epoch`."""
    if not events:
        return
    params = {**_outbox_params(events), "epoch": epoch}
    ok = conn.execute(text(f"WITH {FENCE}, o AS ({_OUTBOX}) SELECT EXISTS (SELECT 1 FROM lease)"),
                      params).scalar_one()
    if not ok:
        raise Fenced(epoch)


_RESUMED = text("""
SELECT instrument_token, mode, generation, account, connection,
       COALESCE(last_tick_at, activated_at, now()) AS since
FROM subscriptions WHERE wanted AND status = 'active'
""")


def streaming_since(conn: Connection) -> list[Any]:
    """Active rows with the time of their last recorded tick: a holder that starts or takes over
    owes each a `stream_gap` from that time to its first tick through this holder."""
    return list(conn.execute(_RESUMED))


_TICKS = text(f"""
WITH {FENCE}
UPDATE subscriptions s
SET first_tick_at = COALESCE(s.first_tick_at, v.ts),
    last_tick_at = GREATEST(s.last_tick_at, v.ts)
FROM unnest(CAST(:tokens AS bigint[]), CAST(:ts AS timestamptz[])) AS v(token, ts)
WHERE s.instrument_token = v.token AND s.status = 'active' AND EXISTS (SELECT 1 FROM lease)
""")


def record_ticks(conn: Connection, seen: dict[int, float], epoch: int) -> None:
    """Store first/last tick times for many tokens in one statement (fenced by `epoch`)."""
    if seen:
        conn.execute(_TICKS, {
            "tokens": list(seen), "epoch": epoch,
            "ts": [datetime.fromtimestamp(t, UTC) for t in seen.values()]})


# Events younger than a few seconds are most likely still on their fast path (published,
# their backfill being enqueued): leave them to it rather than publish them twice.
_UNPUBLISHED = text("""
SELECT payload FROM outbox
WHERE published_at IS NULL AND created_at < now() - make_interval(secs => :min_age)
ORDER BY seq LIMIT :limit
FOR UPDATE SKIP LOCKED
""")


def unpublished(
    conn: Connection, limit: int = 500, min_age: float = 5.0
) -> list[dict[str, Any]]:
    """Events still to deliver (older than `min_age` s), oldest first, locked against others."""
    return [row[0] for row in conn.execute(_UNPUBLISHED, {"limit": limit, "min_age": min_age})]


def mark_published(conn: Connection, event_ids: Sequence[str]) -> None:
    """Record delivery of these events."""
    if event_ids:
        conn.execute(
            text("UPDATE outbox SET published_at = now() "
                 "WHERE event_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [uuid.UUID(e) for e in event_ids]})


def outbox_backlog(conn: Connection) -> int:
    """How many events wait for delivery."""
    return int(conn.execute(
        text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one())


def status_counts(conn: Connection) -> dict[str, int]:
    """Subscriptions by status."""
    rows = conn.execute(text("SELECT status, count(*) FROM subscriptions GROUP BY status"))
    return {r[0]: int(r[1]) for r in rows}


_UNHEALTHY = text(f"""
WITH {FENCE}
UPDATE accounts SET healthy = false, unhealthy_reason = :reason
WHERE name = :name AND EXISTS (SELECT 1 FROM lease)
""")


def mark_unhealthy(conn: Connection, name: str, reason: str, epoch: int) -> None:
    """Record that Kite refused the account's token (fenced by `epoch`)."""
    conn.execute(_UNHEALTHY, {"name": name, "reason": reason, "epoch": epoch})


def stats(conn: Connection, with_registry: bool) -> tuple[dict[str, int], int, int | None]:
    """Subscriptions by status, the outbox backlog, and the registry's size when asked."""
    return (status_counts(conn), outbox_backlog(conn),
            instruments.count(conn) if with_registry else None)
