"""Headless Chromium for tests that look at a page as a person does (Flower, login pages).

Selenium drives Debian's `chromium` through Debian's `chromedriver` (same build, so they always
match; `scripts/ensure-chromium.sh` installs both). Selenium is given both paths, so its own
driver manager never tries to download anything. Use it from a test module with

    from tests.browser import screenshot  # the `browser` fixture comes from tests/conftest.py

    def test_page(browser):
        browser.get("http://127.0.0.1:5555/")
        screenshot(browser, "flower-home")

Screenshots land in `test-artifacts/` at the repository root (TEST_ARTIFACTS overrides it;
git-ignored), kept after the run; the helper returns the file's path.
`basic_auth(driver, user, password)` makes every later request of that browser carry HTTP Basic
credentials (what a person types into the browser's prompt, which headless Chromium cannot
show).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = os.environ.get("CHROMIUM_BINARY", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parent.parent
                                / "test-artifacts"))
# Headless in a root container: no sandbox (Chromium refuses root with it), no GPU, and nothing
# that phones home (updates, sync, QUIC probes), since only loopback is reachable.
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")
PAGE_LOAD_TIMEOUT = 30


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing: run `bash scripts/ensure-chromium.sh`"
    return None


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """A fresh headless Chromium (a Selenium WebDriver) with its own throw-away profile."""
    problem = _missing()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: WebDriver, name: str) -> Path:
    """Save the current page as `test-artifacts/<name>.png` and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    if not driver.save_screenshot(str(path)):
        raise AssertionError(f"Chromium could not save a screenshot to {path}")
    return path


def basic_auth(driver: WebDriver, user: str, password: str) -> None:
    """Send `Authorization: Basic ...` with every request this browser makes from now on."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders",  # type: ignore[attr-defined]
                           {"headers": {"Authorization": f"Basic {token}"}})
