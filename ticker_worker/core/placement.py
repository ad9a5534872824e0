"""Least-loaded placement of instruments on accounts and connections (pure, no I/O).

Kite allows at most `per_connection` (3000) instruments on a connection and `max_connections`
(3) connections per api key. An instrument goes to the healthy account with the lowest
used/capacity ratio (ties broken by name, so the choice is deterministic), then to the
least-loaded open connection of that account; a new connection opens only when the open ones
are full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Slot = tuple[str, int]  # (account name, connection index)


@dataclass
class AccountLoad:
    """One account's connections and how many instruments each holds."""

    name: str
    usable: bool
    loads: dict[int, int] = field(default_factory=dict)

    @property
    def used(self) -> int:
        """Instruments on this account."""
        return sum(self.loads.values())


class Layout:
    """The load of every account and connection, updated as instruments are placed or freed."""

    def __init__(
        self, accounts: Iterable[AccountLoad], per_connection: int = 3000, max_connections: int = 3
    ) -> None:
        self.accounts = {a.name: a for a in accounts}
        self.per_connection = per_connection
        self.max_connections = max_connections

    @property
    def capacity(self) -> int:
        """Instruments one account can hold."""
        return self.per_connection * self.max_connections

    def _room(self, account: AccountLoad) -> bool:
        return account.used < self.capacity

    def has_room(self, slot: Slot) -> bool:
        """Whether `slot` is on a usable account and can take one more instrument."""
        account = self.accounts.get(slot[0])
        if account is None or not account.usable or not 0 <= slot[1] < self.max_connections:
            return False
        if slot[1] not in account.loads and len(account.loads) >= self.max_connections:
            return False
        return account.loads.get(slot[1], 0) < self.per_connection

    def choose(self) -> Slot | None:
        """The least-loaded slot with room, or None when every usable account is full."""
        candidates = [a for a in self.accounts.values() if a.usable and self._room(a)]
        if not candidates:
            return None
        account = min(candidates, key=lambda a: (a.used / self.capacity, a.name))
        open_with_room = [
            (load, index) for index, load in account.loads.items() if load < self.per_connection
        ]
        if open_with_room:
            return account.name, min(open_with_room)[1]
        free = [i for i in range(self.max_connections) if i not in account.loads]
        return account.name, free[0]

    def take(self, slot: Slot) -> None:
        """Count one more instrument on `slot`."""
        loads = self.accounts[slot[0]].loads
        loads[slot[1]] = loads.get(slot[1], 0) + 1

    def release(self, slot: Slot) -> None:
        """Count one instrument fewer on `slot`."""
        account = self.accounts.get(slot[0])
        if account is not None and slot[1] in account.loads:
            account.loads[slot[1]] -= 1

    def usable(self, account: str) -> bool:
        """Whether placement may use `account` now."""
        found = self.accounts.get(account)
        return found is not None and found.usable

    def reason_full(self) -> str:
        """Why nothing can be placed: the reason stored with a queued subscription."""
        usable = [a for a in self.accounts.values() if a.usable]
        if not usable:
            return "no healthy account: add one or update its token (ticker-worker accounts)"
        return (
            f"no capacity: all {len(usable)} healthy account(s) hold {self.capacity} instruments"
        )
