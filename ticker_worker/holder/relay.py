"""The outbox relay: deliver committed events to Redis and enqueue a backfill per created one.

Delivery is at-least-once: an event is marked published only after Redis took it, so a crash
in between publishes it again later with the same `event_id`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine

from ticker_worker.core.events import EventType
from ticker_worker.holder import store
from ticker_worker.keys import EVENTS_STREAM_MAXLEN, RedisKeys

log = logging.getLogger(__name__)
P = TypeVar("P", redis.client.Pipeline, aioredis.client.Pipeline)


class Relay:
    """Publishes events on `{prefix}:events` and `{prefix}:events:stream`, enqueues backfills."""

    def __init__(
        self, engine: Engine, client: redis.Redis, keys: RedisKeys, celery_app: Any
    ) -> None:
        self.engine, self.redis, self.keys, self.celery = engine, client, keys, celery_app
        self._lock = threading.Lock()
        self.published = 0

    async def publish_now(self, client: aioredis.Redis, events: Sequence[dict[str, Any]]) -> None:
        """Publish just-committed events from the event loop: the fast path of a subscribe."""
        await self._queue_commands(client.pipeline(transaction=False), events).execute()

    def finish(self, events: Sequence[dict[str, Any]]) -> None:
        """After `publish_now`: enqueue the backfills and mark the events published."""
        with self._lock:
            self._enqueue_backfills(events)
            with self.engine.begin() as conn:
                store.mark_published(conn, [e["event_id"] for e in events])
            self._log(events)

    def sweep(self) -> int:
        """Deliver whatever the outbox still holds (after a crash or a Redis outage)."""
        with self._lock, self.engine.begin() as conn:
            events = store.unpublished(conn)
            if events:
                self._publish(events)
                store.mark_published(conn, [e["event_id"] for e in events])
            return len(events)

    def _publish(self, events: Sequence[dict[str, Any]]) -> None:
        self._queue_commands(self.redis.pipeline(transaction=False), events).execute()
        self._enqueue_backfills(events)
        self._log(events)

    def _queue_commands(self, pipe: P, events: Sequence[dict[str, Any]]) -> P:
        # The same commands for the sync and the asyncio pipeline: PUBLISH, then XADD.
        for event in events:
            body = orjson.dumps(event)
            pipe.publish(self.keys.events, body)
            pipe.xadd(self.keys.events_stream, {"event": body}, maxlen=EVENTS_STREAM_MAXLEN,
                      approximate=True)
        return pipe

    def _enqueue_backfills(self, events: Sequence[dict[str, Any]]) -> None:
        created = [e for e in events if e["event_type"] == EventType.CREATED.value]
        if not created:
            return
        with self.celery.producer_or_acquire() as producer:
            for event in created:
                self.celery.send_task(
                    "ticker_worker.backfill", args=[event["instrument_token"]],
                    queue="backfill", producer=producer,
                )

    def _log(self, events: Sequence[dict[str, Any]]) -> None:
        self.published += len(events)
        if len(events) > 50:  # a bulk subscribe: one line, not thousands
            log.info("%d events published", len(events))
            return
        for event in events:
            log.info("%s published", event["event_type"], extra={
                "event_id": event["event_id"], "instrument_token": event["instrument_token"],
                "account": event["account"], "connection": event["connection"]})
