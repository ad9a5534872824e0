"""Every benchmark in one command: `make bench` (or `.venv/bin/python -m benchmarks`).

Each runs in its own process, one after another (they share the benchmark database), and
prints its figures next to its target and its baseline from the same run. The whole output is
also saved to benchmarks/results/latest.txt.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = [
    ("tick decode + publish vs the official parser", ["-m", "benchmarks.bench_ticks"]),
    ("holder: latency, disruption, bulk, memory", ["-m", "benchmarks.bench_holder"]),
    ("backfill: request rate and candle upserts", ["benchmarks/bench_backfill.py"]),
    ("simulator throughput", ["benchmarks/bench_sim.py"]),
    ("failover: kill -9, SIGTERM hand-over, standby cost", ["-m", "benchmarks.bench_failover"]),
]


def main() -> int:
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    log = []
    failed = 0
    for title, args in SUITE:
        header = f"\n=== {title} ({' '.join(args)}) ==="
        print(header, flush=True)
        started = time.monotonic()
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
        print(proc.stdout[-6000:], flush=True)
        if proc.returncode:
            failed += 1
            print(proc.stderr[-3000:], file=sys.stderr)
        log.append(f"{header}\n{proc.stdout}\n(exit {proc.returncode}, "
                   f"{time.monotonic() - started:.0f}s)")
    (out_dir / "latest.txt").write_text("\n".join(log))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
