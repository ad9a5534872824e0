"""`python -m ticker_worker.sim`: the same command as `ticker-worker sim`."""

from ticker_worker.sim.cli import sim

if __name__ == "__main__":
    sim(prog_name="python -m ticker_worker.sim")
