"""`ticker-worker up --embedded` as on a bare machine: no DATABASE_URL or REDIS_URL anywhere, so
`up` runs Postgres and Redis from Python packages with their data under `.ticker-worker/` of
the folder it runs in, and the CLI run from that folder finds them.

The embedded servers get ports of the test's own (`--postgres-port`, `--redis-port`), so the
stack cannot reach the shared servers on 5432 and 6379 even by accident.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.test_up import Channels, Up
from tests.procs import free_port, wait_for
from ticker_worker.keys import RedisKeys

pytestmark = pytest.mark.e2e
TOKEN = 256265
KEYS = RedisKeys("ticker:nifty")  # the default prefix: nothing configured
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "TICKER_REDIS_PREFIX")


@pytest.fixture(scope="module")
def bare() -> Iterator[tuple[dict[str, str], Path, list[str]]]:
    """An environment naming no server, a fresh folder, and the embedded servers' ports."""
    env = {k: v for k, v in os.environ.items()
           if k not in SCRUBBED and not k.startswith(("KITE_", "FLOWER_", "CELERY_", "HOLDER_"))}
    env.update(LOG_LEVEL="INFO", RECONCILE_INTERVAL="1", TICK_FLUSH_INTERVAL="0.3",
               BACKFILL_DAYS="1")
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"tw-bare-{os.getpid()}"
    workdir.mkdir()
    ports = ["--postgres-port", str(free_port()), "--redis-port", str(free_port())]
    yield env, workdir, ports
    subprocess.run(["rm", "-rf", str(workdir)], check=False)


def cli(env: dict[str, str], workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`ticker-worker ARGS` run from the stack's folder, with no server configured."""
    return subprocess.run([sys.executable, "-m", "ticker_worker.cli", *args], cwd=workdir,
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def start(bare: tuple[dict[str, str], Path, list[str]]) -> Up:
    env, workdir, ports = bare
    up = Up(env, workdir, "--embedded", *ports, state_dir=".ticker-worker")
    up.wait_ready()
    return up


def stop(up: Up) -> None:
    """Ctrl-C: exit 0, and no process of the stack (embedded servers included) is left."""
    up.popen.send_signal(signal.SIGINT)
    assert up.popen.wait(40) == 0, up.output()
    assert wait_for(lambda: not up.leftovers(), 10, "no process left") is True


def test_bare_folder_embedded_stack_then_same_data_again(
    bare: tuple[dict[str, str], Path, list[str]],
) -> None:
    env, workdir, ports = bare
    up = start(bare)
    try:
        out = up.output()
        assert f"embedded PostgreSQL at 127.0.0.1:{ports[1]}, data in {workdir}" in out, out
        assert f"embedded Valkey (Redis) at 127.0.0.1:{ports[3]}" in out
        assert {"postgres", "redis"} <= set(up.child_pids())
        listener = Channels(redis.Redis(port=int(ports[3])), KEYS.ticks)
        try:
            done = cli(env, workdir, "subscribe", str(TOKEN), "--wait")
            assert done.returncode == 0 and "active" in done.stdout, done.stdout + done.stderr

            def ticks() -> list[Any]:
                return [t for frame in listener.get(KEYS.ticks) for t in frame
                        if t["instrument_token"] == TOKEN]
            wait_for(ticks, 60, "ticks for 256265 from the embedded Redis")
        finally:
            listener.stop()
        stop(up)
    finally:
        if up.popen.poll() is None:
            up.kill()

    again = start(bare)
    try:
        out = again.output()
        assert "this folder's, as last time" in out and "(new)" not in out, out
        assert "already registered" in out and "instrument registry holds" in out
        status = cli(env, workdir, "status")
        assert status.returncode == 0 and "active 1" in status.stdout, status.stdout
        stop(again)
    finally:
        if again.popen.poll() is None:
            again.kill()
