"""Fault 6: a Celery worker dies mid-task while it works through a batch of subscribe tasks.

Proves (acks_late): tasks are applied exactly as asked, and their results are successes, when
- the whole worker is SIGKILLed: its unacknowledged messages stay in kombu's `unacked` hash and a
  replacement worker restores them once they are older than the visibility timeout (shortened
  to 4 s by tests/reliability/worker_app.py; the package's 3600 s would make this take an hour).
  The kill is timed (the worker frozen with SIGSTOP while the test looks) to land while it holds
  unacknowledged messages;
- (xfail, kombu) the kill lands after a message left the queue (BRPOP) but before kombu wrote it
  to `unacked`: that task is lost for good. A plain kill lands there about 1 time in 6;
- one prefork pool process is SIGKILLed: `task_reject_on_worker_lost` requeues its message at
  once, with the package's own settings.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator

import psutil
import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, text

from tests.procs import VENV_BIN, Proc, wait_for
from tests.reliability.conftest import Stack
from tests.reliability.servers import RedisServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Celery]:
    app = Celery(broker=redis_server.url, backend=redis_server.url)
    yield app
    app.close()


def wanted(engine: Engine) -> dict[int, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(text(
            "SELECT instrument_token, mode FROM subscriptions WHERE wanted"))}


def send_batch(client: Celery, tokens: list[int], mode: str) -> list[object]:
    with client.producer_or_acquire() as producer:
        return [client.send_task("ticker_worker.subscribe", args=[t, mode], producer=producer)
                for t in tokens]


def check_all_applied(engine: Engine, results: list[object], tokens: list[int],
                      mode: str) -> None:
    wait_for(lambda: len(wanted(engine)) == len(tokens), 90,
             f"all {len(tokens)} subscribe tasks applied")
    assert wanted(engine) == dict.fromkeys(tokens, mode)
    for result in results:
        value = result.get(timeout=60)  # type: ignore[attr-defined]
        assert value["instrument_token"] in tokens and value["mode"] == mode


def broker_ids(client: redis.Redis) -> tuple[set[str], set[str]]:
    """Task ids still queued, and task ids delivered but unacknowledged (kombu's bookkeeping)."""
    queued = {json.loads(m)["headers"]["id"] for m in client.lrange("celery", 0, -1)}
    unacked = {json.loads(v)[0]["headers"]["id"] for v in client.hvals("unacked")}
    return queued, unacked


def kill_frozen(proc: Proc, ready: Callable[[], bool], give_up: Callable[[], bool]) -> bool:
    """SIGKILL `proc` at a moment `ready()` holds, checked while it is frozen with SIGSTOP.

    Returns False (after killing it anyway) if `give_up()` comes first.
    """
    pid = proc.popen.pid
    try:
        for attempt in range(3000):
            os.kill(pid, signal.SIGSTOP)
            time.sleep(0.02)  # a COMMIT already on the wire lands; the worker cannot move
            if ready():
                return True
            if give_up():
                return False
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.001 * (attempt % 5))
        return False
    finally:
        proc.kill()


def nowhere(engine: Engine, client: redis.Redis, token_of: dict[str, int]) -> set[int]:
    """The tokens whose task is neither applied, nor queued, nor recorded as unacknowledged."""
    queued, unacked = broker_ids(client)
    seen = set(wanted(engine)) | {token_of[i] for i in queued | unacked}
    return set(token_of.values()) - seen


def task_tokens(results: list[object], tokens: list[int]) -> dict[str, int]:
    return {r.id: t for r, t in zip(results, tokens, strict=True)}  # type: ignore[attr-defined]


def test_worker_sigkilled_mid_batch_every_task_applied_after_restore(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, client: Celery,
) -> None:
    tokens = stocks[:200]
    results = send_batch(client, tokens, "ltp")
    assert rredis.llen("celery") == 200

    first = stack.worker(app="tests.reliability.worker_app", name="doomed", wait=False)
    wait_for(lambda: len(wanted(db)) >= 20, 60, "the first worker busy with the batch")
    # Kill it while it holds unacknowledged messages (running or reserved) and none is in
    # kombu's fetch window (see the next test).
    token_of = task_tokens(results, tokens)
    landed = kill_frozen(first, lambda: rredis.hlen("unacked") >= 1 and
                         not nowhere(db, rredis, token_of), lambda: len(wanted(db)) >= 190)
    queued, unacked = broker_ids(rredis)
    print(f"killed with {len(wanted(db))} applied, {len(unacked)} unacked, {len(queued)} queued")
    assert landed, "the worker finished the batch before a clean kill moment came"

    stack.worker(app="tests.reliability.worker_app", name="replacement")
    check_all_applied(db, results, tokens, "ltp")
    wait_for(lambda: rredis.hlen("unacked") == 0 and rredis.llen("celery") == 0, 30,
             "no message left unacknowledged or queued")


@pytest.mark.xfail(strict=True, reason=(
    "kombu's Redis transport (not ticker_worker code) pops a message with BRPOP and only then "
    "records it in `unacked`; a worker SIGKILLed between the two loses that task for good, so "
    "with the Redis broker 'every task sent is eventually applied' does not hold for it"))
def test_worker_killed_between_fetch_and_unacked_loses_no_task(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, client: Celery,
) -> None:
    """Freeze the worker (SIGSTOP) until a task is nowhere (not queued, not unacked, not applied),
    then SIGKILL it: a replacement worker must still apply every task."""
    tokens = stocks[:200]
    token_of = task_tokens(send_batch(client, tokens, "ltp"), tokens)
    first = stack.worker(app="tests.reliability.worker_app", name="doomed", wait=False)
    wait_for(lambda: len(wanted(db)) >= 5, 60, "the first worker busy with the batch")

    def in_window() -> bool:
        if not nowhere(db, rredis, token_of):
            return False
        time.sleep(0.05)
        return bool(nowhere(db, rredis, token_of))

    if not kill_frozen(first, in_window, lambda: len(wanted(db)) >= 190):
        pytest.skip("the kill never landed between BRPOP and the unacked write this time")

    stack.worker(app="tests.reliability.worker_app", name="replacement")
    wait_for(lambda: rredis.llen("celery") == 0 and rredis.hlen("unacked") == 0, 60,
             "the replacement to drain the queue and restore what was unacked")
    wait_for(lambda: len(wanted(db)) == 200, 5, "every task applied (the queue is drained)")


def pool_children(proc: Proc) -> list[psutil.Process]:
    return psutil.Process(proc.popen.pid).children(recursive=True)


def test_pool_process_sigkilled_mid_task_is_requeued(
    stack: Stack, db: Engine, stocks: list[int], rredis: redis.Redis, client: Celery,
) -> None:
    tokens = stocks[:200]
    worker = Proc("prefork", [
        str(VENV_BIN / "celery"), "-A", "ticker_worker", "worker", "-Q", "celery", "-P",
        "prefork", "-c", "1", "--without-mingle", "--without-gossip", "-n", "prefork@%h",
        "-l", "INFO",
    ], stack.env())
    stack.procs.append(worker)
    wait_for(lambda: "ready" in worker.output() or not worker.alive(), 60, "the prefork worker")
    assert worker.alive(), worker.output()

    results = send_batch(client, tokens, "full")
    wait_for(lambda: len(wanted(db)) >= 20, 60, "the pool busy with the batch")
    # Kill the pool process until one dies in the middle of a task (it is busy almost always).
    for _ in range(10):
        child = wait_for(lambda: pool_children(worker), 30, "a pool process")[0]  # type: ignore[index]
        child.kill()
        gone = child.pid

        def replaced(gone: int = gone) -> bool:
            kids = pool_children(worker)
            return bool(kids) and kids[0].pid != gone

        wait_for(lambda: "WorkerLostError" in worker.output() or replaced(), 30,
                 "the worker to replace its pool process")
        if "WorkerLostError" in worker.output() or len(wanted(db)) == len(tokens):
            break
    print(f"killed a pool process with {len(wanted(db))} applied")
    assert "WorkerLostError" in worker.output(), "no pool process died mid-task"
    assert worker.alive()
    check_all_applied(db, results, tokens, "full")
    assert rredis.hlen("unacked") == 0
