"""The reconnect backoff grows only with failures in a row: a socket that streamed and was then
dropped reconnects at once (at most the first step), however many drops came before."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from ticker_worker.kite import ticker
from ticker_worker.kite.ticker import HEALTHY_AFTER, TickerConnection


class Quiet:
    """LinkEvents that ignore everything."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args: None


def attempts_over(outcomes: list[str], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run the connect loop over `outcomes` ("streamed": a socket up for a while, then lost;
    "refused": no socket); return the attempt number each backoff was computed with."""
    seen: list[int] = []
    monkeypatch.setattr(ticker, "backoff", lambda attempt, cap: seen.append(attempt) or 0.0)

    async def body() -> None:
        conn = TickerConnection("a", 0, "ws://x", lambda: None,  # type: ignore[arg-type,return-value]
                                None, Quiet())  # type: ignore[arg-type]
        left = list(outcomes)

        async def connect_and_read() -> None:
            if not left:
                conn._stopped = True
                raise aiohttp.ClientConnectionError("done")
            if left.pop(0) == "streamed":
                conn.connected = True
                conn.connected_at = time.monotonic() - HEALTHY_AFTER - 1
            raise aiohttp.ClientConnectionError("lost")

        conn._connect_and_read = connect_and_read  # type: ignore[method-assign]
        await asyncio.wait_for(conn._run(), 5)

    asyncio.run(body())
    return seen[:len(outcomes)]


def test_drops_of_a_healthy_socket_never_climb_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    assert attempts_over(["streamed"] * 8, monkeypatch) == [1] * 8


def test_failures_in_a_row_grow_it_and_a_healthy_socket_resets_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcomes = ["refused", "refused", "refused", "streamed", "refused", "streamed"]
    assert attempts_over(outcomes, monkeypatch) == [1, 2, 3, 1, 2, 1]
