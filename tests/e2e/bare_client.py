"""A caller that knows only the broker URL and task names: it never imports ticker_worker.

Usage: python bare_client.py BROKER_URL BACKEND_URL '[["ticker_worker.subscribe", [256265]], ...]'
Prints one JSON object per call: {"ok": result} or {"error": type, "message": text}.
On RabbitMQ the one setting a caller needs is the queue type: its first send_task declares the
`celery` queue, which must match the quorum queue the workers declared.
"""

import json
import sys

from celery import Celery

broker, backend, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
app = Celery(broker=broker, backend=backend)
if broker.startswith("amqp"):
    app.conf.task_default_queue_type = "quorum"
for name, args in calls:
    result = app.send_task(name, args=args)
    try:
        print(json.dumps({"ok": result.get(timeout=30)}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    sys.stdout.flush()
assert "ticker_worker" not in sys.modules
