"""`python -m ticker_worker.sim` as a process: it says where it listens and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.procs import free_port


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_module_runs_serves_and_stops_cleanly(signum: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ticker_worker.sim", "--port", str(port), "--tick-interval", "0.1",
         "--accounts", "key:token"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line, proc.stderr.read() if proc.stderr else line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
        assert stats["api_keys"] == {"key": {"state": "ok", "connections": []}}
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_bad_accounts_option_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ticker_worker.sim", "--accounts", "no-colon"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 2 and "KEY:TOKEN" in done.stderr
