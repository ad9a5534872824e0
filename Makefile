# The two commands of the README: `make up` (install, then run the whole stack against the
# simulator) and `make test` (install, then lint, type-check and run every test).
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: install services chromium up test lint bench soak

install: $(VENV)/.installed

# The C accelerator is compiled by the editable install: a changed source rebuilds it.
$(VENV)/.installed: pyproject.toml setup.py ticker_worker/kite/_tickjson.c ticker_worker/kite/_fastdouble.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

services:
	bash scripts/ensure-services.sh

# Headless Chromium for the browser tests (tests/browser.py), from apt when missing.
chromium:
	bash scripts/ensure-chromium.sh

up: install services
	$(BIN)/ticker-worker up

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: install services chromium lint
	$(BIN)/pytest

bench: install services
	$(BIN)/python -m benchmarks

# A trading day in miniature, not in CI: `make soak MINUTES=2` for a short check.
MINUTES ?= 30
soak: install services
	$(BIN)/python -m benchmarks.soak --minutes $(MINUTES)
