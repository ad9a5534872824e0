"""What a hot standby reads to stay warm: one cheap fingerprint of the recorded placement and
the accounts, so that it reads the placement itself only when something changed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

# Every change a standby must see moves one of these: a placement or status change sets
# `updated_at` (db/holder.py), a command bumps `generation`, an account change alters its row.
# Tick times (`last_tick_at`) move none of them: they change every second and matter only to
# the gaps, which the takeover reads fresh (core.resume).
_FINGERPRINT = text("""
SELECT count(*), max(updated_at), sum(generation),
       (SELECT md5(string_agg(a::text, ',' ORDER BY a.name)) FROM accounts a)
FROM subscriptions WHERE wanted AND status = 'active'
""")


def fingerprint(conn: Connection) -> tuple[Any, ...]:
    """A value that changes whenever the active rows' placement, mode or the accounts do."""
    return tuple(conn.execute(_FINGERPRINT).one())
