"""The reconcile diff: desired rows against what the connections hold -> the actions (pure).

The plan touches only the connections that hold (or will hold) a changed instrument, so the
instruments already streaming never see a message. A move (account unhealthy) subscribes on
the new connection and lets go of the old one only once the new one confirmed it (its first
tick): the plan lists those releases apart, in `release_after_ack`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from ticker_worker.core.placement import Layout, Slot

# New rows placed per reconcile pass: a bulk change goes in slices, so no pass holds more than
# this many rows, events and statement parameters at once. 2,000 rather than 4,000: the holder's
# RSS at 27,000 streaming fell by about 15 MB (less of each slice's peak stays behind in the
# allocators) and the bulk took no longer.
PASS_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class Desired:
    """A subscriptions row as the holder reads it."""

    token: int
    mode: str
    wanted: bool
    status: str
    account: str | None = None
    connection: int | None = None
    generation: int = 1
    dirty: bool = True
    transitions: int = 0
    # Why the instrument can no longer stream (expired or no longer listed), else None.
    expired: str | None = None


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an instrument streams now, and in which mode (one per streaming instrument, so
    slotted: 27,000 of them live as long as the holder)."""

    account: str
    connection: int
    mode: str
    generation: int = 0

    @property
    def slot(self) -> Slot:
        """(account, connection)."""
        return self.account, self.connection


@dataclass
class Plan:
    """Messages per connection, and the row updates that follow once they are sent."""

    subscribe: dict[Slot, dict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    set_mode: dict[Slot, dict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    unsubscribe: dict[Slot, list[int]] = field(default_factory=lambda: defaultdict(list))
    activated: list[tuple[Desired, Slot]] = field(default_factory=list)
    removed: list[Desired] = field(default_factory=list)
    queued: list[tuple[Desired, str]] = field(default_factory=list)
    failed: list[tuple[Desired, str]] = field(default_factory=list)
    settled: list[Desired] = field(default_factory=list)
    release_after_ack: dict[int, Slot] = field(default_factory=dict)

    def touched(self) -> set[Slot]:
        """Every connection this plan sends a message to."""
        return set(self.subscribe) | set(self.set_mode) | set(self.unsubscribe)

    def is_empty(self) -> bool:
        """True when there is nothing to send and nothing to record."""
        return not (self.touched() or self.activated or self.removed or self.queued
                    or self.failed or self.settled or self.release_after_ack)


def _place_new(d: Desired, layout: Layout) -> Slot | None:
    # Sticky: after a holder restart an active row goes back where it was, if that still works.
    if d.status == "active" and d.account is not None and d.connection is not None:
        previous = (d.account, d.connection)
        if layout.has_room(previous):
            return previous
    return layout.choose()


def _plan_wanted(d: Desired, placed: Placed | None, layout: Layout, plan: Plan,
                 actual: dict[int, Placed]) -> None:
    if placed is not None and layout.usable(placed.account):
        if placed.mode != d.mode:
            plan.set_mode[placed.slot][d.mode].append(d.token)
            actual[d.token] = Placed(placed.account, placed.connection, d.mode, d.generation)
        moved = (d.account, d.connection) != placed.slot
        if d.status != "active" or moved:
            plan.activated.append((d, placed.slot))
        elif d.dirty:
            plan.settled.append(d)
        return
    slot = _place_new(d, layout)
    if placed is not None:  # its account went away: move it (make before break)
        layout.release(placed.slot)
        del actual[d.token]
        if slot is None:
            plan.unsubscribe[placed.slot].append(d.token)
        else:
            plan.release_after_ack[d.token] = placed.slot
    if slot is None:
        if d.status != "queued" or d.dirty:
            plan.queued.append((d, layout.reason_full()))
        return
    layout.take(slot)
    plan.subscribe[slot][d.mode].append(d.token)
    actual[d.token] = Placed(slot[0], slot[1], d.mode, d.generation)
    plan.activated.append((d, slot))


def _drop(d: Desired, placed: Placed | None, layout: Layout, plan: Plan,
          actual: dict[int, Placed]) -> None:
    if placed is not None:
        plan.unsubscribe[placed.slot].append(d.token)
        layout.release(placed.slot)
        del actual[d.token]


def plan(desired: Iterable[Desired], actual: dict[int, Placed], layout: Layout,
         full: bool = False) -> Plan:
    """Diff `desired` against `actual`; update `actual` and `layout` to what the plan makes true.

    With `full`, `desired` holds every wanted row, and placed instruments missing from it are
    orphans to unsubscribe.
    """
    result = Plan()
    seen: set[int] = set()
    # Removals first, so the capacity they free is usable by the adds of the same pass.
    for d in sorted(desired, key=lambda row: row.wanted and not row.expired):
        seen.add(d.token)
        placed = actual.get(d.token)
        if d.wanted and d.expired:
            _drop(d, placed, layout, result, actual)
            if d.status != "failed" or d.dirty:
                result.failed.append((d, d.expired))
            continue
        if d.wanted:
            _plan_wanted(d, placed, layout, result, actual)
            continue
        _drop(d, placed, layout, result, actual)
        if d.status != "removed" or d.dirty:
            result.removed.append(d)
    if full:
        for token in [t for t in actual if t not in seen]:
            placed = actual.pop(token)
            result.unsubscribe[placed.slot].append(token)
            layout.release(placed.slot)
    return result
