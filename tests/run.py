"""This test run's identity: TEST_RUN_ID (a small integer) gives a run databases, Redis dbs and
channel prefixes of its own, so that two runs on one machine (parallel branches) do not meet."""

from __future__ import annotations

import os

RUN_ID = int(os.environ.get("TEST_RUN_ID", "0"))
RUN_SUFFIX = f"_{RUN_ID}" if RUN_ID else ""
