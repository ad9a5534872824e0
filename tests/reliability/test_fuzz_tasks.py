"""Fault 7: junk arguments sent by name to every task, through a real worker.

Proves: each call fails at once (no retry) with an error of the InvalidRequest family (or a
TypeError for a wrong argument list) whose message names the offending value, and leaves the
database exactly as it was (subscriptions, outbox, candles, accounts, instruments). The one
contract exception is `subscribe_many`, which reports bad items per token instead of failing:
with nothing valid in the list it accepts nothing and rejects every item, naming it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.conftest import EXPIRED_TOKEN, insert_instruments
from tests.e2e.stack import Sim, add_accounts
from tests.procs import Proc, wait_for
from tests.reliability.conftest import Stack, load_registry
from tests.reliability.servers import RedisServer, discard, tail
from ticker_worker import commands

pytestmark = pytest.mark.e2e

MODES = {"ltp", "quote", "full"}
INTERVALS = {"minute", "3minute", "5minute", "10minute", "15minute", "30minute", "60minute",
             "day"}
ARITY = object()  # the culprit of a wrong argument list: the message must say so


class Items(list):  # type: ignore[type-arg]
    """The culprit of a subscribe_many call whose list holds nothing valid."""
DOMAIN_ERRORS = {"InvalidRequest", "InvalidToken", "InvalidMode", "UnknownInstrument",
                 "InstrumentExpired", "InvalidInterval", "InvalidDays", "InvalidWindow"}
FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

# ---- the stack: one worker for the module, state reset per test ------------------------------


class Fuzz:
    def __init__(self, engine: Engine, client: Celery, worker: Proc) -> None:
        self.engine, self.client, self.worker = engine, client, worker
        self.registry: list[int] = []
        self.subscribed: list[int] = []
        self.before: dict[str, list[tuple[Any, ...]]] = {}

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.engine.connect() as conn:
            return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2"))]
                    for t in ("subscriptions", "outbox", "candles", "accounts", "instruments")}

    def call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> tuple[str, Any]:
        result = self.client.send_task(name, args=args, kwargs=kwargs)
        value = result.get(timeout=60, propagate=False)
        return result.state, value


@pytest.fixture(scope="module")
def fuzz_worker(sim: Sim, rdb_url: str, redis_server: RedisServer) -> Iterator[tuple[Proc, Celery]]:
    if not redis_server.running():
        redis_server.start()
    with redis_server.client() as c:
        c.flushall()
    stack = Stack(sim, rdb_url, redis_server.url)
    worker = Proc("fuzz-worker", [
        str(__import__("tests.procs", fromlist=["VENV_BIN"]).VENV_BIN / "celery"), "-A",
        "ticker_worker", "worker", "-Q", "celery,backfill", "-P", "threads", "-c", "2",
        "--without-mingle", "--without-gossip", "-n", "fuzz@%h", "-l", "INFO",
    ], {**stack.env(), "KITE_API_ROOT": sim.http, "KITE_WS_ROOT": sim.ws})
    client = Celery(broker=redis_server.url, backend=redis_server.url)
    try:
        wait_for(lambda: "ready" in worker.output() or not worker.alive(), 60, "the worker")
        assert worker.alive(), worker.output()
        yield worker, client
        assert worker.output().count("Retry in") == 0, "a task with junk input was retried"
    finally:
        client.close()
        worker.stop()
        discard(worker)


@pytest.fixture
def fuzz(request: pytest.FixtureRequest, fuzz_worker: tuple[Proc, Celery], db: Engine,
         universe: list[dict[str, Any]]) -> Iterator[Fuzz]:
    worker, client = fuzz_worker
    f = Fuzz(db, client, worker)
    f.registry = [*load_registry(db, universe, 20), 256265, 260105]
    expired = (EXPIRED_TOKEN, "48224", "NIFTY20JAN12000CE", "NIFTY", 0.0,
               dt.date(2020, 1, 30), 12000.0, 0.05, 75, "CE", "NFO-OPT", "NFO")
    insert_instruments(db, [expired])
    add_accounts(db, 1)
    f.subscribed = f.registry[:5]
    commands.subscribe_many(db, f.subscribed, "quote")
    with db.begin() as conn:
        conn.execute(text(
            "INSERT INTO candles (instrument_token, interval, ts, open, high, low, close, volume,"
            " oi) SELECT :t, 'minute', now() - make_interval(mins => g), 1, 2, 0.5, 1.5, 10, 0 "
            "FROM generate_series(1, 3) g"), {"t": f.registry[0]})
    f.before = f.dump()
    yield f
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\n===== fuzz worker =====\n{tail(worker.output(), 60)}")


# ---- the junk -------------------------------------------------------------------------------

leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
anything = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=4), inner, max_size=3), max_leaves=5)


def is_mode(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in MODES


def is_interval(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lower() in INTERVALS


def is_instant(v: Any) -> bool:
    try:
        return isinstance(v, str) and dt.datetime.fromisoformat(v).utcoffset() is not None
    except ValueError:
        return False


def is_days(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 2000


def junk_tokens(known: list[int], unknown_ints: bool = True) -> st.SearchStrategy[Any]:
    """Values that are never a usable instrument token."""
    options = [
        st.none(), st.booleans(), st.floats(), st.text(max_size=12),
        st.integers(max_value=0), st.integers(min_value=2**32),
        st.lists(leaf, max_size=3), st.dictionaries(st.text(max_size=4), leaf, max_size=2),
        st.sampled_from([str(t) for t in known]),      # numeric strings of real tokens
        st.sampled_from([float(t) for t in known]),    # and floats
        st.sampled_from([True, False, 1.0, "256265", " 256265", "0x3e909"]),
    ]
    if unknown_ints:
        options.append(st.integers(1, 2**32 - 1).filter(lambda t: t not in known))
    return st.one_of(options)


junk_modes = anything.filter(lambda v: not is_mode(v))
modes = st.sampled_from(["ltp", "quote", "full", "FULL", " Ltp "])


def wrong_arity(known: list[int], params: tuple[str, ...]) -> st.SearchStrategy[Any]:
    extra_kw = st.text(min_size=1, max_size=8).filter(lambda k: k not in params)
    return st.one_of(
        st.just(([], {}, ARITY)),
        st.tuples(st.sampled_from(known), st.lists(leaf, min_size=len(params),
                                                    max_size=len(params) + 2)).map(
            lambda x: ([x[0], *x[1]], {}, ARITY)),
        st.tuples(st.sampled_from(known), extra_kw, leaf).map(
            lambda x: ([x[0]], {x[1]: x[2]}, ARITY)),
    )


# ---- the checks -----------------------------------------------------------------------------


def assert_clean_failure(state: str, exc: Any, culprit: Any) -> None:
    assert state == "FAILURE", f"junk accepted: {state} {exc!r}"
    name, message = type(exc).__name__, str(exc)
    if culprit is ARITY:
        assert name == "TypeError" and "argument" in message, (name, message)
        return
    assert name in DOMAIN_ERRORS, f"unclear error for {culprit!r}: {name}: {message}"
    if isinstance(culprit, type):
        assert culprit.__name__ in message, message
    elif isinstance(culprit, float) and math.isnan(culprit):
        assert "nan" in message, message
    else:
        assert repr(culprit) in message or str(culprit) in message, (culprit, message)


def same_db(fuzz: Fuzz) -> None:
    after = fuzz.dump()
    for table, rows in fuzz.before.items():
        assert after[table] == rows, f"{table} changed"


# ---- one test per task ----------------------------------------------------------------------


def test_fuzz_subscribe(fuzz: Fuzz) -> None:
    known = fuzz.registry

    @FUZZ
    @given(st.one_of(
        junk_tokens(known).map(lambda t: ([t], {}, t)),
        st.tuples(junk_tokens(known), modes).map(lambda x: ([x[0], x[1]], {}, x[0])),
        st.just(([EXPIRED_TOKEN], {}, EXPIRED_TOKEN)),
        st.tuples(st.sampled_from(known), junk_modes).map(lambda x: ([x[0], x[1]], {}, x[1])),
        st.tuples(st.sampled_from(known), junk_modes).map(
            lambda x: ([], {"instrument_token": x[0], "mode": x[1]}, x[1])),
        wrong_arity(known, ("instrument_token", "mode")),
    ))
    @example(([None], {}, None))
    @example(([256265, "fulll"], {}, "fulll"))
    def check(call: tuple[list[Any], dict[str, Any], Any]) -> None:
        args, kwargs, culprit = call
        state, exc = fuzz.call("ticker_worker.subscribe", args, kwargs)
        assert_clean_failure(state, exc, culprit)
        same_db(fuzz)

    check()


def test_fuzz_unsubscribe(fuzz: Fuzz) -> None:
    known = [*fuzz.registry, EXPIRED_TOKEN]

    @FUZZ
    @given(st.one_of(
        junk_tokens(known).map(lambda t: ([t], {}, t)),
        wrong_arity(known, ("instrument_token",)),
    ))
    def check(call: tuple[list[Any], dict[str, Any], Any]) -> None:
        args, kwargs, culprit = call
        state, exc = fuzz.call("ticker_worker.unsubscribe", args, kwargs)
        assert_clean_failure(state, exc, culprit)
        same_db(fuzz)

    check()


def test_fuzz_set_mode(fuzz: Fuzz) -> None:
    known = [*fuzz.registry, EXPIRED_TOKEN]
    unsubscribed = [t for t in fuzz.registry if t not in fuzz.subscribed]

    @FUZZ
    @given(st.one_of(
        st.tuples(junk_tokens(known), modes).map(lambda x: ([x[0], x[1]], {}, x[0])),
        st.tuples(st.sampled_from(fuzz.subscribed), junk_modes).map(
            lambda x: ([x[0], x[1]], {}, x[1])),
        st.tuples(st.sampled_from(unsubscribed), modes).map(lambda x: ([x[0], x[1]], {}, x[0])),
        wrong_arity(known, ("instrument_token", "mode")),
    ))
    def check(call: tuple[list[Any], dict[str, Any], Any]) -> None:
        args, kwargs, culprit = call
        state, exc = fuzz.call("ticker_worker.set_mode", args, kwargs)
        assert_clean_failure(state, exc, culprit)
        same_db(fuzz)

    check()


def test_fuzz_subscribe_many(fuzz: Fuzz) -> None:
    known = fuzz.registry

    @FUZZ
    @given(st.one_of(
        # Not a list at all: the task fails, naming the type it got.
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                  st.dictionaries(st.text(max_size=3), leaf, max_size=2)).map(
            lambda v: ([v, "full"], {}, type(v))),
        # A list with nothing valid in it: accepted nothing, every item rejected by name.
        st.lists(junk_tokens(known), max_size=6).map(
            lambda items: ([items, "ltp"], {}, Items(items))),
        st.tuples(st.lists(st.sampled_from(known), max_size=4), junk_modes).map(
            lambda x: ([x[0], x[1]], {}, x[1])),
        wrong_arity(known, ("instrument_tokens", "mode")),
    ))
    @example(([list(range(1, 27_002)), "full"], {}, "27000"))
    def check(call: tuple[list[Any], dict[str, Any], Any]) -> None:
        args, kwargs, culprit = call
        state, value = fuzz.call("ticker_worker.subscribe_many", args, kwargs)
        if isinstance(culprit, Items):
            assert state == "SUCCESS", (state, value)
            assert value["accepted"] == []
            rejected = {json.dumps(r["instrument_token"], sort_keys=True): r["error"]
                        for r in value["rejected"]}
            for item in culprit:
                key = json.dumps(item, sort_keys=True)
                assert key in rejected, f"{item!r} neither accepted nor rejected: {value}"
                assert rejected[key], f"no reason given for {item!r}"
        elif culprit == "27000":
            assert state == "FAILURE" and "27000" in str(value), value
        else:
            assert_clean_failure(state, value, culprit)
        same_db(fuzz)

    check()


def test_fuzz_backfill(fuzz: Fuzz) -> None:
    known = fuzz.registry
    junk_intervals = anything.filter(lambda v: v is not None and not is_interval(v))
    junk_days = anything.filter(lambda v: v is not None and not is_days(v))
    # A gap window's bounds: anything but an ISO-8601 instant with an offset (None: no window).
    junk_instants = st.one_of(anything.filter(lambda v: v is not None and not is_instant(v)),
                              st.sampled_from(["2025-03-07T10:00:00", "2025-03-07", "yesterday",
                                               "10:00+05:30"]))

    @FUZZ
    @given(st.one_of(
        junk_tokens(known, unknown_ints=False).map(lambda t: ([t], {}, t)),
        st.tuples(st.sampled_from(known), junk_intervals).map(lambda x: ([x[0], x[1]], {}, x[1])),
        st.tuples(st.sampled_from(known), junk_days).map(
            lambda x: ([x[0]], {"interval": "day", "days": x[1]}, x[1])),
        st.tuples(st.sampled_from(known), junk_instants).map(
            lambda x: ([x[0]], {"start": x[1]}, x[1])),
        st.tuples(st.sampled_from(known), junk_instants).map(
            lambda x: ([x[0]], {"start": "2025-03-07T10:00:00+05:30", "end": x[1]}, x[1])),
        wrong_arity(known, ("instrument_token", "interval", "days")),
    ))
    def check(call: tuple[list[Any], dict[str, Any], Any]) -> None:
        args, kwargs, culprit = call
        state, exc = fuzz.call("ticker_worker.backfill", args, kwargs)
        assert_clean_failure(state, exc, culprit)
        same_db(fuzz)

    check()
    # A well-formed token missing from the registry: Kite (the simulator) refuses it.
    state, exc = fuzz.call("ticker_worker.backfill", [987654321], {})
    assert state == "FAILURE" and "987654321" in str(exc), exc
    same_db(fuzz)
