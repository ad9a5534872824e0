"""Running the real processes (worker, holder, simulator) from tests, and cleaning them up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


class Proc:
    """A child process with its output captured to a file, shown when a test fails."""

    def __init__(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)
        self.popen = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def output(self) -> str:
        """Everything the process printed so far."""
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the process group and wait; SIGKILL if it does not exit in time."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL, no goodbye: the crash case."""
        self.stop(signal.SIGKILL)


def celery_worker(queues: str = "celery", concurrency: int = 2, env: dict[str, str] | None = None,
                  name: str = "worker") -> Proc:
    """A real `celery -A ticker_worker worker` process."""
    return Proc(name, [
        str(VENV_BIN / "celery"), "-A", "ticker_worker", "worker", "-Q", queues, "-P", "threads",
        "-c", str(concurrency), "--without-mingle", "--without-gossip", "-n", f"{name}@%h",
        "-l", "INFO",
    ], env)
