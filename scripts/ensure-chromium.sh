#!/usr/bin/env bash
# Makes sure headless Chromium and its matching WebDriver (Debian's `chromium` and
# `chromium-driver`) are installed, for the browser tests (tests/browser.py). Nothing can be
# downloaded but packages, so the browser comes from apt, never from a test tool's own fetcher.
# Does nothing when both are present; needs root (or sudo) to install.
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "Chromium is missing and this user cannot install it: run as root" \
         "\`apt-get install chromium chromium-driver\`" >&2
    exit 1
  }
  SUDO="sudo"
fi
echo "installing chromium and chromium-driver (apt)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
have || { echo "chromium or chromedriver still missing after apt-get install" >&2; exit 1; }
echo "chromium: $(chromium --version)"
