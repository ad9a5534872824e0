"""A small process supervisor for `ticker-worker up`: children with name-prefixed output,
readiness waits and probes, crash detection, a stop that leaves no process behind, and the
private files it keeps between runs.

Each child runs in its own session (so its own process group): a terminal's Ctrl-C reaches only
the supervisor, which then stops the children in reverse start order, and killing a group also
takes the grandchildren a child forked (Celery's prefork pool).

The prefixed, coloured output is honcho's (its `Printer`, Foreman's format). Honcho's `Manager`
does not fit the rest: it starts every process at once (ours start one stage at a time, each
after the previous is ready), stops them all with SIGTERM in no order (Postgres needs SIGINT,
and the servers must stop after their clients), cannot run a child as another user (Postgres
refuses root), and forks a Python process per child. What stays here is ours: the stages'
readiness, the secret scrubbing of every line, and the ordered stop.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO, TypeVar

import click
from honcho.colour import get_colours
from honcho.printer import Message, Printer

from ticker_worker.errors import TickerWorkerError
from ticker_worker.logs import redact

TAIL_LINES = 30
POLL = 0.1
T = TypeVar("T")
# A Kite credential in a URL or a log line; masked even if no registered secret matches it.
_TOKEN_RE = re.compile(r"""(access_token["']?\s*[=:]\s*["']?)[^"'&\s]+""")


class SupervisorError(TickerWorkerError):
    """Raised when the supervised stack cannot start or keep running."""


class Interrupted(SupervisorError):
    """Raised when SIGINT or SIGTERM arrives while the stack is starting."""


class ChildExited(SupervisorError):
    """Raised when a child process exits while it should be running."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited with {child.describe_exit()}")
        self.child = child


class NotReady(SupervisorError):
    """Raised when a stage does not become ready within its timeout."""


def _scrub(line: str) -> str:
    return _TOKEN_RE.sub(lambda m: m.group(1) + "***", redact(line))


@dataclass
class Child:
    """One supervised process and the last lines it printed."""

    name: str
    popen: subprocess.Popen[bytes]
    colour: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    pump: threading.Thread | None = None
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def describe_exit(self) -> str:
        code = self.popen.returncode
        if code is None:
            return "no exit yet"
        if code < 0:
            return f"exit code {code} (killed by {signal.Signals(-code).name})"
        return f"exit code {code}"

    def group_alive(self) -> bool:
        """True while any process of the child's group (the child or what it forked) exists."""
        self.popen.poll()  # reap the leader, or it lingers as a zombie in its own group
        try:
            os.killpg(self.pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or the pgid was reused
            return False
        return True

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)


class Supervisor:
    """Starts children, prints their output with a name prefix, and stops them all."""

    def __init__(self, name: str = "up", width: int = 8) -> None:
        self.name = name
        self._out = Printer(sys.stdout, width=width)
        self._err = Printer(sys.stderr, width=width)
        self._colours = get_colours()
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self._hurry = threading.Event()
        self._print_lock = threading.Lock()

    def _emit(self, source: str, text: str, err: bool = False, fg: str | None = None,
              colour: str | None = None) -> None:
        printer = self._err if err else self._out
        # Styled only on a terminal, as click.echo would: a log file gets plain text.
        line = click.style(text, fg=fg) if fg and printer.output.isatty() else text
        with self._print_lock:
            printer.write(Message("line", line, datetime.now(), source, colour))

    def say(self, text: str, fg: str | None = None, err: bool = False) -> None:
        """Print one of the supervisor's own lines."""
        self._emit(self.name, text, err=err, fg=fg)

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            line = _scrub(raw.decode(errors="replace").rstrip())
            child.tail.append(line)
            self._emit(child.name, line, colour=child.colour)
        stream.close()

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM start a clean stop; a second one hurries it (SIGKILL at once)."""
        def handle(signum: int, _: FrameType | None) -> None:
            if self.stopping.is_set():
                self._hurry.set()
            self.stopping.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              as_user: tuple[int, int] | None = None,
              stop_signal: int = signal.SIGTERM) -> Child:
        """Start a child in its own session, its stdout and stderr merged and prefixed;
        `as_user` (uid, gid) runs it as that user (a server that refuses root)."""
        self.check()
        if not self.children:
            # Only from now on is there something to stop cleanly; before, Ctrl-C just aborts.
            self.install_signal_handlers()
        uid, gid = as_user or (None, None)
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True,
            user=uid, group=gid, extra_groups=None if uid is None else [],
        )
        child = Child(name, popen, colour=next(self._colours),
                      stop_signal=stop_signal)
        assert popen.stdout is not None
        child.pump = threading.Thread(target=self._pump, args=(child, popen.stdout),
                                      name=f"pump-{name}", daemon=True)
        child.pump.start()
        self.children.append(child)
        self.say(f"started {name} (pid {popen.pid})")
        return child

    def check(self) -> None:
        """Raise if a stop was requested or a child has exited."""
        if self.stopping.is_set():
            raise Interrupted("stop requested")
        for child in self.children:
            if child.exited():
                raise ChildExited(child)

    def wait_ready(self, check: Callable[[], T | None], what: str, timeout: float) -> T:
        """Poll `check` until it returns something truthy, while watching the children."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                value = check()
            except Exception:  # noqa: BLE001 - not ready yet (connection refused, ...)
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise NotReady(f"{what} not ready after {timeout:.0f}s")
            self.stopping.wait(POLL)

    def watch(self) -> Child | None:
        """Block until a stop signal (returns None) or a child exits (returns that child)."""
        while not self.stopping.wait(POLL):
            for child in self.children:
                if child.exited():
                    return child
        return None

    def report_exit(self, child: Child) -> None:
        """Say loudly that a child died, with its last lines of output."""
        child.signal_group(signal.SIGKILL)  # leftovers would keep its output pipe open
        if child.pump is not None:
            child.pump.join(2.0)
        self.report(child, f"{child.name} (pid {child.pid}) exited unexpectedly with "
                           f"{child.describe_exit()}. Its last lines:")

    def report(self, child: Child, headline: str) -> None:
        """A red headline and the child's last lines of output."""
        self.say(headline, fg="red", err=True)
        for line in list(child.tail)[-15:] or ["(no output)"]:
            self.say(f"  {child.name} | {line}", fg="red", err=True)

    def stop_all(self, budget: float = 15.0, per_child: float = 8.0) -> list[str]:
        """Stop the children in reverse start order; SIGKILL what outlives its share of
        `budget`. Returns the names of the children that had to be killed."""
        deadline = time.monotonic() + budget
        killed: list[str] = []
        for child in reversed(self.children):
            if not child.group_alive():
                continue
            self.say(f"stopping {child.name}")
            child.signal_group(child.stop_signal)
            wait = 0.0 if self._hurry.is_set() else min(per_child, deadline - time.monotonic())
            if not self._wait_gone(child, wait):
                killed.append(child.name)
                child.signal_group(signal.SIGKILL)
                self._wait_gone(child, 5.0)
        for child in self.children:
            if child.pump is not None:
                child.pump.join(1.0)
        for child in self.children:
            if child.group_alive():
                self.say(f"could not stop {child.name} (process group {child.pid})",
                         fg="red", err=True)
        return killed

    def _wait_gone(self, child: Child, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        while child.group_alive():
            if time.monotonic() >= deadline or self._hurry.is_set():
                return not child.group_alive()
            time.sleep(0.05)
        return True


def state_folder(path: Path) -> Path:
    """`up`'s private folder (0700 when new), which ignores itself in git."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by ticker-worker; holds secrets\n*\n")
    return path


def private_file(path: Path, make: Callable[[], str]) -> str:
    """The one-line secret in `path`, written by `make()` with mode 0600 when absent. Its
    directory (0700) ignores itself in git, so the secret can never be committed."""
    state_folder(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        return path.read_text().strip()
    value = make()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
