"""Logging: one JSON object per line with LOG_FORMAT=json, readable lines otherwise; secrets masked.

Context ids (task_id, event_id, instrument_token, account, connection) go in `extra=` and are
carried into every line.
"""

from __future__ import annotations

import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

import orjson

CONTEXT_FIELDS = ("task_id", "event_id", "instrument_token", "account", "connection", "api_key")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def mask(secret: str | None) -> str:
    """Show just enough of a secret to tell two apart: `abcd…wxyz` becomes `ab…yz`."""
    if not secret:
        return "<none>"
    if len(secret) <= 6:
        return "***"
    return f"{secret[:2]}…{secret[-2:]}"


def register_secret(secret: str | None) -> None:
    """Remember a secret so that any log line containing it is masked."""
    if secret and len(secret) >= 6:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    """Replace every registered secret in `text` by its masked form."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, mask(secret))
    return text


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(self._render(record))

    def _render(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = ((k, getattr(record, k, None)) for k in CONTEXT_FIELDS)
        ctx = " ".join(f"{k}={v}" for k, v in pairs if v is not None)
        return f"{line} [{ctx}]" if ctx else line


class _JsonFormatter(_RedactingFormatter):
    def _render(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(fmt: str = "text", level: str = "INFO", process: str = "") -> None:
    """Configure the root logger for this process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        name = f"{process} " if process else ""
        handler.setFormatter(
            _RedactingFormatter(f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that drowns our own lines at INFO.
    for noisy in ("aiohttp.access", "kombu", "celery.worker.strategy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
