"""The outbox relay: deliver committed events to Redis and enqueue the backfill each one owes.

A `subscription_created` owes a backfill of recent history (queue `backfill`); a `stream_gap`
owes a backfill of its window (queue `backfill_gaps`, so that a drop of 3,000 instruments never
delays the backfill of a new subscription). Each backfill's task id is its event's id: a second
enqueue of one event is one backfill (the task keeps a done-marker per task id).
Delivery is at-least-once: an event is marked published only after Redis took it, so a crash
in between publishes it again later with the same `event_id`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
from sqlalchemy import Engine, text

from ticker_worker.core.events import EventType
from ticker_worker.db import holder as sql
from ticker_worker.db.lease import FENCE
from ticker_worker.keys import EVENTS_STREAM_MAXLEN, RedisKeys

log = logging.getLogger(__name__)
P = TypeVar("P", redis.client.Pipeline, aioredis.client.Pipeline)
SWEEP_INTERVAL = 2.0  # seconds between outbox sweeps
BULK = 200  # above this many events, memory is handed back after delivery
BACKFILL_QUEUE, GAP_QUEUE = "backfill", "backfill_gaps"
# What finishing a published event needs (its backfill, its log line). A bulk subscribe's 27,000
# events wait for the placement to end: kept whole (metadata and all, ~2 KB each) they held tens
# of megabytes that the allocator never handed back.
FINISH_KEYS = ("event_id", "event_type", "instrument_token", "account", "connection",
               "gap_start", "gap_end")


def slim(event: dict[str, Any]) -> dict[str, Any]:
    """The part of a published event that its finish still reads."""
    return {k: event[k] for k in FINISH_KEYS if k in event}


def gap_window(event: dict[str, Any]) -> tuple[str, str]:
    """A gap's window rounded out to whole minutes (the finest candle Kite serves)."""
    start = datetime.fromisoformat(event["gap_start"]).replace(second=0, microsecond=0)
    end = datetime.fromisoformat(event["gap_end"])
    if end.second or end.microsecond:
        end = end.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start.isoformat(), end.isoformat()


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
                sql.mark_published(conn, [e["event_id"] for e in events])
            self._log(events)

    def sweep(self, epoch: int) -> int:
        """Deliver whatever the outbox still holds (after a crash or a Redis outage).

        Only while `epoch` holds the lease: the lease row is share-locked for the whole sweep,
        so a takeover waits for it, and a stale holder delivers nothing.
        """
        with self._lock, self.engine.begin() as conn:
            held = conn.execute(text(f"WITH {FENCE} SELECT EXISTS (SELECT 1 FROM lease)"),
                                {"epoch": epoch}).scalar_one()
            if not held:
                return 0
            events = sql.unpublished(conn)
            if events:
                self._queue_commands(self.redis.pipeline(transaction=False), events).execute()
                self._enqueue_backfills(events)
                self._log(events)
                sql.mark_published(conn, [e["event_id"] for e in events])
            return len(events)

    def _queue_commands(self, pipe: P, events: Sequence[dict[str, Any]]) -> P:
        # The same commands for the sync and the asyncio pipeline: PUBLISH, then XADD.
        for event in events:
            body = orjson.dumps(event)
            pipe.publish(self.keys.events, body)
            pipe.xadd(self.keys.events_stream, {"event": body}, maxlen=EVENTS_STREAM_MAXLEN,
                      approximate=True)
        return pipe

    def _enqueue_backfills(self, events: Sequence[dict[str, Any]]) -> None:
        owed = [e for e in events if e["event_type"] in (EventType.CREATED, EventType.GAP)]
        if not owed:
            return
        with self.celery.producer_or_acquire() as producer:
            for event in owed:
                token = event["instrument_token"]
                if event["event_type"] == EventType.GAP:
                    start, end = gap_window(event)
                    self.celery.send_task(
                        "ticker_worker.backfill", args=[token], queue=GAP_QUEUE,
                        kwargs={"start": start, "end": end}, task_id=event["event_id"],
                        producer=producer)
                else:
                    self.celery.send_task("ticker_worker.backfill", args=[token],
                                          queue=BACKFILL_QUEUE, task_id=event["event_id"],
                                          producer=producer)

    def _log(self, events: Sequence[dict[str, Any]]) -> None:
        self.published += len(events)
        if len(events) > 50:  # a bulk subscribe: one line, not thousands
            log.info("%d events published", len(events))
            return
        for event in events:
            log.info("%s published", event["event_type"], extra={
                "event_id": event["event_id"], "instrument_token": event["instrument_token"],
                "account": event["account"], "connection": event["connection"]})


class RelayLoop:
    """The Publisher port, and the loop that finishes fresh events and sweeps the outbox."""

    def __init__(self, relay: Relay, client: aioredis.Redis, epoch: Callable[[], int | None],
                 busy: Callable[[], bool], trim: Callable[[], Any]) -> None:
        self.relay, self.client, self.epoch, self.busy, self.trim = relay, client, epoch, busy, trim
        self.outbox: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        self.last_sweep = time.monotonic()

    async def publish(self, events: list[dict[str, Any]]) -> None:
        """Publish just-committed events now; the loop enqueues their backfills."""
        try:
            await self.relay.publish_now(self.client, events)
        except Exception as exc:  # noqa: BLE001 - still in the outbox: the sweep delivers it
            log.warning("events not published now (%s); the outbox sweep will retry", exc)
            return
        self.outbox.put_nowait([slim(e) for e in events])

    async def run(self) -> None:
        """Finish fresh events as they come; sweep the outbox every 2 s whatever the traffic.

        The sweep has its own clock: events that missed Redis during an outage must go out
        even while new commands keep arriving.
        """
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while True:
            events = await self._next(next_sweep)
            if events:
                await self._finish(events)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                if self.outbox.empty() or time.monotonic() - self.last_sweep > 30:
                    await self._sweep()

    async def _next(self, until: float) -> list[dict[str, Any]] | None:
        if not self.outbox.empty():
            return self.outbox.get_nowait()
        try:
            return await asyncio.wait_for(self.outbox.get(), max(0.01, until - time.monotonic()))
        except TimeoutError:
            return None

    async def _finish(self, events: list[dict[str, Any]]) -> None:
        # Events are published already; only their backfill enqueue waits for a bulk placement
        # (thousands of enqueues would compete with it for the GIL), and not forever.
        deadline = time.monotonic() + 10
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        try:
            await asyncio.to_thread(self.relay.finish, events)
        except Exception as exc:  # noqa: BLE001 - left in the outbox, swept later
            log.warning("event delivery failed (%s); will retry from the outbox", exc)
        if len(events) > BULK and self.outbox.empty():
            await asyncio.to_thread(self.trim)

    async def _sweep(self) -> None:
        self.last_sweep = time.monotonic()
        epoch = self.epoch()
        if epoch is None:
            return
        try:
            await asyncio.to_thread(self.relay.sweep, epoch)
        except Exception as exc:  # noqa: BLE001 - Redis or Postgres still away
            log.warning("outbox sweep failed: %s", exc)
