"""Every Redis key and channel name, in one place (DESIGN 4.3). All carry the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass

# Postgres NOTIFY channel the command tasks use to nudge the holder. NOTIFY inside the
# transaction is delivered only on commit, so a rolled-back change never nudges.
NUDGE_CHANNEL = "ticker_worker_nudge"
# Nudge payloads: the changed tokens, comma-separated, when there are few (the holder then
# reads just those rows by primary key); DIRTY_PASS when there are many (it reads every
# changed row); FULL_PASS when accounts changed (it re-reads accounts and every row).
FULL_PASS = "full"
DIRTY_PASS = "*"
LEASE_FREED = "lease"  # a holder let its lease go (SIGTERM): a standby may take it now
MAX_NUDGE_TOKENS = 100

EVENTS_STREAM_MAXLEN = 100_000
# A finished backfill task's marker outlives any redelivery (visibility timeout, retries);
# the lock only has to outlive one run, and frees a crashed worker's task soon after.
BACKFILL_DONE_TTL = 7 * 24 * 3600
BACKFILL_LOCK_TTL = 600


@dataclass(frozen=True)
class RedisKeys:
    """The names derived from `TICKER_REDIS_PREFIX`."""

    prefix: str

    @property
    def events(self) -> str:
        """Pub/sub channel: one JSON event per message."""
        return f"{self.prefix}:events"

    @property
    def events_stream(self) -> str:
        """Stream of the same events, field `event`, trimmed to ~100k entries."""
        return f"{self.prefix}:events:stream"

    @property
    def ticks(self) -> str:
        """Pub/sub channel: a JSON array of ticks per message, one Kite frame's worth."""
        return f"{self.prefix}:ticks"

    @property
    def holder_state(self) -> str:
        """The holder's state snapshot (JSON), with a TTL so a dead holder reads as absent."""
        return f"{self.prefix}:holder:state"

    def backfill_done(self, task_id: str) -> str:
        """A finished backfill task's result (JSON), so a redelivery does not call Kite again."""
        return f"{self.prefix}:backfill:done:{task_id}"

    def backfill_lock(self, task_id: str) -> str:
        """Held while a backfill task runs, so a concurrent duplicate waits and retries."""
        return f"{self.prefix}:backfill:lock:{task_id}"

    def holder_alive(self, holder_id: str) -> str:
        """One holder's presence (value: its role), with a TTL of one lease; `*` matches all."""
        return f"{self.prefix}:holder:alive:{holder_id}"

    def historical_bucket(self, api_key_hash: str) -> str:
        """Shared rate-limit bucket for one account's historical API calls."""
        return f"{self.prefix}:ratelimit:historical:{api_key_hash}"
