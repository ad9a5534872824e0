"""The daily login as an operator does it: `accounts add` once, `accounts login` each morning.

Shared by the e2e tests of the morning; the browser's part is a callable, so urllib or a headless
Chromium can play it.
"""

from __future__ import annotations

import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable

from cryptography.fernet import Fernet

from tests.e2e.stack import Sim
from tests.procs import VENV_BIN, Proc, free_port, wait_for

KEY, SECRET = "morning-key", "morning-app-secret"
SECRET_KEY = Fernet.generate_key().decode()
CALLBACK_PORT = free_port()
REDIRECT = f"http://127.0.0.1:{CALLBACK_PORT}/kite/callback"
Browser = Callable[[str], str]  # opens the login URL, logs in, returns the final page's text


def login_sim(*extra: str) -> Sim:
    """A simulator that knows the app's api secret and redirects to our callback."""
    return Sim(0.2, 7, f"--api-secret={KEY}:{SECRET}", f"--redirect-url={KEY}:{REDIRECT}",
               *extra)


def cli_env(sim: Sim) -> dict[str, str]:
    return {"KITE_API_ROOT": sim.http, "KITE_WS_ROOT": sim.ws,
            "KITE_LOGIN_URL": sim.http + "/connect/login", "KITE_REDIRECT_URL": REDIRECT,
            "TICKER_SECRET_KEY": SECRET_KEY}


def accounts_cli(sim: Sim, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "ticker-worker"), "accounts", *args], text=True,
                          capture_output=True, env={**os.environ, **cli_env(sim)}, timeout=60,
                          stdin=subprocess.DEVNULL)


def add_account(sim: Sim, name: str = "acct1") -> None:
    done = accounts_cli(sim, "add", name, "--api-key", KEY, "--api-secret", SECRET)
    assert done.returncode == 0, done.stderr


def url_browser(url: str) -> str:
    """The browser's part with urllib: fetch the form, post it, follow the redirect."""
    urllib.request.urlopen(url, timeout=10).read()
    form = urllib.parse.urlencode({"api_key": KEY, "user_id": "AB1234", "password": "pw",
                                   "totp": "123456"}).encode()
    sim_root = url.split("/connect/login")[0]
    with urllib.request.urlopen(sim_root + "/connect/login", data=form, timeout=20) as page:
        return page.read().decode()


def log_in(sim: Sim, browser: Browser, name: str = "acct1") -> str:
    """Run `accounts login NAME`, let `browser` log in at the printed URL; the page it ends on."""
    proc = Proc("login", [str(VENV_BIN / "ticker-worker"), "accounts", "login", name],
                cli_env(sim))
    try:
        wait_for(lambda: "waiting for" in proc.output() or not proc.alive(), 30, "the login URL")
        url = next(ln for ln in proc.output().splitlines() if ln.startswith("http"))
        page = browser(url)
        assert proc.popen.wait(30) == 0, proc.output()
        assert "logged in" in proc.output()
        return page
    finally:
        proc.stop()
