"""The composition root: builds engines and clients from Settings. Nothing connects at import."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import redis
from sqlalchemy import Engine

from ticker_worker.config import Settings, get_settings
from ticker_worker.db.engine import make_engine
from ticker_worker.keys import RedisKeys


@dataclass
class Runtime:
    """Lazily built connections for one process. Rebuild (`reset`) after a fork."""

    settings: Settings = field(default_factory=get_settings)
    application_name: str = "ticker_worker"

    @cached_property
    def engine(self) -> Engine:
        """The pooled Postgres engine."""
        return make_engine(self.settings.database_url, application_name=self.application_name)

    @cached_property
    def autocommit(self) -> Engine:
        """The same pool in autocommit mode, for work that is one statement per transaction.

        psycopg2 otherwise sends BEGIN, the statement and COMMIT as three round trips.
        """
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @cached_property
    def redis(self) -> redis.Redis:
        """A Redis client with timeouts, so a dead server fails fast instead of hanging."""
        return redis.Redis.from_url(
            self.settings.redis_url, socket_timeout=5, socket_connect_timeout=5,
            health_check_interval=15,
        )

    @cached_property
    def keys(self) -> RedisKeys:
        """Redis names under the configured prefix."""
        return RedisKeys(self.settings.ticker_redis_prefix)

    def reset(self) -> None:
        """Forget connections inherited across fork(); they are rebuilt on first use."""
        self.__dict__.pop("autocommit", None)
        engine = self.__dict__.pop("engine", None)
        if engine is not None:
            engine.dispose(close=False)
        self.__dict__.pop("redis", None)


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Replace the process runtime (tests, and `worker_process_init` after fork)."""
    global _runtime
    _runtime = value
