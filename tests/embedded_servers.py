"""Postgres and Redis for a test run on a machine that has neither: the same embedded servers
`ticker-worker up` runs (ticker_worker/embedded.py), started once per session on free ports
with their data in a temporary folder, and stopped (folder removed) when the run ends.

Used only when DATABASE_URL / REDIS_URL are unset and nothing answers on 127.0.0.1:5432 /
127.0.0.1:6379 (or TEST_EMBEDDED_SERVERS=1 asks for them, to try a bare machine's run here).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ticker_worker.embedded import (
    DEFAULT_PG,
    DEFAULT_REDIS,
    EmbeddedPostgres,
    EmbeddedRedis,
    answers,
    free_port,
)

_started: list[subprocess.Popen[bytes]] = []
_root: Path | None = None


def _folder() -> Path:
    global _root
    if _root is None:
        _root = Path(tempfile.mkdtemp(prefix="tw-test-servers-"))
        atexit.register(stop)
    return _root


def _wait(check: object, what: str, proc: subprocess.Popen[bytes]) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the embedded {what} exited with {proc.returncode}")
        with contextlib.suppress(Exception):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.1)
    raise RuntimeError(f"the embedded {what} did not answer within 60 s")


def _postgres() -> str:
    import psycopg2

    server = EmbeddedPostgres(_folder(), free_port())
    server.prepare()
    uid, gid = server.demote() or (None, None)
    proc = subprocess.Popen(server.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            user=uid, group=gid, extra_groups=None if uid is None else [],
                            start_new_session=True)
    _started.append(proc)
    _wait(lambda: psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres",
                                   dbname="postgres", connect_timeout=2).close() or True,
          "Postgres", proc)
    return f"127.0.0.1:{server.port}"


def _redis() -> str:
    import redis

    server = EmbeddedRedis(_folder(), free_port())
    proc = subprocess.Popen(server.argv(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    _started.append(proc)
    _wait(lambda: redis.Redis(port=server.port).ping(), "Redis", proc)
    return f"127.0.0.1:{server.port}"


@functools.cache
def ensure() -> tuple[str, str]:
    """host:port of the Postgres and the Redis the tests use: the local ones on their default
    ports when they answer (or a URL is configured), else embedded ones started now."""
    force = os.environ.get("TEST_EMBEDDED_SERVERS") == "1"  # a bare machine, simulated
    pg = f"{DEFAULT_PG[0]}:{DEFAULT_PG[1]}"
    rd = f"{DEFAULT_REDIS[0]}:{DEFAULT_REDIS[1]}"
    if "DATABASE_URL" not in os.environ and (force or not answers(*DEFAULT_PG)):
        pg = _postgres()
    if "REDIS_URL" not in os.environ and (force or not answers(*DEFAULT_REDIS)):
        rd = _redis()
    return pg, rd


def stop() -> None:
    """Stop what `ensure()` started (Postgres with SIGINT: its fast shutdown) and clean up."""
    import signal

    for proc in _started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    _started.clear()
    if _root is not None:
        shutil.rmtree(_root, ignore_errors=True)
