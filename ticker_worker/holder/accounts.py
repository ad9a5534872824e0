"""The holder's view of each account: credentials, health and its ticker connections."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ticker_worker.core.placement import AccountLoad
from ticker_worker.db.accounts import AccountRow
from ticker_worker.kite.ticker import Credentials, TickerConnection

log = logging.getLogger(__name__)


@dataclass
class AccountState:
    """One account as the holder runs it."""

    row: AccountRow
    connections: dict[int, TickerConnection] = field(default_factory=dict)
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

    def load(self) -> AccountLoad:
        """Current load per connection, for placement."""
        loads = {i: len(c.tokens) for i, c in self.connections.items()} if self.usable else {}
        return AccountLoad(self.name, self.usable, loads)

    def update(self, row: AccountRow) -> bool:
        """Take the latest database row; True when the account became usable again."""
        was_usable = self.usable
        if row.access_token != self.row.access_token:
            self.auth_failed = False  # a new token deserves a new handshake
        self.row = row
        return self.usable and not was_usable
