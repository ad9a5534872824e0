"""Celery settings for ticker_worker. Each non-obvious one says why.

See ../shared/reference/celery_redis_postgres.md for the semantics these rely on.
"""

from kombu import Exchange, Queue

from ticker_worker.config import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
# Results stay on Redis whatever the broker (ticker_worker.config derives it).
result_backend = _settings.celery_result_backend
_AMQP = broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
enable_utc = True
timezone = "UTC"

# Commands stay on Celery's default queue ("celery"), so a caller that knows only the broker
# URL and a task name (send_task without options) is served. Backfills get their own queue and
# workers, so a backlog of rate-limited history requests never delays a subscribe.
#
# Gap backfills (the holder enqueues them after an outage) have a third queue and their own
# worker: a long backlog of them never delays a command or a new subscription's backfill.
task_default_queue = "celery"
task_routes = {"ticker_worker.backfill": {"queue": "backfill"}}
QUEUES = ("celery", "backfill", "backfill_gaps")


def _queues() -> list[Queue]:
    if not _AMQP:
        return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES]
    # RabbitMQ: durable quorum queues (replicated, and a consumer's ack is atomic with the
    # delivery, unlike kombu's Redis emulation). They hang off a topic exchange of our own
    # because Celery's native delayed delivery (retry countdowns on quorum queues) cannot
    # route through a direct one, and because a bare caller declares `celery` as direct.
    exchange = Exchange("ticker_worker", type="topic", durable=True)
    return [Queue(name, exchange, routing_key=name, durable=True,
                  queue_arguments={"x-queue-type": "quorum"}) for name in QUEUES]


# A bare caller on RabbitMQ declares `celery` on its first send_task, so it must declare it as
# the quorum queue it is: `task_default_queue_type="quorum"` in its config (README).
task_queues = _queues()

# Every task is idempotent (an upsert keyed by token, or by token/interval/ts for candles), so
# acknowledging after the body and requeueing when a pool child dies loses nothing and repeats
# nothing harmful. Exceptions still ack: retries are explicit (autoretry_for on infra errors).
task_acks_late = True
task_reject_on_worker_lost = True

# One reserved message per pool process: with late acks a long backfill would otherwise hold
# prefetched commands hostage behind it.
worker_prefetch_multiplier = 1

# Redis redelivers any unacked message older than this, even while it still runs: it must
# exceed the hard time limit plus the longest retry countdown (retry_backoff_max below 600 s).
# RabbitMQ needs none of it: an unacked delivery returns to its queue when the consumer's
# connection dies. There, publisher confirms make send_task return only once the broker has
# the message (RabbitMQ's consumer_timeout, 30 min, exceeds the task time limit below).
broker_transport_options = {"confirm_publish": True, "max_retries": 3} if _AMQP else {
    "visibility_timeout": 3600,
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
    "socket_keepalive": True,
    "health_check_interval": 25,
    "max_retries": 3,
}
result_backend_transport_options = {"visibility_timeout": 3600}
task_time_limit = 900
task_soft_time_limit = 840

# Retry the broker forever (default gives up after ~47 min and exits), including at startup;
# publishing raises after 10 s instead of blocking forever on an empty pool.
broker_connection_retry_on_startup = True
broker_connection_max_retries = None
broker_pool_acquire_timeout = 10

# A lost connection cancels running late-ack tasks; they come back on restore and are
# idempotent, so this is safe and avoids duplicated work finishing twice.
worker_cancel_long_running_tasks_on_connection_loss = True
worker_soft_shutdown_timeout = 10

# Flower shows tasks only when workers send events.
worker_send_task_events = True
task_send_sent_event = True
# No STARTED state in the result backend: it costs a Redis write before every command runs,
# and Flower already shows started tasks from the events above.
task_track_started = False

result_expires = 86400
# Our own logging setup (JSON or text, secrets masked) stays in charge.
worker_hijack_root_logger = False
worker_redirect_stdouts = False

imports = ("ticker_worker.tasks.command_tasks", "ticker_worker.tasks.backfill_task")
