"""`ticker-worker up` end to end: the whole stack from one command, used the way a caller would
(tasks by name, Redis channels, Postgres, Flower's API), then stopped by Ctrl-C or by a crash.

The stack gets a database, a Redis db, a channel prefix and ports of its own, so it cannot
disturb the other tests, and runs in a temporary directory, so no developer `.env` leaks in.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from celery import Celery
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.brokers import purge
from tests.browser import basic_auth, screenshot
from tests.procs import free_port, wait_for
from tests.run import RUN_ID, RUN_SUFFIX
from ticker_worker.cli.up_stages import Ports, flower_credentials, want_simulator
from ticker_worker.config import KITE_WS_ROOT, Settings
from ticker_worker.db.accounts import AccountRow

pytestmark = pytest.mark.e2e
DB_NAME = f"ticker_worker_up_test{RUN_SUFFIX}"
REDIS_DB = 14 - 2 * RUN_ID
PREFIX = f"ticker:uptest{RUN_SUFFIX}"
TOKEN = 256265


class Up:
    """`ticker-worker up` in a subprocess, its output in a file."""

    def __init__(self, env: dict[str, str], workdir: Path, *extra: str,
                 state_dir: str = "state") -> None:
        self.ports = {"sim": free_port(), "holder": free_port(), "flower": free_port()}
        self.state_dir = workdir / state_dir
        self.log = workdir / f"up-{self.ports['sim']}.log"
        args = [sys.executable, "-m", "ticker_worker.cli", "up", "--tick-interval", "0.2",
                "--state-dir", str(self.state_dir), *extra]
        for name, port in self.ports.items():
            args += [f"--{name}-port", str(port)]
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          cwd=workdir, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for(lambda: "| ready in" in self.output() or self.popen.poll() is not None, 240,
                 "`ticker-worker up` to report ready")
        assert self.popen.poll() is None, self.output()

    def child_pids(self) -> dict[str, int]:
        return {n: int(p) for n, p in re.findall(r"started (\S+) \(pid (\d+)\)", self.output())}

    def leftovers(self) -> list[str]:
        """Live processes of the children's groups, or whose command line names our ports."""
        groups = set(self.child_pids().values())
        ports = re.compile(r"\b(" + "|".join(str(p) for p in self.ports.values()) + r")\b")
        found = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            try:
                if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                    continue
                cmd = " ".join(proc.info["cmdline"] or [])
                if os.getpgid(proc.pid) in groups or ports.search(cmd):
                    found.append(f"{proc.pid}: {cmd}")
            except (psutil.Error, ProcessLookupError):
                continue
        return found

    def kill(self) -> None:
        """Test teardown only: no process may outlive the test, whatever happened."""
        for pid in [self.popen.pid, *self.child_pids().values()]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.popen.wait(10)


class Channels:
    """Collects the JSON messages of Redis pub/sub channels in a background thread."""

    def __init__(self, client: redis.Redis, *channels: str) -> None:
        self.client = client  # collecting the client would close the pubsub's connection
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*channels)
        self.messages: dict[str, list[Any]] = {c: [] for c in channels}
        self.running = True
        self.thread = threading.Thread(target=self._run, name="up-channels", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            msg = self.pubsub.get_message(timeout=0.2)
            if msg is not None:
                self.messages[msg["channel"].decode()].append(json.loads(msg["data"]))

    def get(self, channel: str) -> list[Any]:
        return list(self.messages[channel])

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


def get(url: str, auth: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def clear_redis(url: str) -> None:
    """Forget a previous run's queues, results and keys. Not FLUSHDB: benchmarks/bench_backfill
    keeps its rate-limit keys in this db too."""
    client = redis.Redis.from_url(url)
    patterns = (f"{PREFIX}:*", "celery", "backfill", "unacked*", "_kombu.*", "celery-task-meta-*")
    for pattern in patterns:
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)
    client.close()


@pytest.fixture(scope="module")
def up_env(settings: Settings) -> Iterator[dict[str, str]]:
    """An environment naming the stack's own database (dropped first) and Redis db (cleared)."""
    url = make_url(settings.database_url).set(database=DB_NAME)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)'))
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Postgres unreachable: {exc}")
        pytest.skip(f"Postgres unreachable: {exc}")
    finally:
        admin.dispose()
    redis_url = f"{settings.redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    clear_redis(redis_url)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KITE_", "FLOWER_", "CELERY_", "HOLDER_"))}
    env.update(DATABASE_URL=url.render_as_string(hide_password=False), REDIS_URL=redis_url,
               TICKER_REDIS_PREFIX=PREFIX, LOG_LEVEL="INFO", RECONCILE_INTERVAL="1",
               TICK_FLUSH_INTERVAL="0.3", BACKFILL_DAYS="2")
    yield env


@pytest.fixture(scope="module")
def stack(up_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    up = Up(up_env, tmp_path_factory.mktemp("up"))
    try:
        up.wait_ready()
        yield up
    finally:
        if up.popen.poll() is None:
            up.kill()
        print(up.output())


@pytest.fixture(scope="module")
def up_engine(up_env: dict[str, str]) -> Iterator[Engine]:
    engine = create_engine(up_env["DATABASE_URL"])
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def subscribed(stack: Up, up_env: dict[str, str]) -> Iterator[Channels]:
    """A listener on the stack's channels, then a subscribe sent by name like any caller."""
    listener = Channels(redis.Redis.from_url(up_env["REDIS_URL"]), f"{PREFIX}:events",
                        f"{PREFIX}:ticks")
    client = Celery(broker=up_env["REDIS_URL"], backend=up_env["REDIS_URL"])
    try:
        result = client.send_task("ticker_worker.subscribe", args=[TOKEN]).get(timeout=60)
        assert result["instrument_token"] == TOKEN and result["mode"] == "full", result
        yield listener
    finally:
        client.close()
        listener.stop()


def test_output_says_what_runs_where(stack: Up) -> None:
    out = stack.output()
    assert "no real Kite account is configured" in out
    assert f"simulator  http://127.0.0.1:{stack.ports['sim']}" in out
    assert f"http://127.0.0.1:{stack.ports['holder']}/health" in out
    assert f"http://127.0.0.1:{stack.ports['holder']}/metrics" in out
    creds = stack.state_dir.resolve() / "flower-credentials"
    assert f"flower     http://127.0.0.1:{stack.ports['flower']}  (user:password in {creds})" in out
    assert "subscribe 256265 --wait" in out and "status" in out
    assert set(stack.child_pids()) == {"sim", "holder", "worker", "backfill", "gaps",
                                        "flower"}
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert (creds.parent / ".gitignore").read_text().splitlines()[-1] == "*"


def test_subscription_created_event(subscribed: Channels) -> None:
    def created() -> list[Any]:
        return [e for e in subscribed.get(f"{PREFIX}:events")
                if e["event_type"] == "subscription_created" and e["instrument_token"] == TOKEN]
    events = wait_for(created, 60, "the subscription_created event")
    assert events[0]["account"].startswith("demo")


def test_ticks_flow(subscribed: Channels) -> None:
    def ticks() -> list[Any]:
        return [t for frame in subscribed.get(f"{PREFIX}:ticks") for t in frame
                if t["instrument_token"] == TOKEN]
    got = wait_for(ticks, 60, "ticks for 256265")
    assert got[0]["is_mock"] is True


def test_candles_backfilled(subscribed: Channels, up_engine: Engine) -> None:
    def candles() -> int:
        with up_engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM candles WHERE instrument_token = "
                                         ":t"), {"t": TOKEN}).scalar_one())
    wait_for(candles, 120, "candles for 256265 in Postgres")


def test_flower_lists_tasks_behind_auth(subscribed: Channels, stack: Up) -> None:
    base = f"http://127.0.0.1:{stack.ports['flower']}"
    auth = (stack.state_dir / "flower-credentials").read_text().strip()
    assert get(f"{base}/api/tasks")[0] == 401
    # `up` reported ready only once Flower heard from the workers, so the one subscribe sent
    # right after startup is listed: no repeating it.
    def listed() -> list[Any]:
        status, body = get(f"{base}/api/tasks", auth)
        assert status == 200, body
        return [t for t in json.loads(body).values() if t["name"] == "ticker_worker.subscribe"]
    task = wait_for(listed, 30, "Flower to list the subscribe task")[0]
    assert task["args"] == f"[{TOKEN}]" and task["state"] == "SUCCESS", task


def test_flower_in_a_browser(subscribed: Channels, stack: Up, browser: WebDriver) -> None:
    """What a person sees: refused without credentials; with them, the Tasks page lists the
    subscribe with its arguments and its success."""
    base = f"http://127.0.0.1:{stack.ports['flower']}"
    browser.get(f"{base}/tasks")
    refused = browser.find_element(By.TAG_NAME, "body").text
    screenshot(browser, "flower-anonymous")
    assert "ticker_worker.subscribe" not in browser.page_source
    assert not browser.find_elements(By.ID, "tasks-table"), refused

    user, password = (stack.state_dir / "flower-credentials").read_text().strip().split(":", 1)
    basic_auth(browser, user, password)
    browser.get(f"{base}/tasks")

    def subscribe_row() -> str:
        rows = browser.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
        return next((r.text for r in rows if "ticker_worker.subscribe" in r.text), "")
    row = WebDriverWait(browser, 30).until(lambda _: subscribe_row())
    path = screenshot(browser, "flower-tasks")
    assert f"[{TOKEN}]" in row and "SUCCESS" in row, (row, path)


def test_no_secret_in_output(subscribed: Channels, stack: Up, up_engine: Engine) -> None:
    with up_engine.connect() as conn:
        tokens = [r[0] for r in conn.execute(text("SELECT access_token FROM accounts"))]
    password = (stack.state_dir / "flower-credentials").read_text().strip().split(":", 1)[1]
    out = stack.output()
    assert tokens and all(t not in out for t in tokens)
    assert password not in out


def test_ctrl_c_stops_everything(stack: Up) -> None:
    assert len(stack.leftovers()) >= 5  # the detector sees the running stack
    stack.popen.send_signal(signal.SIGINT)
    assert stack.popen.wait(25) == 0, stack.output()
    assert "up       | stopped" in stack.output()
    assert wait_for(lambda: not stack.leftovers(), 5, "no process left") is True


def test_crashed_child_stops_the_stack(up_env: dict[str, str], tmp_path: Path) -> None:
    up = Up(up_env, tmp_path)
    try:
        up.wait_ready()
        os.kill(up.child_pids()["sim"], signal.SIGKILL)
        assert up.popen.wait(40) == 1, up.output()
        out = up.output()
        assert re.search(r"sim \(pid \d+\) exited unexpectedly with exit code -9 \(killed by "
                         r"SIGKILL\)", out), out
        assert "up       |   sim | Kite simulator listening on" in out  # its last lines
        assert wait_for(lambda: not up.leftovers(), 5, "no process left") is True
    finally:
        if up.popen.poll() is None:
            up.kill()


def test_sigterm_while_starting_stops_cleanly(up_env: dict[str, str], tmp_path: Path) -> None:
    up = Up(up_env, tmp_path)
    try:
        wait_for(lambda: "started holder" in up.output() or up.popen.poll() is not None, 240,
                 "`up` to start the holder")
        up.popen.send_signal(signal.SIGTERM)
        assert up.popen.wait(25) == 0, up.output()
        assert wait_for(lambda: not up.leftovers(), 5, "no process left") is True
    finally:
        if up.popen.poll() is None:
            up.kill()


def test_up_on_rabbitmq(up_env: dict[str, str], rabbitmq_url: str, tmp_path: Path) -> None:
    """The same stack with CELERY_BROKER_URL=amqp://...: commands through RabbitMQ's quorum
    queues, results on Redis, Flower watching; Ctrl-C still leaves nothing."""
    purge(rabbitmq_url)
    up = Up({**up_env, "CELERY_BROKER_URL": rabbitmq_url}, tmp_path)
    client = Celery(broker=rabbitmq_url, backend=up_env["REDIS_URL"])
    client.conf.task_default_queue_type = "quorum"
    try:
        up.wait_ready()
        assert "Celery broker: amqp://guest:**@127.0.0.1:5672/" in up.output()
        result = client.send_task("ticker_worker.subscribe", args=[TOKEN, "ltp"]).get(timeout=60)
        assert result["instrument_token"] == TOKEN and result["mode"] == "ltp", result
        auth = (up.state_dir / "flower-credentials").read_text().strip()

        def listed() -> bool:
            _, body = get(f"http://127.0.0.1:{up.ports['flower']}/api/tasks", auth)
            return "ticker_worker.subscribe" in {t["name"] for t in json.loads(body).values()}
        wait_for(listed, 30, "Flower to list the subscribe sent through RabbitMQ")
        up.popen.send_signal(signal.SIGINT)
        assert up.popen.wait(25) == 0, up.output()
        assert wait_for(lambda: not up.leftovers(), 5, "no process left") is True
    finally:
        client.close()
        if up.popen.poll() is None:
            up.kill()


# -- the decisions `up` makes before it starts anything (no processes needed) ---------------


def account(name: str, api_key: str, enabled: bool = True) -> AccountRow:
    return AccountRow(name, api_key, "token-secret", enabled, True, None)


@pytest.mark.parametrize(("flag", "ws_root", "accounts", "expected"), [
    (None, None, [], True),
    (None, None, [account("demo1", "demo1")], True),
    (None, None, [account("me", "realkey", enabled=False)], True),
    (None, None, [account("me", "realkey")], False),
    (None, "ws://127.0.0.1:9999", [account("me", "realkey")], True),
    (True, None, [account("me", "realkey")], True),
    (False, None, [], False),
])
def test_simulator_unless_real_accounts(flag: bool | None, ws_root: str | None,
                                        accounts: list[AccountRow], expected: bool) -> None:
    settings = Settings(kite_ws_root=ws_root or KITE_WS_ROOT)
    assert want_simulator(flag, settings, accounts)[0] is expected


def test_flower_credentials_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(flower_basic_auth="")
    value, path = flower_credentials(settings, tmp_path / "state")
    assert path is not None and path.read_text().strip() == value
    user, password = value.split(":")
    assert user and len(password) >= 24
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
    assert flower_credentials(settings, tmp_path / "state") == (value, path)
    assert flower_credentials(Settings(flower_basic_auth="a:b"), tmp_path) == ("a:b", None)


def test_ports() -> None:
    settings = Settings(holder_http_port=8080, flower_port=5555)
    assert Ports.choose(settings, None, None, None, None) == Ports(8765, 8080, 5555)
    assert Ports.choose(settings, 9000, None, None, 7000) == Ports(9000, 9001, 7000)
