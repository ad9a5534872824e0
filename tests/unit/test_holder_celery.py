"""The holder's Celery app sends backfills without listening for their results (each send would
otherwise subscribe the holder to a result channel it never drains), and without task-sent
events; the workers still store every result."""

from __future__ import annotations

from celery import Celery
from celery.backends.base import DisabledBackend

from ticker_worker.holder.main import configure_celery


def test_the_holder_sends_without_subscribing_to_results() -> None:
    app = Celery("holder-test", broker="memory://", backend="redis://127.0.0.1:1/0")
    configure_celery(app)
    assert isinstance(app.backend, DisabledBackend)
    assert app.conf.task_send_sent_event is False
    message = app.amqp.create_task_message("id-1", "ticker_worker.backfill", [1], {})
    assert not message.headers.get("ignore_result"), "the workers would not store the result"
