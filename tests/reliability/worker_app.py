"""The production Celery app with a short broker visibility timeout, for the worker-crash test.

kombu's Redis transport puts an unacknowledged message back on its queue only once it is older
than `visibility_timeout` (3600 s in celeryconfig.py). A worker killed with SIGKILL cannot hand
its messages back, so the test runs the replacement worker with a few seconds instead, with
the restore sweep every second (`unacked_restore_interval` x `unacked_restore_throttle`), and
with a short-lived restore mutex.

Run with `celery -A tests.reliability.worker_app worker ...`; every other setting is the
package's own.
"""

from __future__ import annotations

import os

from ticker_worker.celery import app

VISIBILITY_TIMEOUT = float(os.environ.get("TEST_VISIBILITY_TIMEOUT", "4"))

app.conf.broker_transport_options = {
    **app.conf.broker_transport_options,
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
    # A worker killed during its own restore sweep leaves kombu's `unacked_mutex` behind, and
    # nobody restores anything until it expires (300 s by default).
    "unacked_mutex_expire": 3,
}
app.conf.result_backend_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}

__all__ = ["app"]
