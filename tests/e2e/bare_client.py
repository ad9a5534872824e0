"""A caller that knows only the broker URL and task names: it never imports ticker_worker.

Usage: python bare_client.py BROKER_URL '[["ticker_worker.subscribe", [256265]], ...]'
Prints one JSON object per call: {"ok": result} or {"error": type, "message": text}.
"""

import json
import sys

from celery import Celery

broker, calls = sys.argv[1], json.loads(sys.argv[2])
app = Celery(broker=broker, backend=broker)
for name, args in calls:
    result = app.send_task(name, args=args)
    try:
        print(json.dumps({"ok": result.get(timeout=30)}))
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    sys.stdout.flush()
assert "ticker_worker" not in sys.modules
