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
    ("where the C encoder runs: loop, thread with or without the GIL",
     ["-m", "benchmarks.bench_decode"]),
    ("holder: event latency, disruption, bulk x3, memory",
     ["-m", "benchmarks.bench_holder", "--skip-baseline"]),
    ("subscribe -> first tick, ours and the full-reload baseline, 1 s and 0.1 s",
     ["-m", "benchmarks.bench_e2e", "first-tick", "--samples", "60"]),
    ("latency the holder adds to a tick, 9,000 and 27,000 streaming",
     ["-m", "benchmarks.bench_e2e", "added", "--streaming", "9000", "27000"]),
    ("the ceiling: 27,000 instruments at shorter and shorter intervals",
     ["-m", "benchmarks.bench_e2e", "ceiling", "--streaming", "27000", "--runs", "3"]),
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
