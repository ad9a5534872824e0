"""The two Celery brokers as the reliability tests see them: where the messages are, which app a
worker runs, and a client that sends tasks by name. Results are on the private Redis for both.

- Redis: kombu keeps a delivered, unacknowledged message in its `unacked` hash and restores it
  after `visibility_timeout` (shortened by tests/reliability/worker_app.py).
- RabbitMQ: this run's virtual host on the machine's server (tests/brokers.py); an
  unacknowledged delivery returns to its quorum queue the moment the consumer's connection dies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from tests.brokers import purge
from tests.reliability.servers import RedisServer


@dataclass
class Broker:
    """One broker for one test: its URL, the results' Redis, and what is queued there."""

    kind: str
    url: str
    results: str
    worker_app: str

    def env(self) -> dict[str, str]:
        return {"CELERY_BROKER_URL": self.url, "CELERY_RESULT_BACKEND": self.results}

    def client(self) -> Celery:
        """A caller that knows only the URLs and the task names (plus, on RabbitMQ, that the
        queue is a quorum queue: it declares `celery` on its first send)."""
        app = Celery(broker=self.url, backend=self.results)
        app.conf.task_default_queue_type = "quorum" if self.kind == "rabbitmq" else "classic"
        return app

    def queued(self, queue: str = "celery") -> int:
        """Messages ready in the queue (not counting deliveries a worker holds)."""
        if self.kind == "redis":
            with redis.Redis.from_url(self.url) as client:
                return int(client.llen(queue))
        with Connection(self.url) as conn:
            channel = conn.channel()
            try:
                return int(channel.queue_declare(queue, passive=True).message_count)
            finally:
                channel.close()

    def redis_ids(self) -> tuple[set[str], set[str]]:
        """Redis only: task ids queued, and delivered but unacknowledged (kombu's bookkeeping)."""
        with redis.Redis.from_url(self.url) as client:
            queued = {json.loads(m)["headers"]["id"] for m in client.lrange("celery", 0, -1)}
            unacked = {json.loads(v)[0]["headers"]["id"] for v in client.hvals("unacked")}
        return queued, unacked


def make_broker(kind: str, redis_url: str, rabbitmq_url: str | None) -> Broker:
    if kind == "redis":
        return Broker(kind, redis_url, redis_url, "tests.reliability.worker_app")
    assert rabbitmq_url is not None
    purge(rabbitmq_url)
    return Broker(kind, rabbitmq_url, redis_url, "ticker_worker")


@pytest.fixture
def broker(broker_kind: str, redis_server: RedisServer, rredis: Any,
           request: pytest.FixtureRequest) -> Broker:
    """The test's broker (it runs once per broker), empty; results on the private Redis."""
    amqp = request.getfixturevalue("rabbitmq_url") if broker_kind == "rabbitmq" else None
    return make_broker(broker_kind, redis_server.url, amqp)
