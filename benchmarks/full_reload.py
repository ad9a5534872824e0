"""The baseline: the original service's full reload, as a Holder whose every change restarts all.

On any change it closes every connection, reopens them and resubscribes everything, and
records the change only once every connection is back, as the original service did (2-5 s
per change there). Run as a process: `python benchmarks/full_reload.py` (same env as a holder).
"""

from __future__ import annotations

import asyncio
import sys
import time

from ticker_worker.bootstrap import runtime
from ticker_worker.core import wire
from ticker_worker.core.reconcile import Plan
from ticker_worker.holder.core import HolderCore
from ticker_worker.holder.main import run
from ticker_worker.logs import setup_logging


class FullReloadCore(HolderCore):
    """Applies any plan by tearing down every connection and building all of them again.

    The reload is complete when every connection streams again (a tick frame arrived after
    its resubscribe): until then the original service had a gap on every stream.
    """

    async def apply(self, result: Plan) -> None:
        for state in self.accounts.values():
            for conn in state.connections.values():
                await conn.stop()
            state.connections.clear()
        by_slot: dict[tuple[str, int], dict[str, list[int]]] = {}
        for token, placed in self.actual.items():
            by_slot.setdefault(placed.slot, {}).setdefault(placed.mode, []).append(token)
        for slot, by_mode in by_slot.items():
            await self.link(slot).apply([m for mode, tokens in by_mode.items() for m in (
                wire.Message(slot, "subscribe", tuple(tokens)),
                wire.Message(slot, "mode", tuple(tokens), mode))])
        self.ticks.expect_first([d.token for d, _ in result.activated if d.status != "active"])
        conns = [c for s in self.accounts.values() for c in s.connections.values() if c.tokens]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(c.connected and c.frames > 0 for c in conns):
                return
            await asyncio.sleep(0.005)


if __name__ == "__main__":
    rt = runtime()
    setup_logging(rt.settings.log_format, "WARNING", process="full-reload")
    sys.exit(run(rt, FullReloadCore))
