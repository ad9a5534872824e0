"""The messages a plan sends, in the order that keeps Kite's caps on the wire (pure).

Kite refuses any token past 3000 on a connection, even for the moment between two messages. So
on each connection the unsubscribes go out first, then the subscribes (each batch followed by its
`mode`), then the mode changes. A move between connections is make-before-break: the release of
the old connection waits for the new one's first tick (`Plan.release_after_ack`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ticker_worker.core.placement import Slot
from ticker_worker.core.reconcile import Plan


@dataclass(frozen=True)
class Message:
    """One control message on one connection: subscribe, unsubscribe or mode."""

    slot: Slot
    action: str
    tokens: tuple[int, ...]
    mode: str | None = None

    def body(self) -> dict[str, object]:
        """The JSON document Kite reads from a text frame."""
        if self.action == "mode":
            return {"a": "mode", "v": [self.mode, list(self.tokens)]}
        return {"a": self.action, "v": list(self.tokens)}


def _batches(tokens: list[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(tokens[i:i + size]) for i in range(0, len(tokens), size)]


def for_slot(plan: Plan, slot: Slot, batch_size: int) -> list[Message]:
    """The messages of `plan` on one connection, unsubscribes first."""
    out = [Message(slot, "unsubscribe", b) for b in _batches(plan.unsubscribe.get(slot, []),
                                                             batch_size)]
    for mode, tokens in sorted(plan.subscribe.get(slot, {}).items()):
        for batch in _batches(tokens, batch_size):
            out += [Message(slot, "subscribe", batch), Message(slot, "mode", batch, mode)]
    for mode, tokens in sorted(plan.set_mode.get(slot, {}).items()):
        out += [Message(slot, "mode", b, mode) for b in _batches(tokens, batch_size)]
    return out


def messages(plan: Plan, batch_size: int = 1000) -> list[Message]:
    """Every message of `plan`, connection by connection."""
    return [m for slot in sorted(plan.touched()) for m in for_slot(plan, slot, batch_size)]


def carry(tokens: dict[int, str], messages: Sequence[Message]) -> list[int]:
    """Make `messages` true of a connection's token map (token -> mode), in order; return the
    tokens they unsubscribed. A subscribe alone means Kite's default mode, quote."""
    gone: list[int] = []
    for m in messages:
        if m.action == "unsubscribe":
            gone += [t for t in m.tokens if tokens.pop(t, None) is not None]
        elif m.action == "subscribe":
            tokens.update(dict.fromkeys(m.tokens, "quote"))
        else:
            tokens.update((t, m.mode or "quote") for t in m.tokens if t in tokens)
    return gone
