"""The active holder's lease in Postgres, with a fencing epoch, and the registry of holders.

The lease is judged by the database's clock, never a holder's: a standby takes it once it has
expired, and each takeover increments the epoch. Every holder write carries its epoch and is
refused once the lease has moved on (`FENCE`), so a paused or cut-off holder writes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from ticker_worker.errors import Fenced
from ticker_worker.keys import LEASE_FREED, NUDGE_CHANNEL

__all__ = ["FENCE", "Fenced", "acquire", "forget", "holders", "release", "renew", "seen"]

LEASE = "holder"

# A CTE every fenced statement starts with. FOR SHARE makes a concurrent takeover wait for the
# statement (and a statement that starts after the takeover sees the new epoch).
FENCE = (f"lease AS (SELECT 1 FROM holder_lease WHERE name = '{LEASE}' "
         "AND epoch = CAST(:epoch AS bigint) FOR SHARE)")


_ACQUIRE = text(f"""
INSERT INTO holder_lease AS l (name, holder_id, epoch, expires_at)
VALUES ('{LEASE}', :id, 1, now() + make_interval(secs => :ttl))
ON CONFLICT (name) DO UPDATE
SET holder_id = :id, epoch = l.epoch + 1, expires_at = now() + make_interval(secs => :ttl),
    acquired_at = now()
WHERE l.expires_at < now()
RETURNING epoch
""")

_RENEW = text(f"""
UPDATE holder_lease SET expires_at = now() + make_interval(secs => :ttl)
WHERE name = '{LEASE}' AND holder_id = :id AND epoch = :epoch
RETURNING epoch
""")

# The NOTIFY (delivered on commit) wakes the standbys' nudge listeners: one takes over at once
# instead of at its next look.
_RELEASE = text(f"""
WITH freed AS (
    UPDATE holder_lease SET expires_at = now() - interval '1 millisecond'
    WHERE name = '{LEASE}' AND holder_id = :id AND epoch = :epoch RETURNING 1)
SELECT pg_notify('{NUDGE_CHANNEL}', '{LEASE_FREED}') FROM freed
""")

_SEEN = text("""
INSERT INTO holders AS h (id, host, pid, role, epoch) VALUES (:id, :host, :pid, :role, :epoch)
ON CONFLICT (id) DO UPDATE SET role = :role, epoch = :epoch, seen_at = now()
""")

_LIST = text("""
SELECT id, host, pid, role, epoch, EXTRACT(EPOCH FROM now() - seen_at) AS lease_age
FROM holders WHERE seen_at > now() - make_interval(secs => :within) ORDER BY started_at
""")


_HELD = text(f"SELECT expires_at >= now() FROM holder_lease WHERE name = '{LEASE}'")


def acquire(conn: Connection, holder_id: str, ttl: float) -> int | None:
    """Take the lease if it is free or expired; the new epoch, or None when another holds it.

    A plain read first: a standby looks five times a second, and the upsert would lock the lease
    row each time (and make the active holder's fenced writes wait for it)."""
    if conn.execute(_HELD).scalar():
        return None
    row = conn.execute(_ACQUIRE, {"id": holder_id, "ttl": ttl}).first()
    return int(row.epoch) if row else None


def renew(conn: Connection, holder_id: str, epoch: int, ttl: float) -> bool:
    """Extend our lease. Works even past expiry as long as nobody took it (nobody else wrote);
    False once another holder has (our epoch is stale)."""
    return conn.execute(_RENEW, {"id": holder_id, "epoch": epoch, "ttl": ttl}).first() is not None


def release(conn: Connection, holder_id: str, epoch: int) -> None:
    """Let the lease expire now (graceful hand-over): a standby takes it at its next look."""
    conn.execute(_RELEASE, {"id": holder_id, "epoch": epoch})


def seen(conn: Connection, holder_id: str, host: str, pid: int, role: str,
         epoch: int | None) -> None:
    """Record that this holder is alive, in `role`."""
    conn.execute(_SEEN, {"id": holder_id, "host": host, "pid": pid, "role": role, "epoch": epoch})


def forget(conn: Connection, holder_id: str) -> None:
    """Remove a holder that is stopping from the registry."""
    conn.execute(text("DELETE FROM holders WHERE id = :id"), {"id": holder_id})


def holders(conn: Connection, within: float = 10.0) -> list[dict[str, Any]]:
    """The holders seen in the last `within` seconds (for `status`)."""
    return [
        {"id": r.id, "host": r.host, "pid": r.pid, "role": r.role, "epoch": r.epoch,
         "lease_age": round(float(r.lease_age), 3)}
        for r in conn.execute(_LIST, {"within": within})
    ]
