"""The official KiteTicker, unchanged but for `root=`, against the simulator (one process each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.sim.conftest import ThreadedSim
from ticker_worker.sim.universe import build_universe

SCRIPT = Path(__file__).with_name("kite_scenarios.py")


def _token(exchange: str) -> int:
    return next(
        i.instrument_token for i in build_universe(1).instruments
        if i.exchange == exchange and i.instrument_type == "FUT"
    )


def run_scenario(sim: ThreadedSim, name: str, api_key: str, *tokens: int) -> dict[str, Any]:
    args = [sys.executable, str(SCRIPT), name, sim.ws, sim.http, api_key, "access", *map(str, tokens)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def modes_result(sim: ThreadedSim) -> dict[str, Any]:
    return run_scenario(sim, "modes", "modes-key", _token("CDS"), _token("BCD"))


def test_each_mode_arrives_in_its_own_packet_kind(modes_result: dict[str, Any]) -> None:
    cds, bcd = str(_token("CDS")), str(_token("BCD"))
    assert modes_result["first"] == {
        "256265": ["quote"], "408065": ["full"], "5633": ["ltp"], cds: ["full"], bcd: ["full"],
    }


def test_parsed_ticks_have_sensible_values(modes_result: dict[str, Any]) -> None:
    last = modes_result["last"]
    index, infy, acc = last["256265"], last["408065"], last["5633"]
    assert index["tradable"] is False and 20_000 < index["last_price"] < 30_000
    assert set(index) == {"tradable", "mode", "instrument_token", "last_price", "ohlc", "change"}
    assert infy["tradable"] is True and 1_500 < infy["last_price"] < 2_300
    assert len(infy["depth"]["buy"]) == 5 and len(infy["depth"]["sell"]) == 5
    assert infy["depth"]["buy"][0]["price"] <= infy["last_price"] <= infy["depth"]["sell"][0]["price"]
    assert infy["ohlc"]["low"] <= infy["last_price"] <= infy["ohlc"]["high"]
    assert acc == {"tradable": True, "mode": "ltp", "instrument_token": 5633,
                   "last_price": acc["last_price"]}
    cds = last[str(_token("CDS"))]
    assert 70 < cds["last_price"] < 100  # USDINR: the 1e7 divisor was applied
    assert modes_result["volume_ok"]


def test_unsubscribe_stops_ticks(modes_result: dict[str, Any]) -> None:
    assert "5633" not in modes_result["second"]
    assert modes_result["second"]["408065"] == ["full"]


def test_set_mode_switches_the_index_to_its_full_packet(modes_result: dict[str, Any]) -> None:
    assert modes_result["third"]["256265"] == ["full"]
    assert modes_result["index_full"]["exchange_timestamp"]


def test_drop_reconnects_and_resubscribes_then_expiry_gets_403(sim: ThreadedSim) -> None:
    result = run_scenario(sim, "faults", "faults-key")
    assert result["before"] == {"408065": ["full"]}
    assert result["after_drop"] == {"408065": ["full"]}  # resubscribed, mode included
    kinds = [e[0] for e in result["events"]]
    assert kinds.count("connect") == 2
    rejected = [e for e in result["events"] if e[0] in ("error", "close") and "403" in e[2]]
    assert rejected, result["events"]
    assert sim.stats()["api_keys"]["faults-key"]["state"] == "expired"
