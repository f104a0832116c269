"""`heygen-worker`: run the worker or simulator, publish commands, tail events, fix dead letters.

Each networked subcommand is an async function `(args, out) -> exit code`, so tests call it
in-process; `main` only parses, runs and turns known failures into one-line errors.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from worker.cli.errors import CliError, ExitCode
from worker.cli.parser import build_parser

__all__ = ["CliError", "ExitCode", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "sync_handler"):
            return int(args.sync_handler(args))
        _quiet_client_libraries()
        return int(asyncio.run(args.handler(args, sys.stdout)))
    except CliError as exc:
        print(f"heygen-worker: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


def _quiet_client_libraries() -> None:
    # aio-pika logs connection failures itself; the CLI reports them once, in one line.
    logging.basicConfig(level=logging.WARNING, format="heygen-worker: %(message)s")
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
