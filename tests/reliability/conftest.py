"""Fixtures for the reliability tests: private servers, one simulator, processes per test.

Everything here is the tests' own: a private redis-server on a free port (the Redis-restart test
stops and starts it), a database of their own on the shared Postgres (the Postgres-restart test
runs a private cluster instead), and a Redis prefix of their own. The shared servers are never
stopped or flushed. Every process and server is stopped, and its files removed, even when a test
fails; a failing test prints the tail of each process's log.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import TABLES, _fail_or_skip, insert_instruments
from tests.e2e.stack import Holder, Listener, Sim, holder_env
from tests.procs import VENV_BIN, Proc, wait_for
from tests.reliability.brokers import broker  # noqa: F401 - fixture: the test's broker
from tests.reliability.servers import PostgresCluster, RedisServer, discard, tail
from tests.run import RUN_SUFFIX
from ticker_worker.db import migrate
from ticker_worker.db.engine import make_engine
from ticker_worker.keys import RedisKeys

PREFIX = f"ticker:rel{RUN_SUFFIX}"
KEYS = RedisKeys(PREFIX)
RELIABILITY_DB = f"ticker_worker_reliability{RUN_SUFFIX}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


# ---- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for the whole reliability session."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def rredis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private Redis, running and empty at the start of the test."""
    if not redis_server.running():
        redis_server.start()
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


def _recreate(url: str) -> None:
    u = make_url(url)
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def rdb_url(settings: Any) -> Iterator[str]:
    """A freshly migrated database of the reliability tests' own, on the shared Postgres."""
    url = make_url(settings.database_url).set(database=RELIABILITY_DB)
    rendered = url.render_as_string(hide_password=False)
    try:
        _recreate(rendered)
    except Exception as exc:  # under CI=true this fails the run, like the rest of the suite
        _fail_or_skip(f"Postgres unreachable at {url.host}:{url.port}: {exc}")
    migrate.upgrade(rendered)
    yield rendered
    with contextlib.suppress(Exception):
        _recreate(rendered)


@pytest.fixture(scope="session")
def rengine(rdb_url: str) -> Iterator[Engine]:
    engine = make_engine(rdb_url, application_name="reliability-tests")
    yield engine
    engine.dispose()


@pytest.fixture
def db(rengine: Engine) -> Engine:
    """The reliability database with empty tables."""
    with rengine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    return rengine


@pytest.fixture
def pg_cluster() -> Iterator[PostgresCluster]:
    """A private, started Postgres cluster; stopped and deleted afterwards."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


# ---- the simulator and the registry ---------------------------------------------------------


@pytest.fixture(scope="session")
def sim() -> Iterator[Sim]:
    server = Sim(tick_interval=0.2)
    try:
        yield server
    finally:
        discard(server.proc)


@pytest.fixture(scope="session")
def universe(sim: Sim) -> list[dict[str, Any]]:
    from kiteconnect import KiteConnect

    return KiteConnect("k", "t", root=sim.http).instruments()


def load_registry(engine: Engine, universe: list[dict[str, Any]], n: int = 240) -> list[int]:
    """Put the two big indices and `n` NSE equities of the simulator in the registry."""
    from ticker_worker.db.instruments import COLUMNS

    nse = [r for r in universe if r["exchange"] == "NSE" and r["instrument_type"] == "EQ"
           and r["segment"] == "NSE"][:n]
    indices = [r for r in universe if r["instrument_token"] in (256265, 260105)]
    insert_instruments(engine, [tuple(r[c] for c in COLUMNS) for r in indices + nse])
    return [r["instrument_token"] for r in nse]


@pytest.fixture
def stocks(db: Engine, universe: list[dict[str, Any]], sim: Sim) -> list[int]:
    """240 NSE equity tokens in the registry; the simulator reset (no keys, no sockets)."""
    tokens = load_registry(db, universe)
    sim.call("POST", "/_sim/reset")
    return tokens


# ---- processes ------------------------------------------------------------------------------


class QuietListener(Listener):
    """The e2e Listener, whose thread ends quietly when Redis goes away under it."""

    def __init__(self, client: redis.Redis, *channels: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.messages: dict[str, list[Any]] = {c: [] for c in channels}
        self.lock = threading.Lock()
        self.pubsub.subscribe(**{c: self._handler(c) for c in channels})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.01, daemon=True,
                                                exception_handler=self._gone)

    @staticmethod
    def _gone(exc: BaseException, pubsub: Any, thread: Any) -> None:
        thread.stop()


class TrackedHolder(Holder):
    """The e2e Holder, registered for cleanup before it is waited for."""

    def __init__(self, env: dict[str, str], procs: list[Proc]) -> None:
        self.env, self.port = env, int(env["HOLDER_HTTP_PORT"])
        self.proc = Proc("holder", [sys.executable, "-m", "ticker_worker.cli", "holder"], env)
        procs.append(self.proc)
        wait_for(lambda: self.health() is not None or not self.proc.alive(), 30, "the holder")
        assert self.proc.alive(), self.proc.output()


class Stack:
    """Starts holders and workers against given servers; stops them all at the end."""

    def __init__(self, sim: Sim, database_url: str, redis_url: str) -> None:
        self.sim, self.database_url, self.redis_url = sim, database_url, redis_url
        self.procs: list[Proc] = []
        self.listeners: list[Listener] = []

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url,
                "CELERY_BROKER_URL": self.redis_url, "CELERY_RESULT_BACKEND": self.redis_url,
                "TICKER_REDIS_PREFIX": PREFIX, "LOG_LEVEL": "INFO"}

    def holder(self, **extra: object) -> Holder:
        """`ticker-worker holder` (the e2e helper's settings: 2 s watchdog, 1 s timer)."""
        env = {**holder_env(self.sim, **extra), **self.env()}
        return TrackedHolder(env, self.procs)

    def worker(self, queues: str = "celery", concurrency: int = 2, name: str = "worker",
               app: str = "ticker_worker", wait: bool = True, **extra: str) -> Proc:
        proc = Proc(name, [
            str(VENV_BIN / "celery"), "-A", app, "worker", "-Q", queues, "-P", "threads",
            "-c", str(concurrency), "--without-mingle", "--without-gossip", "-n",
            f"{name}@%h", "-l", "INFO"], {**self.env(), **extra})
        self.procs.append(proc)
        if wait:
            wait_for(lambda: "ready" in proc.output() or not proc.alive(), 60, f"{name} ready")
            assert proc.alive(), proc.output()
        return proc

    def listen(self, client: redis.Redis, *channels: str) -> Listener:
        lst = QuietListener(client, *(channels or (KEYS.events, KEYS.ticks)))
        self.listeners.append(lst)
        return lst

    def close(self, show: bool) -> None:
        for lst in self.listeners:
            with contextlib.suppress(Exception):
                lst.stop()
        for proc in self.procs:
            started = time.monotonic()
            with contextlib.suppress(Exception):
                proc.stop()
            took = time.monotonic() - started
            if took > 5:
                print(f"\n{proc.name} took {took:.1f}s to stop (exit {proc.popen.returncode})")
                show = True
            if show:
                print(f"\n===== {proc.name} (exit {proc.popen.returncode}) =====\n"
                      f"{tail(proc.output(), 80)}")
            discard(proc)


@pytest.fixture
def stack(request: pytest.FixtureRequest, sim: Sim, db: Engine, rdb_url: str,
          rredis: redis.Redis, redis_server: RedisServer) -> Iterator[Stack]:
    """Holders and workers on the reliability database and the private Redis."""
    s = Stack(sim, rdb_url, redis_server.url)
    yield s
    s.close(_failed(request))


@pytest.fixture
def pg_engine(pg_cluster: PostgresCluster) -> Iterator[Engine]:
    url = pg_cluster.url("ticker_worker")
    migrate.upgrade(url)
    engine = make_engine(url, application_name="reliability-tests")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_stack(request: pytest.FixtureRequest, sim: Sim, pg_cluster: PostgresCluster,
             pg_engine: Engine, rredis: redis.Redis, redis_server: RedisServer
             ) -> Iterator[Stack]:
    """Holders and workers on a private Postgres cluster (for tests that stop or freeze it)."""
    s = Stack(sim, pg_cluster.url("ticker_worker"), redis_server.url)
    yield s
    s.close(_failed(request))
    if _failed(request):
        print(f"\n===== private postgres log =====\n{pg_cluster.log()[-4000:]}")


# ---- checks shared by the tests -------------------------------------------------------------


def placement(sim: Sim) -> Counter[int]:
    """How many simulator connections hold each token, over every api key."""
    return Counter(t for conns in sim.token_lists().values() for tokens in conns for t in tokens)


def streaming_once(sim: Sim, tokens: list[int]) -> bool:
    where = placement(sim)
    return all(where[t] == 1 for t in tokens)


def ticked(listener: Listener, tokens: list[int]) -> bool:
    seen = {t["instrument_token"] for frame in listener.get(KEYS.ticks) for t in frame}
    return set(tokens) <= seen


def rows(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.instrument_token: r for r in conn.execute(text("SELECT * FROM subscriptions"))}


def outbox(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT event_id::text AS event_id, event_type, payload, published_at "
            "FROM outbox ORDER BY seq")))


def stream_events(client: redis.Redis) -> list[dict[str, Any]]:
    import orjson

    return [orjson.loads(fields[b"event"]) for _, fields in client.xrange(KEYS.events_stream)]


def all_active(engine: Engine, tokens: list[int]) -> bool:
    current = rows(engine)
    return all(t in current and current[t].status == "active" for t in tokens)


def outbox_delivered(engine: Engine, client: redis.Redis, lost: set[str] = frozenset()) -> bool:
    """Every outbox row is marked published and its event_id is in the stream.

    `lost`: event ids published before a Redis restart without persistence wiped the stream.
    """
    box = outbox(engine)
    if any(r.published_at is None for r in box):
        return False
    in_stream = {e["event_id"] for e in stream_events(client)}
    return {r.event_id for r in box} - set(lost) <= in_stream


def created_in_stream(client: redis.Redis) -> Counter[int]:
    return Counter(e["instrument_token"] for e in stream_events(client)
                   if e["event_type"] == "subscription_created")
