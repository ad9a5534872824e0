"""The stages of `ticker-worker up` (DESIGN 2 and 4.4), in start order, each with its readiness:
Postgres and Redis (configured, local or embedded), migrations, simulator unless real accounts
exist, demo accounts, instrument sync when the registry is empty, holder, command, backfill and
gap-backfill workers, Flower with credentials; and the summary of what runs where. Children are
run by `supervise`; the command itself is `cli/up.py`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from ticker_worker import embedded, probes, supervise
from ticker_worker.bootstrap import set_runtime
from ticker_worker.cli import instruments as instruments_cli
from ticker_worker.cli.common import cli_runtime, database_errors
from ticker_worker.config import Settings, get_settings
from ticker_worker.db import accounts as account_repo
from ticker_worker.db import instruments as instrument_repo
from ticker_worker.db import migrate
from ticker_worker.db.accounts import AccountRow
from ticker_worker.kite.rest import SIM_CREDENTIALS
from ticker_worker.probes import http_get
from ticker_worker.supervise import NotReady, Supervisor

DEMO_ACCOUNTS = ("demo1", "demo2", "demo3")
DEMO_KEYS = frozenset((*DEMO_ACCOUNTS, SIM_CREDENTIALS[0]))
FLOWER_USER = "ticker"
# Flower's default Tasks page hides arguments; a command's token and mode are what its
# readers look for (task args never carry secrets).
FLOWER_COLUMNS = "name,uuid,state,args,result,received,runtime,worker"
STAGES = 7
READY_TIMEOUT = 90.0
HEALTHY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Ports:
    """Where the stack listens."""

    sim: int
    holder: int
    flower: int

    @classmethod
    def choose(cls, settings: Settings, base: int | None, sim: int | None, holder: int | None,
               flower: int | None) -> Ports:
        """Explicit ports win over --port-base, which wins over the settings' defaults."""
        default = (base, base + 1, base + 2) if base else (8765, settings.holder_http_port,
                                                           settings.flower_port)
        return cls(sim or default[0], holder or default[1], flower or default[2])


def want_simulator(flag: bool | None, settings: Settings,
                   accounts: list[AccountRow]) -> tuple[bool, str]:
    """Whether to run the simulator, and why: explicit flag, else only real Kite settings plus
    an enabled non-demo account mean real Kite."""
    if flag is not None:
        return flag, "--sim" if flag else "--no-sim"
    if settings.uses_simulator:
        return True, f"KITE_WS_ROOT ({settings.kite_ws_root}) is not Kite's real endpoint"
    real = [a.name for a in accounts if a.enabled and a.api_key not in DEMO_KEYS]
    if not real:
        return True, "no real Kite account is configured"
    return False, f"real Kite accounts are configured ({', '.join(real)})"


def flower_credentials(settings: Settings, state_dir: Path) -> tuple[str, Path | None]:
    """`user:password` for Flower: FLOWER_BASIC_AUTH, else a generated one kept in a 0600 file
    (reused by the next `up`). Returns the file's path when the file is the source."""
    if settings.flower_basic_auth:
        return settings.flower_basic_auth, None
    path = (state_dir / "flower-credentials").resolve()
    value = supervise.private_file(path, lambda: f"{FLOWER_USER}:{secrets.token_urlsafe(24)}")
    if ":" not in value:
        raise click.ClickException(f"{path} should hold one line `user:password`; delete it "
                                   "to generate one")
    return value, path


def _cli_hint() -> str:
    # `make up` runs .venv/bin/ticker-worker, which a fresh shell may not have on PATH.
    local = Path(sys.executable).parent / "ticker-worker"
    found = shutil.which("ticker-worker")
    return "ticker-worker" if found and Path(found).resolve() == local.resolve() else str(local)


@dataclass
class Stack:
    """One run of `up`: the settings, the ports and the stages' results."""

    sup: Supervisor
    settings: Settings
    ports: Ports
    state_dir: Path
    tick_interval: float | None
    sim: bool = False
    flower_auth: tuple[str, Path | None] = ("", None)
    nodes: list[str] = field(default_factory=list)

    def step(self, n: int, text: str) -> None:
        self.sup.say(f"[{n}/{STAGES}] {text}")

    def servers(self, force: bool, pg_port: int | None, redis_port: int | None) -> None:
        """Postgres and Redis: configured or local ones, else embedded ones run as children;
        the embedded ones' URLs written where later CLI commands in this folder find them."""
        before = embedded.remembered(self.state_dir)
        urls: dict[str, str] = {}
        for name, default, port, run in (
            ("DATABASE_URL", Settings.model_fields["database_url"].default, pg_port,
             embedded.run_postgres),
            ("REDIS_URL", Settings.model_fields["redis_url"].default, redis_port,
             embedded.run_redis),
        ):
            choice = embedded.decide(name, default, port, force, before)
            self.step(1, f"{name.split('_')[0].title()}: {choice.why}")
            if choice.embedded:
                supervise.state_folder(self.state_dir)
                self.step(1, run(self.sup, self.state_dir, choice.url, READY_TIMEOUT))
                urls[name] = choice.url
            os.environ[name] = choice.url
        if urls:
            path = embedded.remember(self.state_dir, urls)
            self.step(1, f"embedded servers' URLs in {path} (CLI commands here use them)")
        get_settings.cache_clear()
        set_runtime(None)  # rebuilt from the chosen servers on first use
        self.settings = get_settings()

    def migrate(self) -> None:
        url = make_url(self.settings.database_url)
        self.step(1, f"Postgres {url.host}:{url.port or 5432}/{url.database}: migrating")
        with database_errors():
            migrate.upgrade(self.settings.database_url)
        rt = cli_runtime()
        try:
            rt.redis.ping()
        except Exception as exc:  # noqa: BLE001 - any failure here means "not reachable"
            raise click.ClickException(f"cannot reach Redis ({exc}). Is it running "
                                       "(`make services`), and is REDIS_URL right?") from None
        broker = probes.check_broker(self.settings.celery_broker_url)
        self.step(1, f"migrations done; Redis answers; Celery broker: {broker}")

    def choose_kite(self, flag: bool | None) -> None:
        with database_errors(), cli_runtime().engine.connect() as conn:
            accounts = account_repo.list_all(conn)
        self.sim, why = want_simulator(flag, self.settings, accounts)
        if self.sim:
            self.step(2, f"Kite: the simulator ({why})")
            return
        self.step(2, f"Kite: {self.settings.kite_ws_root} ({why})")
        if not any(a.enabled for a in accounts):
            raise click.ClickException("no enabled account: add one with `ticker-worker accounts "
                                       "add NAME --api-key K --access-token T`, or use --sim")
        demo = [a.name for a in accounts if a.enabled and a.api_key in DEMO_KEYS]
        if demo:
            self.sup.say(f"note: demo accounts {', '.join(demo)} are enabled and will fail against "
                         "real Kite; `ticker-worker accounts disable NAME` them", fg="yellow")

    def check_ports(self) -> None:
        wanted = {"holder": self.ports.holder, "flower": self.ports.flower}
        if self.sim:
            wanted["simulator"] = self.ports.sim
        if len(set(wanted.values())) < len(wanted):
            raise click.ClickException(f"the ports must differ: {wanted}")
        for name, port in wanted.items():
            if probes.port_in_use(port):
                raise click.ClickException(
                    f"port {port} ({name}) is already in use: is another `ticker-worker up` "
                    f"running? Pick others with --{'sim' if name == 'simulator' else name}-port "
                    "or --port-base")

    def point_children(self) -> None:
        """Environment every child (and this process's own Kite calls) shares."""
        env = {"HOLDER_HTTP_PORT": str(self.ports.holder)}
        if self.sim:
            env["KITE_API_ROOT"] = f"http://127.0.0.1:{self.ports.sim}"
            env["KITE_WS_ROOT"] = f"ws://127.0.0.1:{self.ports.sim}"
            env["KITE_LOGIN_URL"] = f"http://127.0.0.1:{self.ports.sim}/connect/login"
            # The simulator streams around the clock: backfills follow its clock, not NSE's.
            env.setdefault("MARKET_HOURS", "always-open")
        os.environ.update(env)
        get_settings.cache_clear()
        set_runtime(None)  # rebuilt from the new settings on first use
        self.settings = get_settings()

    def start_sim(self) -> None:
        if not self.sim:
            return
        argv = [sys.executable, "-m", "ticker_worker.sim", "--host", "127.0.0.1",
                "--port", str(self.ports.sim)]
        if self.tick_interval is not None:
            argv += ["--tick-interval", str(self.tick_interval)]
        self.sup.start("sim", argv)
        url = f"http://127.0.0.1:{self.ports.sim}"
        self.sup.wait_ready(lambda: http_get(f"{url}/_sim/stats")[0] == 200, "the simulator",
                            READY_TIMEOUT)
        self.step(2, f"simulator answering at {url}")

    def ensure_accounts(self) -> None:
        if not self.sim:
            self.step(3, "accounts: using the configured ones")
            return
        added = []
        with database_errors(), cli_runtime().engine.begin() as conn:
            existing = {a.name for a in account_repo.list_all(conn)}
            for n, name in enumerate(DEMO_ACCOUNTS, 1):
                if name not in existing:
                    account_repo.add(conn, name, f"demo{n}", secrets.token_hex(16))
                    added.append(name)
        self.step(3, f"demo accounts {', '.join(DEMO_ACCOUNTS)} "
                     f"({'added ' + ', '.join(added) if added else 'already registered'})")

    def sync_instruments(self, ctx: click.Context) -> None:
        with database_errors(), cli_runtime().engine.connect() as conn:
            count = instrument_repo.count(conn)
        if count:
            self.step(4, f"instrument registry holds {count} instruments")
            return
        self.step(4, f"instrument registry is empty: syncing from {self.settings.kite_api_root}")
        ctx.invoke(instruments_cli.sync)
        self.sup.check()

    def start_holder(self) -> None:
        self.sup.start("holder", [sys.executable, "-m", "ticker_worker.cli", "holder"])
        url = f"http://127.0.0.1:{self.ports.holder}/health"
        self.sup.wait_ready(partial(probes.holder_status, url), "the holder's /health",
                            READY_TIMEOUT)
        try:
            # Healthy means its accounts' WebSockets are up; an expired real token never gets
            # there, and `up` should still run so that `status` can show why.
            self.sup.wait_ready(lambda: probes.holder_status(url) == "healthy", "a healthy holder",
                                HEALTHY_TIMEOUT)
            self.step(5, f"holder healthy at {url}")
        except NotReady:
            status = probes.holder_status(url)
            self.sup.say(f"[5/{STAGES}] holder answers but is {status}: see {url} and "
                         "`ticker-worker status`", fg="yellow")

    def start_workers(self) -> None:
        host = socket.gethostname()
        # Commands are short and I/O-bound: a thread pool serves them without the prefork
        # pool's inter-process hop. Backfills keep prefork, which enforces time limits; gap
        # backfills get their own worker, so their backlog never delays a new subscription's.
        pools = (("worker", "celery", ["-P", "threads", "-c", "8"]),
                 ("backfill", "backfill", ["-c", "2"]),
                 ("gaps", "backfill_gaps", ["-c", "1"]))
        for name, queue, pool in pools:
            node = f"{name}-{os.getpid()}@{host}"
            self.nodes.append(node)
            self.sup.start(name, [sys.executable, "-m", "celery", "-A", "ticker_worker", "worker",
                                  "-Q", queue, "-n", node, *pool, "--without-mingle",
                                  "--without-gossip", "-l", "INFO"])
        with probes.CeleryPing(self.settings.celery_broker_url) as ping:
            for node in self.nodes:
                self.sup.wait_ready(partial(ping, node), f"celery worker {node}", READY_TIMEOUT)
        self.step(6, "workers ready: " + ", ".join(
            f"{node} (queue {queue})" for node, (_, queue, _) in zip(self.nodes, pools,
                                                                     strict=True)))

    def start_flower(self) -> None:
        self.flower_auth = auth, _ = flower_credentials(self.settings, self.state_dir)
        # Credentials go through the environment, not argv, where `ps` would show them.
        self.sup.start("flower", [sys.executable, "-m", "celery", "-A", "ticker_worker", "flower",
                                  "--address=127.0.0.1", f"--port={self.ports.flower}",
                                  f"--tasks_columns={FLOWER_COLUMNS}"],
                       env={"FLOWER_BASIC_AUTH": auth})
        url = f"http://127.0.0.1:{self.ports.flower}"
        # /healthcheck answers before Flower's event consumer is connected, and Flower lists
        # only the tasks whose events it received: ready means it has heard from our workers.
        self.sup.wait_ready(partial(probes.flower_hears, url, auth, self.nodes),
                            "Flower receiving the workers' events", READY_TIMEOUT)
        self.step(7, f"Flower answering at {url}, receiving the workers' events")

    def announce(self, started: float) -> None:
        say, host, cli = self.sup.say, "http://127.0.0.1", _cli_hint()
        say(f"ready in {time.monotonic() - started:.1f}s:", fg="green")
        if self.sim:
            say(f"  simulator  {host}:{self.ports.sim}  (Kite REST + ticker WS; /_sim/stats)")
        say(f"  holder     {host}:{self.ports.holder}/health  {host}:{self.ports.holder}/metrics")
        say(f"  workers    {', '.join(self.nodes)}")
        say(f"  flower     {host}:{self.ports.flower}  (user:password in "
            f"{self.flower_auth[1] or 'FLOWER_BASIC_AUTH'})")
        say(f"try:  {cli} subscribe 256265 --wait   then   {cli} status", fg="green")
        say("Ctrl-C stops everything.")
