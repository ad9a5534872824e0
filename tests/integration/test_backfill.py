"""Backfill against the simulator (a real subprocess, Kite's rate limits on), Postgres and Redis.

`now` is pinned to a Friday after the close, so every expected count is a plain sum of 375
minute candles per weekday session. Nothing here asserts on time.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import redis
import requests
from kiteconnect import KiteConnect
from kiteconnect import exceptions as kite_errors
from sqlalchemy import Engine, text

from tests.procs import Proc, celery_worker, free_port, wait_for
from ticker_worker import backfill
from ticker_worker.backfill import Backfiller, order_accounts
from ticker_worker.bootstrap import Runtime
from ticker_worker.config import Settings
from ticker_worker.db import accounts, candles
from ticker_worker.errors import (
    HistoricalAccessDenied,
    InvalidInterval,
    InvalidToken,
    InvalidWindow,
    NoHealthyAccount,
    UnknownInstrument,
)
from ticker_worker.keys import RedisKeys
from ticker_worker.kite import rest
from ticker_worker.ratelimit import HistoricalLimiter, historical_limiter
from ticker_worker.tasks.backfill_task import BackfillTask

NIFTY, INFY = 256265, 408065
FRIDAY = datetime(2025, 3, 7, 10, 30, tzinfo=UTC)  # 16:00 IST, after the close
SESSION = 375  # minute candles from 09:15 to 15:29 IST
ACCOUNTS = {"acct1": ("key-one", "token-aaaa-1111"), "acct2": ("key-two", "token-bbbb-2222")}


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    port = free_port()
    creds = [f"--accounts={key}:{token}" for key, token in ACCOUNTS.values()]
    proc = Proc("sim", [sys.executable, "-m", "ticker_worker.sim", "--port", str(port),
                        "--seed", "1", "--tick-interval", "5", *creds])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/_sim/stats", timeout=1).ok, 60, "the simulator")
        yield url
    finally:
        proc.stop()


@pytest.fixture
def kite_settings(settings: Settings, sim: str, redis_client: redis.Redis) -> Settings:
    requests.post(f"{sim}/_sim/reset", timeout=5).raise_for_status()
    return settings.model_copy(update={"kite_api_root": sim,
                                       "kite_ws_root": sim.replace("http", "ws")})


@pytest.fixture
def db(registry: Engine) -> Engine:
    """Clean tables with the small instrument registry and both accounts."""
    engine = registry
    with engine.begin() as conn:
        for name, (key, token) in ACCOUNTS.items():
            accounts.add(conn, name, key, token)
    return engine


@pytest.fixture
def limiter(redis_client: redis.Redis, settings: Settings) -> HistoricalLimiter:
    return historical_limiter(redis_client, RedisKeys(settings.ticker_redis_prefix), 3)


class Spy:
    """A client factory that records every historical request (api key, from, to, interval)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, datetime, datetime, str]] = []

    def __call__(self, settings: Settings, api_key: str, access_token: str) -> KiteConnect:
        kite = rest.client(settings, api_key, access_token)
        real = kite.historical_data

        def recorded(token: int, start: datetime, end: datetime, interval: str,
                     **kw: Any) -> Any:
            self.calls.append((api_key, start, end, interval))
            return real(token, start, end, interval, **kw)

        kite.historical_data = recorded
        return kite


def weekdays(after: date, through: date) -> int:
    return sum(1 for n in range(1, (through - after).days + 1)
               if (after + timedelta(days=n)).weekday() < 5)


def stored(engine: Engine, token: int = NIFTY) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT ts, open, high, low, close, volume, oi, xmin::text AS version FROM candles "
            "WHERE instrument_token = :t ORDER BY ts"), {"t": token}))


def make(db: Engine, settings: Settings, limiter: HistoricalLimiter | None,
         now: datetime = FRIDAY, spy: Spy | None = None) -> Backfiller:
    return Backfiller(db, settings, limiter, spy or rest.client, lambda: now)


def test_days_count_trading_sessions(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    result = make(db, kite_settings, limiter, spy=spy).run(NIFTY, "minute", 7)
    assert result == {"instrument_token": NIFTY, "interval": "minute", "candles": 7 * SESSION}
    assert len(stored(db)) == 7 * SESSION
    # Seven sessions back from Friday 7 March 2025 is Thursday 27 February (one request).
    assert [c[1:3] for c in spy.calls] == [(datetime(2025, 2, 27, 9, 15),
                                            datetime(2025, 3, 7, 15, 30))]


def test_candle_times_are_ist_stored_as_timestamptz(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    make(db, kite_settings, limiter, spy=spy).run(INFY, "minute", 1)
    # Sent as naive IST wall-clock: Friday's session, 09:15 to 15:30 IST.
    assert [c[1:] for c in spy.calls] == [
        (datetime(2025, 3, 7, 9, 15), datetime(2025, 3, 7, 15, 30), "minute")]
    rows = stored(db, INFY)
    assert rows[0].ts == datetime(2025, 3, 7, 3, 45, tzinfo=UTC)  # 09:15 IST
    assert rows[-1].ts == datetime(2025, 3, 7, 9, 59, tzinfo=UTC)  # 15:29 IST
    assert len(rows) == SESSION


def test_100_sessions_of_minutes_take_three_requests(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    result = make(db, kite_settings, limiter, spy=spy).run(NIFTY, "minute", 100)
    first = date(2024, 10, 15)  # 100 NSE sessions back, 143 calendar days
    # The always-open simulator has candles on every weekday, holidays inside a request too.
    expected = weekdays(first - timedelta(days=1), FRIDAY.date()) * SESSION
    assert len(spy.calls) == 3
    assert result["candles"] == expected == len(stored(db))


def test_a_second_run_fetches_only_the_missing_tail(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    wednesday = FRIDAY - timedelta(days=2)
    make(db, kite_settings, limiter, now=wednesday).run(NIFTY, "minute", 5)
    spy = Spy()
    result = make(db, kite_settings, limiter, spy=spy).run(NIFTY, "minute", 5)
    # Resumes after Wednesday's last candle (15:29 IST), at the next session's open.
    assert [c[1:3] for c in spy.calls] == [(datetime(2025, 3, 6, 9, 15),
                                            datetime(2025, 3, 7, 15, 30))]
    assert result["candles"] == 2 * SESSION
    # Wednesday's five sessions reach back to 27 February; Friday's run adds two.
    assert len(stored(db)) == 7 * SESSION


def test_running_twice_leaves_the_same_rows(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    make(db, kite_settings, limiter).run(NIFTY, "minute", 3)
    first = stored(db)
    # Lose the newest day, as a run killed half-way would, then run the same backfill twice.
    with db.begin() as conn:
        conn.execute(text("DELETE FROM candles WHERE ts >= '2025-03-07'"))
    make(db, kite_settings, limiter).run(NIFTY, "minute", 3)
    assert make(db, kite_settings, limiter).run(NIFTY, "minute", 3)["candles"] == 0
    again = stored(db)
    assert [r[:7] for r in again] == [r[:7] for r in first]
    # Upserting rows that are already there writes no new row versions.
    kite = rest.client(kite_settings, *ACCOUNTS["acct1"])
    rows = kite.historical_data(NIFTY, datetime(2025, 3, 6), datetime(2025, 3, 7, 16), "minute",
                                oi=True)
    with db.begin() as conn:
        assert candles.upsert(conn, NIFTY, "minute", rows) == 2 * SESSION
    assert stored(db) == again


def test_a_monday_morning_backfill_covers_friday_and_skips_the_weekend(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    monday = datetime(2025, 3, 10, 2, 30, tzinfo=UTC)  # 08:00 IST, before the open
    result = make(db, kite_settings, limiter, now=monday, spy=spy).run(NIFTY, "minute", 1)
    assert [c[1:3] for c in spy.calls] == [(datetime(2025, 3, 7, 9, 15),
                                            datetime(2025, 3, 7, 15, 30))]
    assert result["candles"] == SESSION


def test_a_window_without_a_session_makes_no_request(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    sunday = datetime(2025, 3, 9, 12, 0, tzinfo=UTC)
    result = make(db, kite_settings, limiter, now=sunday, spy=spy).run(
        NIFTY, "minute", start="2025-03-08T09:00:00+05:30", end="2025-03-09T17:00:00+05:30")
    assert result["candles"] == 0 and spy.calls == []


def test_a_gap_window_fetches_whole_candles_of_that_window_only(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    spy = Spy()
    make(db, kite_settings, limiter, spy=spy).run(
        INFY, "minute", start="2025-03-07T10:03:20+05:30", end="2025-03-07T04:37:40Z")
    assert [c[1:3] for c in spy.calls] == [(datetime(2025, 3, 7, 10, 3),
                                            datetime(2025, 3, 7, 10, 7))]
    assert len(stored(db, INFY)) == 5  # 10:03 .. 10:07 IST


def test_a_bad_gap_window_fails_before_any_request(db: Engine, kite_settings: Settings) -> None:
    spy = Spy()
    with pytest.raises(InvalidWindow, match="no UTC offset"):
        make(db, kite_settings, None, spy=spy).run(INFY, start="2025-03-07T10:00:00")
    with pytest.raises(InvalidWindow, match="without start"):
        make(db, kite_settings, None, spy=spy).run(INFY, end="2025-03-07T10:00:00+05:30")
    assert spy.calls == []


def test_the_same_task_delivered_twice_calls_kite_once(
    db: Engine, kite_settings: Settings, redis_client: redis.Redis
) -> None:
    rt = Runtime(settings=kite_settings, application_name="tests")
    spy = Spy()
    gap = {"start": "2025-03-07T10:00:00+05:30", "end": "2025-03-07T10:09:00+05:30"}
    try:
        first = backfill.run(rt, INFY, "minute", task_id="gap-evt-1", client_factory=spy, **gap)
        again = backfill.run(rt, INFY, "minute", task_id="gap-evt-1", client_factory=spy, **gap)
        assert first == again and first["candles"] == 10
        assert len(spy.calls) == 1
        backfill.run(rt, INFY, "minute", task_id="gap-evt-2", client_factory=spy, **gap)
        assert len(spy.calls) == 2  # another task id is other work
        assert redis_client.ttl(rt.keys.backfill_done("gap-evt-1")) > 0
        assert not redis_client.exists(rt.keys.backfill_lock("gap-evt-1"))
    finally:
        rt.engine.dispose()


def test_bad_input_fails_before_any_request(db: Engine, kite_settings: Settings) -> None:
    spy = Spy()
    with pytest.raises(InvalidToken, match="'256265'"):
        make(db, kite_settings, None, spy=spy).run("256265")
    with pytest.raises(InvalidInterval, match="'hour'"):
        make(db, kite_settings, None, spy=spy).run(NIFTY, "hour")
    assert spy.calls == [] and stored(db) == []


def test_unknown_instrument_is_refused_before_any_request(
    db: Engine, kite_settings: Settings
) -> None:
    spy = Spy()
    with pytest.raises(UnknownInstrument, match="987654321"):
        make(db, kite_settings, None, spy=spy).run(987654321)
    assert spy.calls == []


def test_without_the_limiter_kite_answers_429_which_the_task_retries(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    intervals = ["minute", "3minute", "5minute", "10minute", "15minute", "30minute",
                 "60minute", "day"]
    barrier = threading.Barrier(len(intervals))
    failed: dict[str, BaseException] = {}

    def run(interval: str) -> None:
        barrier.wait()
        try:
            make(db, kite_settings, None).run(NIFTY, interval, 5)
        except Exception as exc:
            failed[interval] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in intervals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Eight requests at once on one key: Kite allows three per second.
    assert len(failed) >= len(intervals) - 3
    assert all(isinstance(e, kite_errors.NetworkException) and e.code == 429
               for e in failed.values())
    assert all(isinstance(e, BackfillTask.autoretry_for) for e in failed.values())
    time.sleep(1.1)  # let the sim's window of the unthrottled burst pass (not an assertion)
    for interval in failed:  # the retries, through the shared limiter this time
        make(db, kite_settings, limiter).run(NIFTY, interval, 5)
    with db.connect() as conn:
        done = conn.execute(text("SELECT count(DISTINCT interval) FROM candles")).scalar_one()
    assert done == len(intervals)


def test_expired_token_moves_to_another_account(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with db.connect() as conn:
        first, second = order_accounts(accounts.list_all(conn), NIFTY)
    requests.post(f"{kite_settings.kite_api_root}/_sim/expire", params={"api_key": first.api_key},
                  timeout=5).raise_for_status()
    with caplog.at_level(logging.INFO):
        result = make(db, kite_settings, limiter).run(NIFTY, "minute", 1)
    assert result["candles"] == SESSION
    with db.connect() as conn:
        health = {a.name: (a.healthy, a.unhealthy_reason) for a in accounts.list_all(conn)}
    assert health[second.name] == (True, None)
    assert health[first.name][0] is False
    assert "refused its access token" in health[first.name][1]
    assert first.access_token not in caplog.text + health[first.name][1]
    assert any(getattr(r, "account", None) == second.name for r in caplog.records)


def test_no_account_left_fails_with_the_reasons(
    db: Engine, kite_settings: Settings, limiter: HistoricalLimiter
) -> None:
    for key, _ in ACCOUNTS.values():
        requests.post(f"{kite_settings.kite_api_root}/_sim/expire", params={"api_key": key},
                      timeout=5).raise_for_status()
    with pytest.raises(NoHealthyAccount, match="no healthy account left") as caught:
        make(db, kite_settings, limiter).run(NIFTY, "minute", 1)
    message = str(caught.value)
    assert "acct1" in message and "acct2" in message and "set-token" in message
    assert not any(token in message for _, token in ACCOUNTS.values())
    assert stored(db) == []
    # The next run does not even try: both accounts are now marked unhealthy.
    with pytest.raises(NoHealthyAccount, match="no enabled, healthy account"):
        make(db, kite_settings, limiter).run(NIFTY, "minute", 1)


class NoHistoricalAddOn:
    """A client fake for an app without Kite's historical-data add-on (the sim has no such fault)."""

    def historical_data(self, *args: Any, **kwargs: Any) -> Any:
        raise kite_errors.PermissionException("Insufficient permission for that call.", code=403)


def test_no_historical_permission_fails_clearly_and_keeps_accounts_healthy(
    db: Engine, kite_settings: Settings
) -> None:
    backfiller = Backfiller(db, kite_settings, None, lambda *_: NoHistoricalAddOn(),
                            lambda: FRIDAY)
    with pytest.raises(HistoricalAccessDenied, match="no historical-data permission") as caught:
        backfiller.run(NIFTY)
    assert "acct1" in str(caught.value) and "acct2" in str(caught.value)
    with db.connect() as conn:
        assert all(a.healthy for a in accounts.list_all(conn))


def _worker(kite_settings: Settings, **env: str) -> Proc:
    proc = celery_worker(queues="backfill", concurrency=8, name="backfill", env={
        "KITE_API_ROOT": kite_settings.kite_api_root, "KITE_WS_ROOT": kite_settings.kite_ws_root,
        **env})
    wait_for(lambda: "ready" in proc.output() or not proc.alive(), 60, "the worker to start")
    assert proc.alive(), proc.output()
    return proc


@pytest.mark.e2e
def test_a_celery_worker_runs_backfill_sent_by_name(db: Engine, kite_settings: Settings) -> None:
    from ticker_worker.celery import app

    proc = _worker(kite_settings)
    try:
        # Sent by name; celeryconfig's task_routes put it on the backfill queue.
        result = app.send_task("ticker_worker.backfill", args=[INFY],
                               kwargs={"interval": "day", "days": 30}).get(timeout=120)
    finally:
        proc.stop()
    assert result["instrument_token"] == INFY and result["interval"] == "day"
    assert result["candles"] == len(stored(db, INFY)) > 0


@pytest.mark.e2e
def test_a_worker_without_the_limiter_retries_429s_until_done(
    db: Engine, kite_settings: Settings
) -> None:
    from ticker_worker.celery import app

    # A limit far above Kite's leaves the 429 answers to the task's autoretry.
    proc = _worker(kite_settings, HISTORICAL_RATE_PER_SECOND="1000")
    try:
        sent = [app.send_task("ticker_worker.backfill", args=[token],
                              kwargs={"interval": "day", "days": 10})
                for token in (NIFTY, INFY, 260105, 738561, 5633, 256265, 408065, 260105)]
        results = [r.get(timeout=240) for r in sent]
    finally:
        proc.stop()
    assert "Too many requests" in proc.output()
    with db.connect() as conn:
        counts = dict(conn.execute(text(
            "SELECT instrument_token, count(*) FROM candles GROUP BY 1")).all())
    assert {r["instrument_token"] for r in results} == set(counts)
    assert len(set(counts.values())) == 1  # every instrument has the same sessions


@pytest.mark.e2e
def test_a_gap_backfill_delivered_twice_by_the_broker_calls_kite_once(
    db: Engine, kite_settings: Settings
) -> None:
    from ticker_worker.celery import app

    proc = _worker(kite_settings, LOG_LEVEL="INFO")
    gap = {"interval": "minute", "start": "2025-03-07T10:00:00+05:30",
           "end": "2025-03-07T10:04:00+05:30"}
    try:
        # As the relay sends it: kwargs start/end, the task id derived from the gap event's id.
        first = app.send_task("ticker_worker.backfill", args=[INFY], kwargs=gap,
                              task_id="gap-event-42", queue="backfill").get(timeout=120)
        app.send_task("ticker_worker.backfill", args=[INFY], kwargs=gap,
                      task_id="gap-event-42", queue="backfill")
        wait_for(lambda: "gap-event-42 was done already" in proc.output(), 60,
                 "the second delivery to finish")
    finally:
        proc.stop()
    assert first["candles"] == 5
    assert proc.output().count("backfill 408065 minute: chunk 1 of 1") == 1  # one Kite request
