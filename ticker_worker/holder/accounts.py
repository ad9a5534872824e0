"""The holder's view of each account: credentials, health and its ticker connections."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ticker_worker.core.placement import AccountLoad
from ticker_worker.db.accounts import AccountRow
from ticker_worker.holder.ports import Link
from ticker_worker.kite.ticker import Credentials

log = logging.getLogger(__name__)


@dataclass
class AccountState:
    """One account as the holder runs it."""

    row: AccountRow
    connections: dict[int, Link] = field(default_factory=dict)
    auth_failed: bool = False

    @property
    def name(self) -> str:
        """The account's name."""
        return self.row.name

    @property
    def usable(self) -> bool:
        """Whether placement may put instruments here."""
        return self.row.enabled and self.row.healthy and not self.auth_failed

    def credentials(self) -> Credentials:
        """Read at every (re)connect, so a token updated with `accounts set-token` is used."""
        return Credentials(self.row.api_key, self.row.access_token)

    def load(self, per_connection: int) -> AccountLoad:
        """Current load per connection, for placement. A connection on which Kite refused
        tokens counts as full until some leave it."""
        if not self.usable:
            return AccountLoad(self.name, False, {})
        loads = {
            i: per_connection if c.cap is not None and len(c.tokens) >= c.cap else len(c.tokens)
            for i, c in self.connections.items()
        }
        return AccountLoad(self.name, True, loads)

    def update(self, row: AccountRow) -> bool:
        """Take the latest database row; True when the account became usable again."""
        was_usable = self.usable
        if row.access_token != self.row.access_token:
            self.auth_failed = False  # a new token deserves a new handshake
        self.row = row
        return self.usable and not was_usable
