"""The backfill task of DESIGN 4.1, routed to the `backfill` queue by celeryconfig."""

from __future__ import annotations

from typing import Any

import requests
from celery import Task
from kiteconnect import exceptions as kite_errors

from ticker_worker import backfill as service
from ticker_worker.bootstrap import runtime
from ticker_worker.celery import app
from ticker_worker.errors import HistoricalAccessDenied, InvalidRequest, NoHealthyAccount
from ticker_worker.tasks.command_tasks import RETRYABLE

# Kite answers 429 with NetworkException; DataException is a bad gateway reply; the client lets
# requests' connection errors through unwrapped. All pass, so each retries with backoff.
KITE_RETRYABLE = (
    kite_errors.NetworkException,
    kite_errors.DataException,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


class BackfillTask(Task):  # type: ignore[misc]
    """The command tasks' retry policy plus Kite's transient failures.

    A retry resumes after the newest stored candle, so the work already done is kept. Bad input
    and accounts that cannot be used fail at once with their reason and are not retried.
    """

    autoretry_for = (*RETRYABLE, *KITE_RETRYABLE)
    retry_backoff = True
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 20
    throws = (InvalidRequest, NoHealthyAccount, HistoricalAccessDenied)


@app.task(name="ticker_worker.backfill", base=BackfillTask, bind=True)
def backfill(
    self: Task, instrument_token: Any, interval: Any = None, days: Any = None, *,
    start: Any = None, end: Any = None,
) -> dict[str, object]:
    """Fetch and store the candles missing for one instrument, or of one gap window.

    Idempotent: a second delivery of the same task id calls Kite no more. The window is
    keyword-only (`kwargs={"start": ..., "end": ...}`), so a misplaced positional is refused.
    """
    return service.run(runtime(), instrument_token, interval, days, task_id=self.request.id,
                       start=start, end=end)
