"""The command tasks of DESIGN 4.1. Domain errors fail at once; infrastructure errors retry."""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from celery import Task
from sqlalchemy.exc import OperationalError

from ticker_worker import commands
from ticker_worker.bootstrap import runtime
from ticker_worker.celery import app
from ticker_worker.errors import InfrastructureError, InvalidRequest

log = logging.getLogger(__name__)

RETRYABLE = (
    OperationalError,
    InfrastructureError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class CommandTask(Task):  # type: ignore[misc]
    """Retries with jittered backoff when Postgres or Redis is briefly unreachable.

    InvalidRequest is in `throws`: an expected failure, logged without a traceback, never retried.
    """

    autoretry_for = RETRYABLE
    retry_backoff = True
    retry_backoff_max = 30
    retry_jitter = True
    max_retries = 20
    throws = (InvalidRequest,)

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        log.debug("task %s started", self.name, extra={"task_id": task_id})



@app.task(name="ticker_worker.subscribe", base=CommandTask)
def subscribe(instrument_token: Any, mode: Any = "full") -> dict[str, object]:
    """Subscribe one instrument (idempotent)."""
    return commands.subscribe(runtime().engine, instrument_token, mode)


@app.task(name="ticker_worker.subscribe_many", base=CommandTask)
def subscribe_many(instrument_tokens: Any, mode: Any = "full") -> dict[str, list[Any]]:
    """Subscribe up to 27,000 instruments in one bulk write."""
    return commands.subscribe_many(runtime().engine, instrument_tokens, mode)


@app.task(name="ticker_worker.unsubscribe", base=CommandTask)
def unsubscribe(instrument_token: Any) -> dict[str, object]:
    """Unsubscribe one instrument (idempotent)."""
    return commands.unsubscribe(runtime().engine, instrument_token)


@app.task(name="ticker_worker.set_mode", base=CommandTask)
def set_mode(instrument_token: Any, mode: Any) -> dict[str, object]:
    """Change a subscribed instrument's mode."""
    return commands.set_mode(runtime().engine, instrument_token, mode)
