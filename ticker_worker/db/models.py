"""The schema as SQLAlchemy 2 typed models; Alembic migrations mirror it exactly.

`subscriptions`, `instruments` and `candles` are read by other services (DESIGN 4.6): their
names and contract columns do not change without a compatible path.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TZ = DateTime(timezone=True)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so constraint names are stable in migrations."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(Base):
    """A Kite Connect app + user session. Token and api secret are secrets: never log them."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    api_key: Mapped[str] = mapped_column(Text, unique=True)
    # None until the first `accounts login` / `set-token`.
    access_token: Mapped[str | None] = mapped_column(Text)
    # Fernet token of the api secret, keyed by TICKER_SECRET_KEY; never the plain text.
    api_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    healthy: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    unhealthy_reason: Mapped[str | None] = mapped_column(Text)
    token_updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # Kite's tokens die at the next 06:00 IST after they are issued.
    token_expires_at: Mapped[datetime | None] = mapped_column(TZ)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Instrument(Base):
    """One row of Kite's instrument dump (its 12 columns) plus our listing bookkeeping."""

    __tablename__ = "instruments"
    __table_args__ = (Index("ix_instruments_exchange_tradingsymbol", "exchange", "tradingsymbol"),)

    instrument_token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    exchange_token: Mapped[str] = mapped_column(Text)
    tradingsymbol: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text, server_default="")
    last_price: Mapped[float] = mapped_column(Double, server_default="0")
    expiry: Mapped[date | None] = mapped_column(Date)
    strike: Mapped[float] = mapped_column(Double, server_default="0")
    tick_size: Mapped[float] = mapped_column(Double, server_default="0")
    lot_size: Mapped[int] = mapped_column(Integer, server_default="0")
    instrument_type: Mapped[str] = mapped_column(Text, server_default="")
    segment: Mapped[str] = mapped_column(Text, server_default="")
    exchange: Mapped[str] = mapped_column(Text, server_default="")
    # False once a sync no longer finds the token in Kite's dump (an expired contract).
    listed: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    synced_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Subscription(Base):
    """Desired state (mode, wanted, generation) and observed state (status, placement, ticks)."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("mode IN ('ltp', 'quote', 'full')", name="mode"),
        CheckConstraint(
            "status IN ('pending', 'active', 'removed', 'queued', 'failed')", name="status"
        ),
        # The holder's incremental pass reads only rows whose desired state moved on.
        Index(
            "ix_subscriptions_dirty",
            "instrument_token",
            postgresql_where=text("generation <> observed_generation"),
        ),
        Index("ix_subscriptions_status", "status"),
    )

    instrument_token: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("instruments.instrument_token"), primary_key=True,
        autoincrement=False,
    )
    mode: Mapped[str] = mapped_column(Text)
    wanted: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    account: Mapped[str | None] = mapped_column(Text)
    connection: Mapped[int | None] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(BigInteger, server_default="1")
    observed_generation: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Status transitions so far; with the generation it derives each event's id.
    transitions: Mapped[int] = mapped_column(BigInteger, server_default="0")
    requested_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(TZ)
    removed_at: Mapped[datetime | None] = mapped_column(TZ)
    first_tick_at: Mapped[datetime | None] = mapped_column(TZ)
    last_tick_at: Mapped[datetime | None] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Candle(Base):
    """One historical candle; unique on (instrument_token, interval, ts)."""

    __tablename__ = "candles"

    instrument_token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    interval: Mapped[str] = mapped_column(Text, primary_key=True)
    ts: Mapped[datetime] = mapped_column(TZ, primary_key=True)
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume: Mapped[int] = mapped_column(BigInteger)
    oi: Mapped[int | None] = mapped_column(BigInteger)


class OutboxEvent(Base):
    """An event written in the same transaction as the change it reports, relayed afterwards."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_unpublished", "seq", postgresql_where=text("published_at IS NULL")),
    )

    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    event_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(TZ)


class HolderLease(Base):
    """The active holder's lease: one row, judged by the database's clock, fencing by epoch.

    Whoever holds an unexpired lease is the active holder; a standby takes an expired one and
    increments `epoch`, so every write a stale holder tries (conditional on its epoch) is refused.
    """

    __tablename__ = "holder_lease"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    holder_id: Mapped[str] = mapped_column(Text)
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(TZ)
    acquired_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class HolderProcess(Base):
    """Every running holder process, active or standby, as `status` shows it."""

    __tablename__ = "holders"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(Text, server_default="standby")
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    seen_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
