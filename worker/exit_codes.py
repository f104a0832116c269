"""The process's exit codes: the worker's lifecycle and the CLI both end with them, so they live
apart from either (the CLI imports the worker; the worker never imports the CLI)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the worker rejected or failed the command (or a demo step)
    USAGE = 2  # bad arguments or configuration; argparse uses 2 as well
    UNAVAILABLE = 3  # broker unreachable, login refused, topology not declared
    TIMEOUT = 4  # the answer did not come within --wait
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
