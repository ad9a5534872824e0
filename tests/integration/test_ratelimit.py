"""The shared Redis rate limiter on a real Redis: many acquirers, one budget per api key.

Assertions count grants per window, using the grant times Redis itself recorded; none of them
depends on how fast this machine is.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from kiteconnect import KiteConnect

from ticker_worker.config import Settings
from ticker_worker.errors import RateLimitTimeout
from ticker_worker.keys import RedisKeys
from ticker_worker.ratelimit import RateLimiter, ReplyHook, api_key_hash, historical_limiter

WINDOW_US = 1_000_000


def max_grants_in_any_window(grant_times: Sequence[float], window_us: int = WINDOW_US) -> int:
    """The most grants that fall in one half-open window [t, t + window) starting at a grant."""
    us = sorted(round(t * 1_000_000) for t in grant_times)
    return max(sum(1 for u in us[i:] if u - start < window_us) for i, start in enumerate(us))


def test_concurrent_threads_never_exceed_the_limit(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=3, window=1.0)
    grants: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker() -> None:
        start.wait()
        for _ in range(2):
            granted_at = limiter.acquire("test:bucket", timeout=30)
            with lock:
                grants.append(granted_at)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(grants) == 12
    assert max_grants_in_any_window(grants) <= 3


def _acquire_in_child(redis_url: str, prefix: str, api_key: str, times: int) -> list[float]:
    client = redis.Redis.from_url(redis_url)
    limiter = historical_limiter(client, RedisKeys(prefix), per_second=3, timeout=30)
    try:
        return [limiter.acquire(api_key) for _ in range(times)]
    finally:
        client.close()


def test_separate_processes_share_one_budget_per_api_key(
    redis_client: redis.Redis, settings: Settings
) -> None:
    # Fresh interpreters (spawn), as separate Celery worker processes would be.
    args = [(settings.redis_url, settings.ticker_redis_prefix, key, 3)
            for key in ("key-a", "key-a", "key-a", "key-a", "key-b", "key-b")]
    with multiprocessing.get_context("spawn").Pool(len(args)) as pool:
        results = pool.starmap(_acquire_in_child, args)
    per_key_a = [t for r in results[:4] for t in r]
    per_key_b = [t for r in results[4:] for t in r]
    assert len(per_key_a) == 12 and len(per_key_b) == 6
    assert max_grants_in_any_window(per_key_a) <= 3
    assert max_grants_in_any_window(per_key_b) <= 3


def test_buckets_are_independent_per_key(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=3, window=60.0)
    for bucket in ("test:a", "test:b"):
        assert [limiter.try_acquire(bucket)[0] for _ in range(4)] == [True, True, True, False]


def test_refusal_says_how_long_to_wait(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=1, window=60.0)
    assert limiter.try_acquire("test:wait")[0] is True
    granted, wait = limiter.try_acquire("test:wait")
    assert granted is False
    assert 0 < wait <= 60


def test_acquire_gives_up_after_its_timeout(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=1, window=60.0)
    limiter.acquire("test:busy")
    with pytest.raises(RateLimitTimeout, match="test:busy"):
        limiter.acquire("test:busy", timeout=0.1)


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1_000_000


def test_a_slot_counts_from_when_its_request_finished(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=1, window=60.0)
    with limiter.slot("test:slot") as held:
        inside = redis_now(redis_client)
    ((_, stamp),) = redis_client.zrange("test:slot", 0, -1, withscores=True)
    assert held.granted_at <= inside <= stamp / 1_000_000
    # Also when the request failed: it may still have reached Kite.
    redis_client.delete("test:slot")
    with pytest.raises(RuntimeError), limiter.slot("test:slot"):
        inside = redis_now(redis_client)
        raise RuntimeError("connection reset")
    ((_, stamp),) = redis_client.zrange("test:slot", 0, -1, withscores=True)
    assert inside <= stamp / 1_000_000


def test_concurrent_slots_count_until_their_requests_end(redis_client: redis.Redis) -> None:
    limiter = RateLimiter(redis_client, limit=3, window=1.0)
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(2):
            with limiter.slot("test:slots", timeout=30) as held:
                time.sleep(0.1)  # a request in flight (not an assertion)
                done = redis_now(redis_client)
            with lock:
                spans.append((held.granted_at, done))

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(spans) == 10
    # Kite may count a request as late as its end, so at each grant fewer than 3 other
    # requests may have ended less than a window earlier (or be still under way).
    for granted, _ in spans:
        held = sum(1 for g, done in spans if g < granted and done > granted - 1.0)
        assert held < 3
    assert max_grants_in_any_window([g for g, _ in spans]) <= 3


class _Candles(BaseHTTPRequestHandler):
    """Kite's historical reply, enough of it for the official client."""

    def do_GET(self) -> None:
        body = json.dumps({"status": "success", "data": {"candles": [
            ["2025-03-07T09:15:00+0530", 1.0, 2.0, 0.5, 1.5, 10]] * 2000}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kite_like() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Candles)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_reply_hook_answers_the_slot_before_the_body_is_parsed(
    redis_client: redis.Redis, settings: Settings, kite_like: str
) -> None:
    limiter = historical_limiter(redis_client, RedisKeys(settings.ticker_redis_prefix), 3)
    kite = KiteConnect("key", "token", root=kite_like)
    parse_started: list[float] = []
    parse = kite._format_historical

    def spy(data: Any) -> Any:
        parse_started.append(redis_now(redis_client))
        return parse(data)

    kite._format_historical = spy
    with limiter.slot("key", ReplyHook(kite.reqsession)) as slot:
        rows = kite.historical_data(1, datetime(2025, 3, 7), datetime(2025, 3, 8), "minute")
        assert slot.stamped  # by the hook, not by the end of this block
    stamp = redis_client.zscore(limiter.bucket("key"), slot.member)
    assert len(rows) == 2000
    assert slot.granted_at <= stamp / 1_000_000 <= parse_started[0]


def test_bucket_is_named_by_a_hash_and_expires(
    redis_client: redis.Redis, settings: Settings
) -> None:
    secret_key = "my-real-api-key-123"
    limiter = historical_limiter(redis_client, RedisKeys(settings.ticker_redis_prefix), 3)
    limiter.acquire(secret_key)
    names = [k.decode() for k in redis_client.keys("*")]
    assert names == [RedisKeys(settings.ticker_redis_prefix).historical_bucket(
        api_key_hash(secret_key))]
    assert secret_key not in names[0]
    assert 0 < redis_client.pttl(names[0]) <= 3_000


def test_bad_limits_are_refused(redis_client: redis.Redis) -> None:
    with pytest.raises(ValueError):
        RateLimiter(redis_client, limit=0)
