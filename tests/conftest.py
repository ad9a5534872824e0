"""Test wiring: a database and a Redis db number of the tests' own, real servers, never mocks.

The database is dropped and migrated afresh once per session; tables are truncated per test.
Under CI=true an unreachable service fails the run instead of skipping it. Without local
servers, the run starts embedded ones (tests/embedded_servers.py).
"""

from __future__ import annotations

import os

from tests.embedded_servers import ensure as ensure_servers
from tests.run import RUN_ID, RUN_SUFFIX

# The local servers on their default ports; on a machine with none, embedded ones (the same
# packages `ticker-worker up` uses), started for this run.
os.environ.setdefault(
    "DATABASE_URL",
    f"postgresql+psycopg2://postgres@{ensure_servers()[0]}/ticker_worker_test{RUN_SUFFIX}",
)
os.environ.setdefault("REDIS_URL", f"redis://{ensure_servers()[1]}/{15 - 2 * RUN_ID}")
os.environ.setdefault("TICKER_REDIS_PREFIX", f"ticker:test{RUN_SUFFIX}")
os.environ.setdefault("HOLDER_HTTP_PORT", "0")
os.environ.pop("CELERY_BROKER_URL", None)
os.environ.pop("CELERY_RESULT_BACKEND", None)

from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.brokers import broker_kind, broker_url, rabbitmq_url  # noqa: F401 - fixtures
from tests.browser import browser  # noqa: F401 - the headless Chromium fixture, for any test
from ticker_worker.bootstrap import Runtime, set_runtime
from ticker_worker.config import Settings, get_settings
from ticker_worker.db import migrate

TABLES = "subscriptions, outbox, candles, instruments, accounts, holder_lease, holders"

INSTRUMENTS = [
    # token, exchange_token, tradingsymbol, name, last_price, expiry, strike, tick, lot, type, seg, exch
    (256265, "1001", "NIFTY 50", "NIFTY 50", 0.0, None, 0.0, 0.05, 0, "EQ", "INDICES", "NSE"),
    (260105, "1016", "NIFTY BANK", "NIFTY BANK", 0.0, None, 0.0, 0.05, 0, "EQ", "INDICES", "NSE"),
    (408065, "1594", "INFY", "INFOSYS", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE"),
    (738561, "2885", "RELIANCE", "RELIANCE INDUSTRIES", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE"),
    (5633, "22", "ACC", "ACC", 0.0, None, 0.0, 0.05, 1, "EQ", "NSE", "NSE"),
]
EXPIRED_TOKEN = 12345602


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(scope="session")
def database(settings: Settings) -> str:
    """A freshly migrated test database; returns its URL."""
    url = make_url(settings.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    except Exception as exc:
        _fail_or_skip(f"Postgres unreachable at {url.host}:{url.port}: {exc}")
    finally:
        admin.dispose()
    migrate.upgrade(settings.database_url)
    return settings.database_url


@pytest.fixture(scope="session")
def session_runtime(settings: Settings, database: str) -> Iterator[Runtime]:
    rt = Runtime(settings=settings, application_name="tests")
    set_runtime(rt)
    yield rt
    rt.engine.dispose()
    set_runtime(None)


@pytest.fixture
def engine(session_runtime: Runtime) -> Iterator[Engine]:
    """The test engine over clean tables."""
    with session_runtime.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    yield session_runtime.engine


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    """The tests' own Redis db, flushed before each test."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        _fail_or_skip(f"Redis unreachable at {settings.redis_url}: {exc}")
    yield client
    client.close()


def insert_instruments(engine: Engine, rows: list[tuple[object, ...]] | None = None) -> None:
    """Put rows shaped like Kite's dump into the registry."""
    from ticker_worker.db.instruments import COLUMNS, upsert_batch

    with engine.begin() as conn:
        upsert_batch(conn, [dict(zip(COLUMNS, r, strict=True)) for r in (rows or INSTRUMENTS)])


@pytest.fixture
def registry(engine: Engine) -> Engine:
    """Clean tables with a small instrument registry, plus one expired (unlisted) contract."""
    import datetime as dt

    expired = (EXPIRED_TOKEN, "48224", "NIFTY20JAN12000CE", "NIFTY", 0.0, dt.date(2020, 1, 30),
               12000.0, 0.05, 75, "CE", "NFO-OPT", "NFO")
    insert_instruments(engine, [*INSTRUMENTS, expired])
    return engine
