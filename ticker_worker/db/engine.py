"""Engine and session factories; called by the composition root, never at import."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(
    url: str, *, pool_size: int = 5, application_name: str = "ticker_worker",
    statement_timeout_ms: int = 30_000, lock_timeout_ms: int = 0, connect_timeout: int = 5,
    keepalives: bool = False, autocommit: bool = False,
) -> Engine:
    """A pooled engine. No pre-ping: it would cost a round trip on every subscribe. After a
    Postgres restart the first statement on a dead connection fails, SQLAlchemy drops the
    whole pool, and the caller retries (tasks back off; the holder reconciles again)."""
    # A statement that hangs on a lock fails instead of wedging a worker or the holder.
    options = f"-c statement_timeout={statement_timeout_ms}"
    if lock_timeout_ms:
        options += f" -c lock_timeout={lock_timeout_ms}"
    connect_args: dict[str, object] = {
        "application_name": application_name,
        "connect_timeout": connect_timeout,
        "options": options,
    }
    if keepalives:
        # Client-side limits for a long-running process: a partitioned server is noticed in
        # about 10 s (keepalives) and unacknowledged writes give up after 10 s, instead of
        # waiting for the kernel's two-hour defaults.
        connect_args.update(keepalives=1, keepalives_idle=5, keepalives_interval=2,
                            keepalives_count=3, tcp_user_timeout=10_000)
    # Autocommit set on the engine, not per checkout with execution_options(): the latter
    # resets the session on every return to the pool (SET SESSION CHARACTERISTICS + COMMIT),
    # a second round trip for every call.
    extra: dict[str, object] = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    return create_engine(
        url,
        **extra,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so results can be built from them."""
    return sessionmaker(engine, expire_on_commit=False)
