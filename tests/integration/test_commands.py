"""The command handlers on real Postgres: desired state, idempotency, validation, the nudge."""

from __future__ import annotations

import select
from typing import Any

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from tests.conftest import EXPIRED_TOKEN
from ticker_worker import commands
from ticker_worker.errors import InstrumentExpired, InvalidRequest, UnknownInstrument
from ticker_worker.keys import NUDGE_CHANNEL


def rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT instrument_token, mode, status, wanted, generation FROM subscriptions "
            "ORDER BY instrument_token")))


def test_subscribe_writes_pending_row(registry: Engine) -> None:
    result = commands.subscribe(registry, 256265, "FULL")
    assert result == {"instrument_token": 256265, "mode": "full", "status": "pending",
                      "changed": True}
    assert [(r.instrument_token, r.mode, r.status, r.wanted) for r in rows(registry)] == [
        (256265, "full", "pending", True)]


def test_same_subscribe_twice_is_one_subscription(registry: Engine) -> None:
    commands.subscribe(registry, 256265)
    again = commands.subscribe(registry, 256265)
    assert again["changed"] is False
    assert [r.generation for r in rows(registry)] == [1]


def test_mode_change_through_subscribe_bumps_generation(registry: Engine) -> None:
    commands.subscribe(registry, 408065, "ltp")
    assert commands.subscribe(registry, 408065, "quote")["changed"] is True
    assert [(r.mode, r.generation) for r in rows(registry)] == [("quote", 2)]


def test_unknown_instrument_is_refused(registry: Engine) -> None:
    with pytest.raises(UnknownInstrument, match="999999"):
        commands.subscribe(registry, 999999)
    assert rows(registry) == []


def test_empty_registry_says_to_sync(engine: Engine) -> None:
    with pytest.raises(UnknownInstrument, match="ticker-worker instruments sync"):
        commands.subscribe(engine, 256265)


def test_expired_contract_is_refused_with_reason(registry: Engine) -> None:
    with pytest.raises(InstrumentExpired, match="expired on 2020-01-30"):
        commands.subscribe(registry, EXPIRED_TOKEN)
    assert rows(registry) == []


def test_unsubscribe_and_set_mode(registry: Engine) -> None:
    commands.subscribe(registry, 5633, "quote")
    assert commands.set_mode(registry, 5633, "LTP")["changed"] is True
    assert commands.set_mode(registry, 5633, "ltp")["changed"] is False
    assert commands.unsubscribe(registry, 5633)["changed"] is True
    assert commands.unsubscribe(registry, 5633)["changed"] is False
    with pytest.raises(InvalidRequest, match="not subscribed"):
        commands.set_mode(registry, 5633, "full")
    assert [(r.wanted, r.generation) for r in rows(registry)] == [(False, 3)]


def test_subscribe_many_reports_rejections(registry: Engine) -> None:
    result = commands.subscribe_many(
        registry, [256265, "x", 408065, 999999, EXPIRED_TOKEN, 256265, -5], "quote")
    assert result["accepted"] == [256265, 408065]
    bad = {str(r["instrument_token"]): r["error"] for r in result["rejected"]}
    assert set(bad) == {"x", "999999", str(EXPIRED_TOKEN), "-5"}
    assert "expired" in bad[str(EXPIRED_TOKEN)]
    assert len(rows(registry)) == 2


def test_subscribe_many_bulk_27000(engine: Engine) -> None:
    from tests.conftest import insert_instruments

    tokens = [(i << 8) | 1 for i in range(1, 27_001)]
    insert_instruments(engine, [(t, str(t >> 8), f"S{t}", "", 0.0, None, 0.0, 0.05, 1, "EQ",
                                 "NSE", "NSE") for t in tokens])
    result = commands.subscribe_many(engine, tokens, "ltp")
    assert len(result["accepted"]) == 27_000 and result["rejected"] == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM subscriptions")).scalar() == 27_000


def _listen(database_url: str) -> Any:
    dsn = database_url.replace("postgresql+psycopg2", "postgresql")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    conn.cursor().execute(f"LISTEN {NUDGE_CHANNEL}")
    return conn


def _nudged(conn: Any, timeout: float = 0.5) -> bool:
    select.select([conn], [], [], timeout)
    conn.poll()
    got = bool(conn.notifies)
    conn.notifies.clear()
    return got


def test_nudge_only_after_a_real_change(registry: Engine, database: str) -> None:
    listener = _listen(database)
    try:
        commands.subscribe(registry, 256265)
        assert _nudged(listener)
        commands.subscribe(registry, 256265)
        assert not _nudged(listener, 0.2)
        with pytest.raises(UnknownInstrument):
            commands.subscribe(registry, 424242)
        assert not _nudged(listener, 0.2)
    finally:
        listener.close()


def test_rolled_back_change_never_nudges(registry: Engine, database: str) -> None:
    from ticker_worker.db import subscriptions

    listener = _listen(database)
    try:
        with registry.connect() as conn, conn.begin() as tx:
            subscriptions.upsert_wanted(conn, [408065], "full")
            tx.rollback()
        assert not _nudged(listener, 0.3)
        assert rows(registry) == []
    finally:
        listener.close()


junk = st.one_of(
    st.none(), st.booleans(), st.floats(), st.text(max_size=20), st.binary(max_size=8),
    st.integers(max_value=0), st.integers(min_value=2**32), st.lists(st.integers(max_value=0), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(token=junk, mode=st.one_of(junk, st.sampled_from(["full", "bogus"])))
def test_fuzzed_bad_input_changes_nothing(registry: Engine, token: Any, mode: Any) -> None:
    before = rows(registry)
    for call in (
        lambda: commands.subscribe(registry, token, mode),
        lambda: commands.unsubscribe(registry, token),
        lambda: commands.set_mode(registry, token, mode),
        lambda: commands.subscribe_many(registry, token, mode),
    ):
        try:
            call()
        except InvalidRequest as exc:
            assert str(exc)
    assert rows(registry) == before
