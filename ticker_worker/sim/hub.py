"""The ticker feed: open connections, their subscriptions, and the clock that streams ticks.

One global clock advances every subscribed instrument once per interval; each connection then
gets one binary frame with that step's packet for each of its instruments, in its chosen mode;
all of a step's frames are built before any is queued, so they leave together.
A subscribe or mode change is answered at once with the current packets of the tokens it touched
(see `connection.py`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from ticker_worker.sim.accounts import Account
from ticker_worker.sim.connection import Connection
from ticker_worker.sim.market import MODES, QUOTE, Market, TokenState

__all__ = ["MAX_PENDING_FRAMES", "Connection", "Hub"]

log = logging.getLogger(__name__)
#: A connection this many frames behind is skipped for a step (its ticks are dropped and
#: counted) rather than buffered without bound; volume still shows the consumer the gap.
MAX_PENDING_FRAMES = 4
#: Instruments advanced between two yields to the event loop within a step.
ADVANCE_CHUNK = 2000
#: Steps kept for `/_sim/sends`.
STEPS_KEPT = 512


class Hub:
    """Every open connection, the subscribed instruments, and the clock that drives them."""

    def __init__(
        self,
        market: Market,
        *,
        tick_interval: float,
        heartbeat_interval: float,
        max_tokens: int,
        max_connections: int,
        slow_consumer_timeout: float = 10.0,
    ) -> None:
        self.market = market
        self.tick_interval = tick_interval
        self.heartbeat_interval = heartbeat_interval
        self.max_tokens = max_tokens
        self.max_connections = max_connections
        self.slow_consumer_timeout = slow_consumer_timeout
        self.connections: dict[int, Connection] = {}
        self.live: dict[int, TokenState] = {}  # subscribed somewhere, so advanced every step
        self._refs: dict[int, int] = {}
        self._next_id = 1
        self.ticks_dropped = 0
        # The market clock (sim/clock.py) sets these: simulated time, and closed segments.
        self.now: Callable[[], float] = time.time
        self.closed_segments: Callable[[float], frozenset[int]] = lambda _: frozenset()
        self.slow_consumers_closed = 0
        self.high_water = 0  # the most tokens any connection held, closed ones included
        self.refused_total = 0
        self.steps = 0
        # (step, started, instruments advanced, frames queued), monotonic seconds
        self.step_log: deque[tuple[int, float, float, float]] = deque(maxlen=STEPS_KEPT)

    def of(self, api_key: str) -> list[Connection]:
        """The open connections of one api key."""
        return [c for c in self.connections.values() if c.account.api_key == api_key]

    def open(self, account: Account, ws: web.WebSocketResponse) -> Connection | None:
        """Register a connection, or return None when the key already has the maximum."""
        if len(self.of(account.api_key)) >= self.max_connections:
            return None
        conn = Connection(
            self._next_id, account, ws, self.heartbeat_interval, self.slow_consumer_timeout
        )
        self._next_id += 1
        self.connections[conn.id] = conn
        return conn

    def close(self, conn: Connection) -> None:
        """Forget a connection and its subscriptions; safe to call twice."""
        if self.connections.pop(conn.id, None) is None:
            return
        conn.stop()
        self.slow_consumers_closed += conn.slow
        self.unsubscribe(conn, list(conn.modes))

    def subscribe(self, conn: Connection, tokens: Iterable[int]) -> list[int]:
        """Subscribe new tokens in `quote` mode, up to the cap; return the refused tokens.

        The new tokens' current packets are queued at once, as Kite acknowledges a subscribe.
        """
        added: list[int] = []
        refused: list[int] = []
        now = int(self.now())
        for token in tokens:
            if token in conn.modes:
                continue  # duplicates are normal after a reconnect
            if len(conn.modes) >= self.max_tokens:
                refused.append(token)
                continue
            conn.modes[token] = QUOTE
            added.append(token)
            state = self.market.state(token, now)
            if state is not None:
                conn.feeds[QUOTE][token] = state
                self._refs[token] = self._refs.get(token, 0) + 1
                self.live[token] = state
        conn.high_water = max(conn.high_water, len(conn.modes))
        self.high_water = max(self.high_water, conn.high_water)
        self._push_snapshot(conn, added)
        if refused:
            self.refused_total += len(refused)
            conn.refuse(refused, (
                f"subscribe: {len(refused)} token(s) refused: a connection holds at most "
                f"{self.max_tokens} instruments"
            ))
        return refused

    def _push_snapshot(self, conn: Connection, tokens: list[int]) -> None:
        if not conn.account.muted and (frame := conn.snapshot(tokens)) is not None:
            conn.push(frame)

    def unsubscribe(self, conn: Connection, tokens: Iterable[int]) -> None:
        """Drop subscriptions; unknown or unsubscribed tokens are ignored."""
        for token in tokens:
            mode = conn.modes.pop(token, None)
            if mode is None or conn.feeds[mode].pop(token, None) is None:
                continue
            refs = self._refs.pop(token) - 1
            if refs:
                self._refs[token] = refs
            else:
                del self.live[token]

    def set_mode(self, conn: Connection, mode: int, tokens: Iterable[int]) -> None:
        """Change the mode of subscribed tokens and queue their current packets in it.

        Tokens not subscribed are ignored; a token already in that mode is sent again too.
        """
        changed: list[int] = []
        for token in tokens:
            old = conn.modes.get(token)
            if old is None:
                continue
            changed.append(token)
            conn.modes[token] = mode
            state = conn.feeds[old].pop(token, None)
            if state is not None:
                conn.feeds[mode][token] = state
        self._push_snapshot(conn, changed)

    async def run(self) -> None:
        """The clock: one step per `tick_interval`, never bursting to catch up after a stall."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_interval
            delay = next_at - loop.time()
            if delay < 0:
                next_at -= delay
            await asyncio.sleep(max(delay, 0))
            await self.step(int(self.now()))

    async def step(self, now: int) -> None:
        """Advance every live instrument once, then queue one frame per connection.

        The advance yields to the loop every `ADVANCE_CHUNK` instruments, so a subscribe that
        arrives meanwhile is answered within milliseconds, not after the whole step. The frames
        are all built first and queued together with no yield in between, so every
        connection's frame of a step starts leaving at the same moment (`sends`).
        """
        self.steps += 1
        started = time.monotonic()
        closed = self.closed_segments(now)
        states = list(self.live.values())
        for at in range(0, len(states), ADVANCE_CHUNK):
            if at:
                await asyncio.sleep(0)
            for state in states[at:at + ADVANCE_CHUNK]:
                if not closed or state.token & 0xFF not in closed:
                    state.advance(now)
        advanced = time.monotonic()
        frames: list[tuple[Connection, bytes]] = []
        for conn in list(self.connections.values()):
            if conn.account.muted:
                continue
            if len(conn.pending) >= MAX_PENDING_FRAMES:
                self.ticks_dropped += sum(len(feed) for feed in conn.feeds)
                continue
            frame = conn.frame(closed)
            if frame is not None:
                frames.append((conn, frame))
        for conn, frame in frames:
            conn.push_step(self.steps, frame)
        self.step_log.append((self.steps, started, advanced, time.monotonic()))

    def sends(self) -> dict[str, Any]:
        """The `/_sim/sends` document: when each step was built and each frame began to leave.

        Times are `time.monotonic()` of this process (CLOCK_MONOTONIC, the clock a benchmark's
        `time.perf_counter()` reads on Linux), so another process on the host can compare them.
        """
        return {
            "steps": [list(entry) for entry in self.step_log],
            "connections": [
                {"id": c.id, "api_key": c.account.api_key, "sends": [list(s) for s in c.sends]}
                for c in self.connections.values()
            ],
        }

    def stats(self, accounts: Iterable[Account], with_tokens: bool) -> dict[str, Any]:
        """The `/_sim/stats` document."""
        keys: dict[str, Any] = {}
        for account in accounts:
            conns = []
            for conn in self.of(account.api_key):
                counts = dict.fromkeys(MODES, 0)
                for mode in conn.modes.values():
                    counts[MODES[mode]] += 1
                entry: dict[str, Any] = {
                    "id": conn.id, "tokens": len(conn.modes), "modes": counts,
                    "high_water": conn.high_water, "refused": conn.refused,
                    "refusals": list(conn.refusals),
                }
                if with_tokens:
                    entry["token_list"] = sorted(conn.modes)
                conns.append(entry)
            keys[account.api_key] = {"state": account.state, "connections": conns}
        sent = {str(s.token): s.sent for s in self.market.states.values() if s.sent}
        return {
            "api_keys": keys,
            "ticks_sent": sent,
            "ticks_total": sum(sent.values()),
            "ticks_dropped": self.ticks_dropped,
            "high_water": self.high_water,
            "refused_total": self.refused_total,
            "slow_consumers_closed": self.slow_consumers_closed,
        }

    def reset(self) -> None:
        """Abort every connection and forget all subscriptions and counters."""
        for conn in list(self.connections.values()):
            conn.abort()
            self.close(conn)
        self.ticks_dropped = self.slow_consumers_closed = self.high_water = self.refused_total = 0
        self.step_log.clear()
