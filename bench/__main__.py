"""`python -m bench`: run every benchmark; `python -m bench --list`; `python -m bench NAME ARGS`.

Each benchmark runs in its own interpreter (`python -m bench.NAME`), so one that fails or hangs
cannot disturb the next, and each parses its own arguments.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

# In the order `python -m bench` runs them: the simulator's ceiling first.
BENCHMARKS = ("simulator_rps", "broker_floor", "speak", "keepalive_scale", "liveavatar_scale")


def summary(name: str) -> str:
    doc = importlib.import_module(f"bench.{name}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def run(name: str, args: list[str]) -> int:
    print(f"== bench.{name} {' '.join(args)}".rstrip(), flush=True)
    return subprocess.call([sys.executable, "-m", f"bench.{name}", *args])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks (all of them without a name); results go to "
        "bench/RESULTS.md. Arguments after NAME go to that benchmark (try NAME --help).",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("name", nargs="?", choices=BENCHMARKS, help="run only this one")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    if options.list:
        for name in BENCHMARKS:
            print(f"{name:<18} {summary(name)}")
        return 0
    if options.name is not None:
        return run(options.name, options.args)
    failed = [name for name in BENCHMARKS if run(name, []) != 0]
    if failed:
        print(f"failed or missed a goal: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
