"""Fault 7: the broker goes away for a while (RabbitMQ behind a TCP proxy that the test cuts:
every connection reset, new ones refused) while a worker runs a batch and a caller sends more.

Proves: the outage delays commands and loses none. The worker's unacknowledged deliveries
return to their quorum queue when its connection dies, it reconnects by itself (retries
forever), the caller's publish retries until the broker is back and is confirmed, and every
task is applied once the proxy is restored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.brokers import AMQP_HOST, AMQP_PORT
from tests.procs import wait_for
from tests.reliability.brokers import Broker
from tests.reliability.conftest import Stack
from tests.reliability.tcp_proxy import TcpProxy
from tests.reliability.test_worker_crash import check_all_applied, send_batch, wanted

pytestmark = pytest.mark.e2e
# Keep publishing through the outage: up to ~60 s, every half second.
THROUGH_OUTAGE = {"max_retries": 120, "interval_start": 0, "interval_step": 0.25,
                  "interval_max": 0.5}


@pytest.fixture
def proxied(broker: Broker) -> Iterator[tuple[Broker, TcpProxy]]:
    """The run's RabbitMQ, reached only through a proxy the test can cut."""
    proxy = TcpProxy((AMQP_HOST, AMQP_PORT))
    url = broker.url.replace(f"{AMQP_HOST}:{AMQP_PORT}", f"127.0.0.1:{proxy.port}")
    yield Broker(broker.kind, url, broker.results, broker.worker_app), proxy
    proxy.close()


@pytest.mark.parametrize("broker_kind", ["rabbitmq"], indirect=True)
def test_broker_outage_delays_commands_and_loses_none(
    stack: Stack, db: Engine, stocks: list[int], proxied: tuple[Broker, TcpProxy],
) -> None:
    via, proxy = proxied
    client = via.client()
    before, during = stocks[:150], stocks[150:200]
    results = send_batch(client, before, "quote")
    worker = stack.worker(name="outage", **via.env())
    wait_for(lambda: len(wanted(db)) >= 10, 60, "the worker busy with the batch")

    proxy.cut()
    wait_for(lambda: "Connection to broker lost" in worker.output(), 30,
             "the worker to notice the broker is gone")
    applied_at_cut = len(wanted(db))
    sent: list[Any] = []
    started = threading.Event()

    def send_during_outage() -> None:
        started.set()
        with client.producer_or_acquire() as producer:
            sent.extend(client.send_task("ticker_worker.subscribe", args=[t, "quote"],
                                         producer=producer, retry=True,
                                         retry_policy=THROUGH_OUTAGE) for t in during)

    sender = threading.Thread(target=send_during_outage, daemon=True)
    sender.start()
    started.wait(10)
    assert sender.is_alive() and not sent, "a publish went through while the broker was away"

    proxy.restore()
    sender.join(90)
    assert not sender.is_alive() and len(sent) == len(during)
    print(f"outage: {applied_at_cut} of {len(before)} applied at the cut")
    check_all_applied(db, results + sent, before + during, "quote")
    wait_for(lambda: via.queued() == 0, 30, "the queue drained")
    client.close()
