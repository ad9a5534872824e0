"""What the failover tests watch from outside the holders: tick arrivals per instrument, every
command Redis executed (and which holder's socket sent it), the simulator's connection counts
during a takeover, and a TCP proxy that stops forwarding (a partition, not a reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import defaultdict
from typing import Any

import orjson
import psutil
import redis
from sqlalchemy import Engine, text

from tests.e2e.stack import Holder, Sim
from tests.procs import free_port, wait_for


def load_many(engine: Engine, universe: list[dict[str, Any]], n: int) -> list[int]:
    """`n` tradable non-index instruments of the simulator's dump, into the registry."""
    from tests.conftest import insert_instruments  # here: the benchmarks import this module
    from ticker_worker.db.instruments import COLUMNS

    rows = sorted((r for r in universe if r["segment"] != "INDICES"),
                  key=lambda r: r["instrument_token"])[:n]
    assert len(rows) == n, f"the simulator lists only {len(rows)} tradable instruments"
    insert_instruments(engine, [tuple(r[c] for c in COLUMNS) for r in rows])
    return [r["instrument_token"] for r in rows]


class TickClock:
    """When each instrument ticked on the channel (wall-clock seconds, comparable with
    Postgres's and Redis's clocks on this host), and its longest silence while recording.

    Lighter than the e2e Listener (which keeps every tick): 9,000 instruments tick here for
    minutes, and only arrival times matter.
    """

    def __init__(self, client: redis.Redis, channel: str) -> None:
        self.pubsub = own_client(client).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(channel)
        self.last: dict[int, float] = {}
        self.max_gap: dict[int, float] = {}
        self.arrivals: dict[int, list[float]] | None = None
        self.recording = False
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(redis.RedisError, OSError):
                message = self.pubsub.get_message(timeout=0.2)
                if message is None:
                    continue
                now = time.time()
                ticks = orjson.loads(message["data"])
                with self.lock:
                    for tick in ticks:
                        self._see(tick["instrument_token"], now)

    def _see(self, token: int, now: float) -> None:
        previous = self.last.get(token)
        self.last[token] = now
        if self.arrivals is not None:
            self.arrivals.setdefault(token, []).append(now)
        if self.recording and previous is not None:
            gap = now - previous
            if gap > self.max_gap.get(token, 0.0):
                self.max_gap[token] = gap

    def ticked_since(self, since: float, tokens: list[int]) -> bool:
        """Every one of `tokens` ticked after `since` (a time.time() value)."""
        with self.lock:
            return all(self.last.get(t, 0.0) > since for t in tokens)

    def record(self) -> None:
        """Start measuring silences (from each instrument's next tick on)."""
        with self.lock:
            self.max_gap.clear()
            self.recording = True

    def longest_gap(self) -> tuple[int, float]:
        with self.lock:
            token = max(self.max_gap, key=lambda t: self.max_gap[t])
            return token, self.max_gap[token]

    def keep_arrivals(self, keep: bool) -> None:
        """Keep every arrival from now on (each list starts with the last one before), or stop."""
        with self.lock:
            self.arrivals = {t: [at] for t, at in self.last.items()} if keep else None

    def first_after(self, since: float, tokens: list[int]) -> dict[int, float]:
        """Each token's first kept arrival after `since`."""
        assert self.arrivals is not None
        with self.lock:
            return {t: next(a for a in self.arrivals[t] if a > since) for t in tokens}

    def longest_silence(self) -> float:
        """The longest time between two kept arrivals of one instrument."""
        assert self.arrivals is not None
        with self.lock:
            return max((b - a for seen in self.arrivals.values()
                        for a, b in itertools.pairwise(seen)), default=0.0)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.pubsub.close()


def own_client(client: redis.Redis) -> redis.Redis:
    """A client on a pool of its own, with `client`'s server and options."""
    return redis.Redis(connection_pool=redis.ConnectionPool(
        **client.connection_pool.connection_kwargs))


class CommandLog:
    """Every command the Redis server executes (MONITOR), with its server time and client port.

    The test attributes commands to a holder by the client ports of the holder's sockets, so a
    paused holder's late PUBLISH shows up whatever its own logs say.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = own_client(client)
        self.commands: list[tuple[float, int, str]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "MONITOR did not start"

    def _run(self, ready: threading.Event) -> None:
        with contextlib.suppress(redis.ConnectionError, OSError, ValueError), \
                self.client.monitor() as monitor:
            ready.set()
            while not self.stopped.is_set():
                cmd = monitor.next_command()
                port = int(cmd.get("client_port") or 0)
                with self.lock:
                    self.commands.append((float(cmd["time"]), port, cmd["command"]))

    def since(self, when: float, *verbs: str) -> list[tuple[float, int, str]]:
        """Commands after `when` (a time.time() value) whose text starts with one of `verbs`."""
        with self.lock:
            return [c for c in self.commands if c[0] > when
                    and c[2].split(" ", 1)[0].upper() in verbs]

    def stop(self) -> None:
        self.stopped.set()
        # next_command() blocks until the server sends something: give it one command to echo.
        with contextlib.suppress(Exception):
            own_client(self.client).ping()
        self.thread.join(5)
        self.client.close()


def redis_ports(holder: Holder, redis_port: int) -> set[int]:
    """The local ports of the holder's open connections to Redis."""
    conns = psutil.Process(holder.proc.popen.pid).net_connections(kind="tcp")
    return {c.laddr.port for c in conns if c.raddr and c.raddr.port == redis_port}


class ConnectionWatch:
    """Polls the simulator's stats during a takeover: the most connections any api key had at
    once, and the most tokens any connection held."""

    def __init__(self, sim: Sim, period: float = 0.05) -> None:
        self.sim, self.period = sim, period
        self.most_connections: dict[str, int] = defaultdict(int)
        self.high_water = 0
        self.polls = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(OSError, ValueError):
                doc = self.sim.stats()
                for key, entry in doc["api_keys"].items():
                    self.most_connections[key] = max(self.most_connections[key],
                                                     len(entry["connections"]))
                self.high_water = max(self.high_water, doc["high_water"])
                self.polls += 1
            self.stopped.wait(self.period)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


class StallingProxy:
    """Forwards a loopback port to `target` until `stall()`; then no byte moves either way and
    new connections hang, as across a network partition: no reset, no close, just silence."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.flowing = asyncio.Event()
        self.loop.call_soon_threadsafe(self.flowing.set)
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port), self.loop).result(10)

    def stall(self) -> None:
        self.loop.call_soon_threadsafe(self.flowing.clear)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self.flowing.wait()
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    def close(self) -> None:
        async def shut() -> None:
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def lease_row(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT * FROM holder_lease WHERE name = 'holder'")).first()


def registry(engine: Engine) -> dict[int, Any]:
    """The holders registry by pid."""
    with engine.connect() as conn:
        return {r.pid: r for r in conn.execute(text("SELECT * FROM holders"))}


def role(holder: Holder) -> str | None:
    doc = holder.health()
    return doc.get("role") if doc else None


def wait_role(holder: Holder, wanted: str, timeout: float = 30) -> None:
    wait_for(lambda: role(holder) == wanted, timeout, f"the holder to be {wanted}")
