"""Modes, statuses and the validation of command input (pure)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ticker_worker.errors import InvalidMode, InvalidToken

MAX_TOKEN = 2**32 - 1  # Kite packs tokens in uint32.
MAX_BULK = 27_000


class Mode(StrEnum):
    """Kite ticker modes, smallest packet first."""

    LTP = "ltp"
    QUOTE = "quote"
    FULL = "full"


class Status(StrEnum):
    """Subscription lifecycle (DESIGN 4.2)."""

    PENDING = "pending"
    ACTIVE = "active"
    REMOVED = "removed"
    QUEUED = "queued"
    FAILED = "failed"


def parse_mode(value: Any) -> Mode:
    """Return the Mode for `value`, case-insensitive; raise InvalidMode naming the value."""
    if isinstance(value, str):
        try:
            return Mode(value.strip().lower())
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in Mode)
    raise InvalidMode(f"unknown mode {value!r}: expected one of {allowed}")


def parse_token(value: Any) -> int:
    """Return `value` as an instrument token; raise InvalidToken unless a positive int.

    Booleans, floats, strings and None are refused even when they look numeric: a caller that
    sends "256265" has a bug we should show, not hide.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(
            f"instrument_token must be a positive integer, got {value!r} ({type(value).__name__})"
        )
    if not 0 < value <= MAX_TOKEN:
        raise InvalidToken(f"instrument_token must be between 1 and {MAX_TOKEN}, got {value}")
    return value


def parse_token_list(values: Any) -> list[Any]:
    """Check the container of a bulk request; its items are validated one by one later."""
    if not isinstance(values, list | tuple):
        raise InvalidToken(
            f"instrument_tokens must be a list of integers, got {type(values).__name__}"
        )
    if len(values) > MAX_BULK:
        raise InvalidToken(f"at most {MAX_BULK} tokens per call, got {len(values)}")
    return list(values)
