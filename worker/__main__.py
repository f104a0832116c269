"""`python -m worker`: the same command line as `heygen-worker`."""

from worker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
