"""`python -m ticker_worker.cli` is `ticker-worker`."""

from ticker_worker.cli import main

main()
