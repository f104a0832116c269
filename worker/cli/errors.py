"""Exit codes of `heygen-worker` and the one-line error it prints instead of a traceback."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # the worker rejected or failed the command (or a demo step)
    USAGE = 2  # bad arguments or configuration; argparse uses 2 as well
    UNAVAILABLE = 3  # broker unreachable, login refused, topology not declared
    TIMEOUT = 4  # the answer did not come within --wait
    INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CliError(Exception):
    """Printed as `heygen-worker: <message>`; the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code
