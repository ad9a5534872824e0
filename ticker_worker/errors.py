"""The one error hierarchy of ticker_worker: domain errors fail fast, infrastructure ones retry."""

from __future__ import annotations


class TickerWorkerError(Exception):
    """Base class for every error ticker_worker raises on purpose."""


class InvalidRequest(TickerWorkerError, ValueError):
    """Raised when a command's input is malformed or names something that cannot be served.

    Tasks fail at once on it, are never retried, and write nothing.
    """


class UnknownInstrument(InvalidRequest):
    """Raised when a token is not in the instrument registry."""


class InstrumentExpired(InvalidRequest):
    """Raised when a token names a contract that has expired or left Kite's dump."""


class InvalidMode(InvalidRequest):
    """Raised when a mode is not one of ltp, quote, full."""


class InvalidToken(InvalidRequest):
    """Raised when an instrument token is not a positive integer."""


class AccountError(TickerWorkerError):
    """Raised when an account operation cannot be carried out (unknown name, duplicate, bad key)."""


class NoHealthyAccount(TickerWorkerError):
    """Raised when work needs Kite credentials and no enabled, healthy account exists."""


class InfrastructureError(TickerWorkerError):
    """Raised when Postgres, Redis or Kite is briefly unreachable; callers retry with backoff."""


class KiteAuthError(TickerWorkerError):
    """Raised when Kite refuses an account's credentials (HTTP 403 at handshake or on REST)."""


class InvalidInterval(InvalidRequest):
    """Raised when a candle interval is not one of Kite's eight (minute ... day)."""


class InvalidDays(InvalidRequest):
    """Raised when a backfill look-back is not a positive whole number of days within the cap."""


class HistoricalAccessDenied(TickerWorkerError):
    """Raised when no usable account may read historical candles (Kite's PermissionException).

    It is a fact about the accounts' Kite apps (no historical add-on), so retrying cannot help.
    """


class RateLimitTimeout(InfrastructureError):
    """Raised when a shared rate-limit slot does not free up in time; the task retries later."""


class Fenced(TickerWorkerError):
    """Raised when a holder's write is refused because its epoch no longer holds the lease."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"epoch {epoch} no longer holds the lease: another holder took over")
        self.epoch = epoch


class SecretKeyError(TickerWorkerError):
    """Raised when TICKER_SECRET_KEY is missing, malformed, or not the key a secret was saved with.
    """


class LoginError(TickerWorkerError):
    """Raised when the daily Kite login cannot complete (no api secret, Kite refused, timeout)."""


class InvalidWindow(InvalidRequest):
    """Raised when a backfill's `start`/`end` window is malformed, reversed or too long."""


class BackfillInProgress(InfrastructureError):
    """Raised when another delivery of the same backfill task is running; this one retries."""
