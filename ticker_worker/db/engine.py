"""Engine and session factories; called by the composition root, never at import."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, *, pool_size: int = 5, application_name: str = "ticker_worker"
) -> Engine:
    """A pooled engine. No pre-ping: it would cost a round trip on every subscribe. After a
    Postgres restart the first statement on a dead connection fails, SQLAlchemy drops the
    whole pool, and the caller retries (tasks back off; the holder reconciles again)."""
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={
            "application_name": application_name,
            "connect_timeout": 5,
            # A statement that hangs on a lock fails instead of wedging a worker or the holder.
            "options": "-c statement_timeout=30000",
        },
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so results can be built from them."""
    return sessionmaker(engine, expire_on_commit=False)
