"""Backfill idempotency: one Celery task id calls Kite once, however often it is delivered."""

from __future__ import annotations

import orjson

from ticker_worker.bootstrap import Runtime
from ticker_worker.errors import BackfillInProgress
from ticker_worker.keys import BACKFILL_DONE_TTL, BACKFILL_LOCK_TTL


class Once:
    """Makes one Celery task id call Kite once: a done-marker with the result, and a lock.

    A redelivered task (acks_late after a lost worker, or a duplicate enqueue under the same
    id) finds the marker and returns the stored result; one arriving while the first still runs
    finds the lock and retries later.
    """

    def __init__(self, rt: Runtime, task_id: str) -> None:
        self.redis, self.task_id = rt.redis, task_id
        self.done_key = rt.keys.backfill_done(task_id)
        self.lock_key = rt.keys.backfill_lock(task_id)

    def result(self) -> dict[str, object] | None:
        """The stored result of an earlier delivery, if it finished."""
        raw = self.redis.get(self.done_key)
        return None if raw is None else dict(orjson.loads(raw))

    def __enter__(self) -> Once:
        if not self.redis.set(self.lock_key, b"1", nx=True, ex=BACKFILL_LOCK_TTL):
            raise BackfillInProgress(f"backfill task {self.task_id} is running elsewhere; "
                                     "retrying after it finished")
        return self

    def finish(self, result: dict[str, object]) -> None:
        """Record the result, so a redelivery does no work."""
        self.redis.set(self.done_key, orjson.dumps(result), ex=BACKFILL_DONE_TTL)

    def __exit__(self, *exc: object) -> None:
        self.redis.delete(self.lock_key)
