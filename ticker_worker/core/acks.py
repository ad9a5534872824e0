"""The acknowledgement of subscribes on one connection (pure): Kite never answers a subscribe;
the token's first tick on that connection is the answer.

A token sent and not yet seen is unacknowledged. Past the ack timeout it is re-sent once; past
twice the timeout it is reported as awaiting its first tick. Silence never fails or moves a token
(a quiet contract and a closed market are silent too). An explicit refusal (Kite's text `error`
frame) does: the tokens still unacknowledged a moment after the error are the refused ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class AckBook:
    """Unacknowledged tokens of one connection, with the time each was (re)sent."""

    unacked: dict[int, float] = field(default_factory=dict)
    resent: set[int] = field(default_factory=set)

    def sent(self, tokens: Iterable[int], now: float) -> None:
        """These were just subscribed (or resubscribed after a reconnect)."""
        for t in tokens:
            self.unacked[t] = now
            self.resent.discard(t)

    def seen(self, tokens: Iterable[int]) -> list[int]:
        """Ticks arrived for `tokens`; return the ones this acknowledged."""
        if not self.unacked:
            return []
        acked = [t for t in tokens if self.unacked.pop(t, None) is not None]
        for t in acked:
            self.resent.discard(t)
        return acked

    def forget(self, tokens: Iterable[int]) -> None:
        """These left the connection."""
        for t in tokens:
            self.unacked.pop(t, None)
            self.resent.discard(t)

    def clear(self) -> None:
        """The connection is gone: nothing is outstanding on it any more."""
        self.unacked.clear()
        self.resent.clear()

    def due_for_resend(self, now: float, timeout: float) -> list[int]:
        """Tokens past the timeout that were not re-sent yet; marks them re-sent (now)."""
        due = [t for t, at in self.unacked.items() if t not in self.resent and now - at >= timeout]
        for t in due:
            self.resent.add(t)
            self.unacked[t] = now
        return due

    def awaiting(self, now: float, timeout: float) -> list[int]:
        """Tokens re-sent once and still silent a timeout later: awaiting their first tick."""
        return [t for t, at in self.unacked.items() if t in self.resent and now - at >= timeout]

    def sent_since(self, since: float) -> list[int]:
        """Unacknowledged tokens (re)sent at or after `since`: the candidates of a refusal."""
        return [t for t, at in self.unacked.items() if at >= since]
