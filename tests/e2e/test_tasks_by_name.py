"""A real Celery worker serves tasks sent by name from a process that never imports us."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.procs import Proc, celery_worker, wait_for
from ticker_worker.config import Settings

pytestmark = pytest.mark.e2e
CLIENT = Path(__file__).with_name("bare_client.py")


@pytest.fixture
def worker(registry: Engine, broker_url: str, settings: Settings) -> Iterator[Proc]:
    """A worker on this run's broker (each test runs on Redis and on RabbitMQ)."""
    proc = celery_worker(env={"CELERY_BROKER_URL": broker_url,
                              "CELERY_RESULT_BACKEND": settings.redis_url})
    wait_for(lambda: "ready" in proc.output() or not proc.alive(), 60, "the worker to start")
    assert proc.alive(), proc.output()
    yield proc
    proc.stop()


def call(broker_url: str, settings: Settings, calls: list[Any]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, str(CLIENT), broker_url, settings.redis_url, json.dumps(calls)],
        capture_output=True, text=True, timeout=120, check=True, cwd="/",
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_tasks_by_name(worker: Proc, registry: Engine, broker_url: str,
                       settings: Settings) -> None:
    results = call(broker_url, settings, [
        ["ticker_worker.subscribe", [256265]],
        ["ticker_worker.subscribe", [256265, "quote"]],
        ["ticker_worker.subscribe_many", [[408065, 738561, "bad"], "ltp"]],
        ["ticker_worker.set_mode", [408065, "full"]],
        ["ticker_worker.unsubscribe", [738561]],
    ])
    assert results[0] == {"ok": {"instrument_token": 256265, "mode": "full", "status": "pending",
                                 "changed": True}}
    assert results[1]["ok"]["mode"] == "quote"
    assert results[2]["ok"]["accepted"] == [408065, 738561]
    assert results[2]["ok"]["rejected"][0]["instrument_token"] == "bad"
    assert results[3]["ok"]["changed"] is True
    assert results[4]["ok"]["changed"] is True
    with registry.connect() as conn:
        got = conn.execute(text(
            "SELECT instrument_token, mode, wanted FROM subscriptions ORDER BY 1")).all()
    assert [tuple(r) for r in got] == [(256265, "quote", True), (408065, "full", True),
                                       (738561, "ltp", False)]


def test_bad_input_fails_fast_and_writes_nothing(
    worker: Proc, registry: Engine, broker_url: str, settings: Settings
) -> None:
    results = call(broker_url, settings, [
        ["ticker_worker.subscribe", ["256265"]],
        ["ticker_worker.subscribe", [256265, "fulll"]],
        ["ticker_worker.subscribe", [999999]],
        ["ticker_worker.subscribe", [None]],
        ["ticker_worker.subscribe", [-3]],
        ["ticker_worker.subscribe", [True]],
        ["ticker_worker.subscribe", [1.5]],
    ])
    messages = [r.get("message", "") for r in results]
    assert all("error" in r for r in results), results
    assert "positive integer" in messages[0] and "'256265'" in messages[0]
    assert "unknown mode 'fulll'" in messages[1]
    assert "unknown instrument 999999" in messages[2]
    assert "None" in messages[3] and "-3" in messages[4] and "True" in messages[5]
    assert "1.5" in messages[6]
    with registry.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscriptions")).scalar() == 0
    # Failed at once: one attempt each, no retries.
    assert worker.output().count("Retry in") == 0
