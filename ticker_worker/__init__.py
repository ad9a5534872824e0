"""ticker_worker: live Kite market-data subscriptions across accounts, driven by Celery tasks.

Importing the package has no side effects; `celery -A ticker_worker` finds the app in
`ticker_worker.celery`.
"""

__version__ = "0.1.0"
