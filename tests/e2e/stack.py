"""A real stack for end-to-end tests: simulator, holder, worker as processes; Redis listeners."""

from __future__ import annotations

import json
import sys
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Engine, text

from tests.procs import Proc, free_port, wait_for


class Sim:
    """`python -m ticker_worker.sim` on a free port."""

    def __init__(self, tick_interval: float = 0.2, seed: int = 7, *extra: str) -> None:
        self.port = free_port()
        self.proc = Proc("sim", [sys.executable, "-m", "ticker_worker.sim", "--port",
                                 str(self.port), "--seed", str(seed), "--tick-interval",
                                 str(tick_interval), *extra])
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        wait_for(lambda: self.stats() is not None, 30, "the simulator")

    def call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.http + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def stats(self, tokens: bool = False) -> dict[str, Any]:
        return self.call("GET", "/_sim/stats" + ("?tokens=1" if tokens else ""))

    def fault(self, kind: str, api_key: str) -> Any:
        return self.call("POST", f"/_sim/{kind}?api_key={api_key}")

    def token_lists(self) -> dict[str, list[list[int]]]:
        """api_key -> the token list of each open connection."""
        doc = self.stats(tokens=True)
        return {k: [c["token_list"] for c in v["connections"]] for k, v in doc["api_keys"].items()}

    def stop(self) -> None:
        self.proc.stop()


def holder_env(sim: Sim, **extra: object) -> dict[str, str]:
    env = {"KITE_WS_ROOT": sim.ws, "KITE_API_ROOT": sim.http, "HOLDER_HTTP_PORT": str(free_port()),
           "STALE_AFTER": "2", "RECONCILE_INTERVAL": "1", "RECONNECT_MAX_DELAY": "2",
           "TICK_FLUSH_INTERVAL": "0.3", "LOG_LEVEL": "INFO"}
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


def health_at(port: int) -> dict[str, Any] | None:
    """A holder's /health document (503 included), or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())
    except OSError:
        return None


class Holder:
    """`ticker-worker holder` as a process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = int(env["HOLDER_HTTP_PORT"])
        self.proc = Proc("holder", [sys.executable, "-m", "ticker_worker.cli", "holder"], env)
        wait_for(lambda: self.health() is not None or not self.proc.alive(), 30, "the holder")
        assert self.proc.alive(), self.proc.output()

    def health(self) -> dict[str, Any] | None:
        return health_at(self.port)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> None:
        self.proc.stop()


class Listener:
    """Collects messages from Redis pub/sub channels in a background thread."""

    def __init__(self, client: redis.Redis, *channels: str) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.messages: dict[str, list[Any]] = {c: [] for c in channels}
        self.lock = threading.Lock()
        self.pubsub.subscribe(**{c: self._handler(c) for c in channels})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _handler(self, channel: str) -> Callable[[dict[str, Any]], None]:
        def handle(message: dict[str, Any]) -> None:
            with self.lock:
                self.messages[channel].append(json.loads(message["data"]))
        return handle

    def get(self, channel: str) -> list[Any]:
        with self.lock:
            return list(self.messages[channel])

    def clear(self) -> None:
        with self.lock:
            for v in self.messages.values():
                v.clear()

    def stop(self) -> None:
        self.thread.stop()
        self.thread.join(5)
        self.pubsub.close()


def add_accounts(engine: Engine, n: int, prefix: str = "acct") -> list[str]:
    from ticker_worker.db import accounts

    with engine.begin() as conn:
        for i in range(1, n + 1):
            accounts.add(conn, f"{prefix}{i}", f"key{i}", f"token-{i}-secret")
    return [f"key{i}" for i in range(1, n + 1)]


def sub_rows(engine: Engine) -> dict[int, Any]:
    with engine.connect() as conn:
        return {r.instrument_token: r for r in conn.execute(text("SELECT * FROM subscriptions"))}


def wait_status(engine: Engine, tokens: list[int], status: str, timeout: float = 20) -> None:
    def done() -> bool:
        rows = sub_rows(engine)
        return all(t in rows and rows[t].status == status for t in tokens)
    wait_for(done, timeout, f"{len(tokens)} subscriptions {status}")


__all__ = ["Holder", "Listener", "Sim", "add_accounts", "health_at", "holder_env", "sub_rows",
           "wait_status"]
