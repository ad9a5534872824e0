"""Alembic: up, down to base and up again on an empty database; models match migrations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tests.run import RUN_SUFFIX
from ticker_worker.config import Settings
from ticker_worker.db import migrate
from ticker_worker.db.models import Base

CONTRACT = {
    "candles": {"instrument_token", "interval", "ts", "open", "high", "low", "close", "volume",
                "oi"},
    "subscriptions": {"instrument_token", "mode", "status", "account", "connection", "reason",
                      "requested_at", "activated_at", "first_tick_at", "last_tick_at"},
    "instruments": {"instrument_token", "exchange_token", "tradingsymbol", "name", "last_price",
                    "expiry", "strike", "tick_size", "lot_size", "instrument_type", "segment",
                    "exchange"},
}


@pytest.fixture
def empty_db(settings: Settings) -> Iterator[str]:
    url = make_url(settings.database_url).set(database=f"ticker_worker_migrations_test{RUN_SUFFIX}")
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    rendered = url.render_as_string(hide_password=False)
    yield rendered
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def test_upgrade_downgrade_upgrade(empty_db: str) -> None:
    migrate.upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        assert set(inspect(engine).get_table_names()) >= {"accounts", "instruments",
                                                          "subscriptions", "candles", "outbox"}
        migrate.downgrade(empty_db, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate.upgrade(empty_db)
        for table, columns in CONTRACT.items():
            assert columns <= {c["name"] for c in inspect(engine).get_columns(table)}
        uniques = inspect(engine).get_pk_constraint("candles")["constrained_columns"]
        assert uniques == ["instrument_token", "interval", "ts"]
    finally:
        engine.dispose()


def test_models_and_migrations_agree(empty_db: str) -> None:
    migrate.upgrade(empty_db)
    engine = create_engine(empty_db)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        command.check(migrate.alembic_config(empty_db))
    finally:
        engine.dispose()
