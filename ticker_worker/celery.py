"""The Celery app, found by `celery -A ticker_worker`. Building it opens no connection."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_process_init

from ticker_worker.bootstrap import runtime
from ticker_worker.config import get_settings
from ticker_worker.logs import setup_logging as _setup_logging

app = Celery("ticker_worker")
app.config_from_object("celeryconfig")


@setup_logging.connect
def _configure_logging(**_: Any) -> None:
    settings = get_settings()
    _setup_logging(settings.log_format, settings.log_level, process="worker")


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled Postgres and Redis connections must not cross fork().
    runtime().reset()
