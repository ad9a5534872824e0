"""Celery settings for ticker_worker. Each non-obvious one says why.

See ../shared/reference/celery_redis_postgres.md for the semantics these rely on.
"""

from ticker_worker.config import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
result_backend = _settings.celery_result_backend

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
enable_utc = True
timezone = "UTC"

# Commands stay on Celery's default queue ("celery"), so a caller that knows only the broker
# URL and a task name (send_task without options) is served. Backfills get their own queue and
# workers, so a backlog of rate-limited history requests never delays a subscribe.
task_default_queue = "celery"
task_routes = {"ticker_worker.backfill": {"queue": "backfill"}}

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
broker_transport_options = {
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

imports = ("ticker_worker.tasks.commands", "ticker_worker.tasks.backfill")
