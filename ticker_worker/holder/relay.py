"""The outbox relay: deliver committed events to Redis and enqueue a backfill per created one.

Delivery is at-least-once: an event is marked published only after Redis took it, so a crash
in between publishes it again later with the same `event_id`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import redis
from sqlalchemy import Engine

from ticker_worker.core.events import EventType
from ticker_worker.holder import store
from ticker_worker.keys import EVENTS_STREAM_MAXLEN, RedisKeys

log = logging.getLogger(__name__)


class Relay:
    """Publishes events on `{prefix}:events` and `{prefix}:events:stream`, enqueues backfills."""

    def __init__(
        self, engine: Engine, client: redis.Redis, keys: RedisKeys, celery_app: Any
    ) -> None:
        self.engine, self.redis, self.keys, self.celery = engine, client, keys, celery_app
        self._lock = threading.Lock()
        self.published = 0

    def deliver(self, events: Sequence[dict[str, Any]]) -> None:
        """Publish events that were just committed, then mark them published."""
        if not events:
            return
        with self._lock:
            self._publish(events)
            with self.engine.begin() as conn:
                store.mark_published(conn, [e["event_id"] for e in events])

    def sweep(self) -> int:
        """Deliver whatever the outbox still holds (after a crash or a Redis outage)."""
        with self._lock, self.engine.begin() as conn:
            events = store.unpublished(conn)
            if events:
                self._publish(events)
                store.mark_published(conn, [e["event_id"] for e in events])
            return len(events)

    def _publish(self, events: Sequence[dict[str, Any]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for event in events:
            body = orjson.dumps(event)
            pipe.publish(self.keys.events, body)
            pipe.xadd(self.keys.events_stream, {"event": body}, maxlen=EVENTS_STREAM_MAXLEN,
                      approximate=True)
        pipe.execute()
        created = [e for e in events if e["event_type"] == EventType.CREATED.value]
        if created:
            with self.celery.producer_or_acquire() as producer:
                for event in created:
                    self.celery.send_task(
                        "ticker_worker.backfill", args=[event["instrument_token"]],
                        queue="backfill", producer=producer,
                    )
        self.published += len(events)
        for event in events:
            log.info("%s published", event["event_type"], extra={
                "event_id": event["event_id"], "instrument_token": event["instrument_token"],
                "account": event["account"], "connection": event["connection"]})
