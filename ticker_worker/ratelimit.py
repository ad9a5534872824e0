"""A rate limiter shared by every process through Redis: a sliding-window log per bucket.

Kite counts historical requests per api key across all our workers, so the count lives in Redis,
not in one process (Celery's `rate_limit` is per worker instance). One Lua script checks and
records a grant atomically, with Redis' own clock, so hosts with skewed clocks still agree.
A slot held through `slot()` is re-stamped when the reply to its request arrives: Kite counts a
request when it arrives, somewhere between our grant and its reply, and only the reply bounds that
from above, however long our process or Kite's front end stalled in between.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

if TYPE_CHECKING:
    import requests

from ticker_worker.errors import RateLimitTimeout
from ticker_worker.keys import RedisKeys

# A sliding-window log: the bucket is a sorted set of grant times (microseconds, Redis clock).
# At most `limit` grants fall in any half-open window [t, t + window). A grant returns
# {1, grant_time_us}; a refusal returns {0, microseconds until the oldest grant leaves the window}.
_ACQUIRE_LUA = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
  return {1, now}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""

# Moves a grant to "now" (Redis clock): called when the request it allowed has finished.
_RESTAMP_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return now
"""

# Re-stamping already bounds when Kite saw each request; this small widening only absorbs the
# rate difference between Redis' clock and Kite's (0.5% of the allowed rate).
HISTORICAL_SAFETY = 0.005


@dataclass
class Slot:
    """One granted request. Call `answered()` when its reply arrives (or let the block end)."""

    limiter: RateLimiter
    bucket: str
    member: str
    granted_at: float
    stamped: bool = False

    def answered(self) -> None:
        """Count this request from now on (once): the server has certainly seen it by now."""
        if not self.stamped:
            self.stamped = True
            self.limiter.restamp(self.bucket, self.member)


class ReplyHook:
    """A `requests` response hook: marks the slot of the request in flight answered as soon as
    the reply's headers arrive, before the client parses the body (up to a second for 60 days
    of minute candles, time in which the slot would otherwise stay blocked).

    One per session; a session serves one request at a time.
    """

    def __init__(self, session: requests.Session | None) -> None:
        self.slot: Slot | None = None
        if session is not None:
            session.hooks["response"].append(self)

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if self.slot is not None:
            self.slot.answered()
        return response


def api_key_hash(api_key: str) -> str:
    """A short, stable digest naming an api key's bucket, so Redis never holds the key itself."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


@dataclass
class RateLimiter:
    """At most `limit` grants per `window` seconds per bucket, across every process."""

    client: redis.Redis
    limit: int
    window: float = 1.0

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0:
            raise ValueError(f"need limit >= 1 and window > 0, got {self.limit}, {self.window}")
        self._acquire = self.client.register_script(_ACQUIRE_LUA)
        self._restamp = self.client.register_script(_RESTAMP_LUA)
        self._window_us = round(self.window * 1_000_000)

    def try_acquire(self, bucket: str, member: str | None = None) -> tuple[bool, float]:
        """One attempt: (True, grant time in Redis seconds) or (False, seconds to wait)."""
        granted, value = self._acquire(
            keys=[bucket], args=[self.limit, self._window_us, member or uuid.uuid4().hex]
        )
        return bool(granted), int(value) / 1_000_000

    def acquire(self, bucket: str, timeout: float = 60.0, member: str | None = None) -> float:
        """Block until a slot is free and take it; return the grant time (Redis clock, seconds).

        Raises RateLimitTimeout when no slot frees up within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            granted, value = self.try_acquire(bucket, member)
            if granted:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise RateLimitTimeout(
                    f"no rate-limit slot in {bucket} within {timeout:g}s "
                    f"({self.limit} per {self.window:g}s)"
                )
            # A little jitter spreads waiters that would otherwise all wake at the same instant
            # and race for one slot.
            time.sleep(min(left, value + random.uniform(0, 0.005)))

    def restamp(self, bucket: str, member: str) -> float:
        """Count the grant `member` from now on; return the new time (Redis clock, seconds)."""
        expire_ms = self._window_us // 1000 + 1000
        return int(self._restamp(keys=[bucket], args=[member, expire_ms])) / 1_000_000

    @contextmanager
    def slot(self, bucket: str, timeout: float = 60.0) -> Iterator[Slot]:
        """Hold a slot for one request; unless answered earlier, it counts from the block's end.

        Also on an error: a request that timed out may still have reached the server.
        """
        member = uuid.uuid4().hex
        held = Slot(self, bucket, member, self.acquire(bucket, timeout, member))
        try:
            yield held
        finally:
            held.answered()


@dataclass
class HistoricalLimiter:
    """Kite's historical-candle limit for each api key, shared by every worker process."""

    limiter: RateLimiter
    keys: RedisKeys
    timeout: float = 60.0

    def bucket(self, api_key: str) -> str:
        """The Redis key counting this api key's requests (named by a hash of the key)."""
        return self.keys.historical_bucket(api_key_hash(api_key))

    def acquire(self, api_key: str) -> float:
        """Wait for this api key's next historical request slot; return the grant time."""
        return self.limiter.acquire(self.bucket(api_key), self.timeout)

    @contextmanager
    def slot(self, api_key: str, hook: ReplyHook | None = None) -> Iterator[Slot]:
        """Hold this api key's next slot around one request, answered through `hook` if given."""
        with self.limiter.slot(self.bucket(api_key), self.timeout) as held:
            if hook is not None:
                hook.slot = held
            try:
                yield held
            finally:
                if hook is not None:
                    hook.slot = None


def historical_limiter(
    client: redis.Redis, keys: RedisKeys, per_second: int, timeout: float = 60.0
) -> HistoricalLimiter:
    """The limiter backfill uses: `per_second` requests per (1 s + safety) window per api key."""
    return HistoricalLimiter(RateLimiter(client, per_second, 1.0 + HISTORICAL_SAFETY), keys,
                             timeout)
