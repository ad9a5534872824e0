"""Stream gaps (pure): every silence of a placed instrument, from its last tick before a fault to
its first tick after the recovery.

A gap opens when a connection is lost (dropped, stale, token refused at the handshake) or when a
holder starts or takes over streams it did not carry; it closes at the instrument's next tick
through any connection, or when the instrument leaves (unsubscribed, failed). Each closed gap
becomes one `stream_gap` event and a backfill of its window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Gap:
    """A window in which the ticks of one instrument may be missing (wall-clock seconds)."""

    token: int
    start: float
    end: float
    account: str | None
    connection: int | None
    reason: str
    mode: str = "full"
    generation: int = 0


@dataclass(frozen=True)
class _Open:
    start: float
    account: str | None
    connection: int | None
    reason: str
    mode: str
    generation: int


class GapBook:
    """Open gaps by instrument, and the closed ones not yet turned into events."""

    def __init__(self) -> None:
        self.open: dict[int, _Open] = {}
        self.closed: list[Gap] = []

    def begin(self, tokens: Iterable[int], start_of: Callable[[int], float],
              placed_of: Callable[[int], tuple[str, int]], account: str | None,
              connection: int | None, reason: str) -> int:
        """Open a gap for each token that has none (the earliest start wins); return how many.

        `placed_of` gives a token's (mode, generation) for its event."""
        opened = 0
        for t in tokens:
            if t not in self.open:
                mode, generation = placed_of(t)
                self.open[t] = _Open(start_of(t), account, connection, reason, mode, generation)
                opened += 1
        return opened

    def end(self, tokens: Iterable[int], now: float) -> None:
        """These ticked (or left) at `now`: close their gaps."""
        if not self.open:
            return
        for t in tokens:
            gap = self.open.pop(t, None)
            if gap is not None:
                self.closed.append(Gap(t, gap.start, max(now, gap.start), gap.account,
                                       gap.connection, gap.reason, gap.mode, gap.generation))

    def restore(self, gaps: Iterable[Gap]) -> None:
        """Closed gaps whose events could not be written yet: keep them for the next flush."""
        self.closed[:0] = list(gaps)

    def take(self) -> list[Gap]:
        """The gaps closed since the last call."""
        taken, self.closed = self.closed, []
        return taken
