"""Who may connect to the simulator: api keys, access tokens, logins, fault states, rate limits.

Without configured accounts any non-empty key/token pair is accepted, as a fresh login would be.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ticker_worker.config import DEFAULT_REDIRECT_URL

# Kite's own wording for the login refusals.
INVALID_CHECKSUM = "Invalid `checksum`."
INVALID_REQUEST_TOKEN = "Token is invalid or has expired."


@dataclass
class Account:
    """One api_key: its valid access tokens and whether a fault is injected on it."""

    api_key: str
    allowed: set[str] | None  # None: any token not revoked is valid
    revoked: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    muted: bool = False
    expired: bool = False

    @property
    def state(self) -> str:
        """`expired`, `muted` or `ok`, as `/_sim/stats` reports it."""
        if self.expired:
            return "expired"
        return "muted" if self.muted else "ok"

    def accepts(self, access_token: str) -> bool:
        """Check a token, adopting a new one after an expiry (the daily re-login)."""
        if not access_token or access_token in self.revoked:
            return False
        if self.allowed is not None and access_token not in self.allowed:
            if not self.expired:
                return False
            self.allowed.add(access_token)
        self.expired = False
        self.seen.add(access_token)
        return True

    def expire(self) -> None:
        """Revoke every token this key has used or been configured with."""
        self.revoked |= self.seen
        if self.allowed is not None:
            self.revoked |= self.allowed
            self.allowed = set()
        self.expired = True

    def restore(self) -> None:
        """Undo mute and expire: the revoked tokens become valid again."""
        if self.allowed is not None:
            self.allowed |= self.revoked
        self.revoked.clear()
        self.muted = self.expired = False


class Accounts:
    """The api keys the simulator knows: configured ones, or any that have authenticated."""

    def __init__(self, configured: dict[str, str] | None) -> None:
        self._configured = dict(configured) if configured is not None else None
        self.by_key: dict[str, Account] = {}
        self.reset()

    def reset(self) -> None:
        """Forget dynamic keys and every fault state."""
        self.by_key = {
            key: Account(key, {token}) for key, token in (self._configured or {}).items()
        }

    def authenticate(self, api_key: str, access_token: str) -> Account | None:
        """Return the account when the pair is valid, else None."""
        account = self.by_key.get(api_key)
        if account is None:
            if self._configured is not None or not api_key or not access_token:
                return None
            account = self.by_key[api_key] = Account(api_key, None)
        return account if account.accepts(access_token) else None


    def grant(self, api_key: str, access_token: str) -> None:
        """Make a freshly minted token (a login) valid for the key, lifting an expiry."""
        account = self.by_key.get(api_key)
        if account is None:
            account = self.by_key[api_key] = Account(api_key, None if self._configured is None
                                                     else set())
        if account.allowed is not None:
            account.allowed.add(access_token)
        account.revoked.discard(access_token)
        account.expired = False

    def revoke(self, api_key: str, access_token: str) -> bool:
        """Invalidate one token (a logout); False when it was not valid for the key."""
        account = self.by_key.get(api_key)
        if account is None or not account.accepts(access_token):
            return False
        account.revoked.add(access_token)
        if account.allowed is not None:
            account.allowed.discard(access_token)
        return True


@dataclass(frozen=True)
class Pending:
    """A request token handed out by the login page and not yet exchanged."""

    api_key: str
    user_id: str


class Logins:
    """Api secrets and redirect URLs per key, and the request tokens in flight."""

    def __init__(self, api_secrets: dict[str, str], redirect_urls: dict[str, str]) -> None:
        self.api_secrets = dict(api_secrets)
        self.redirect_urls = dict(redirect_urls)
        self.pending: dict[str, Pending] = {}

    def redirect_for(self, api_key: str) -> str:
        """The app's registered redirect URL (the product's default callback when not set)."""
        return self.redirect_urls.get(api_key, DEFAULT_REDIRECT_URL)

    def issue(self, api_key: str, user_id: str) -> str:
        """A new single-use request token."""
        token = secrets.token_hex(16)
        self.pending[token] = Pending(api_key, user_id)
        return token

    def redeem(self, api_key: str, request_token: str, checksum: str) -> Pending:
        """Spend a request token; raise ValueError with Kite's message when refused."""
        pending = self.pending.get(request_token)
        if pending is None or pending.api_key != api_key:
            raise ValueError(INVALID_REQUEST_TOKEN)
        secret = self.api_secrets.get(api_key)
        if secret is not None:
            expected = hashlib.sha256((api_key + request_token + secret).encode()).hexdigest()
            if not hmac.compare_digest(expected, checksum):
                raise ValueError(INVALID_CHECKSUM)
        del self.pending[request_token]
        return pending


class RestRateWindows:
    """Per-key sliding one-second windows: at most `limit` requests in any 1.0 s span."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[tuple[str, str], deque[float]] = {}

    def allow(self, api_key: str, category: str, limit: int) -> bool:
        """Record a request and say whether it is within the limit (rejections don't count)."""
        now = self._clock()
        window = self._windows.setdefault((api_key, category), deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def reset(self) -> None:
        """Forget every window."""
        self._windows.clear()
