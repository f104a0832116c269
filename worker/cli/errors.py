"""The one-line error `heygen-worker` prints instead of a traceback, and its exit codes."""

from __future__ import annotations

from worker.exit_codes import ExitCode

__all__ = ["CliError", "ExitCode"]


class CliError(Exception):
    """Printed as `heygen-worker: <message>`; the process exits with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.UNAVAILABLE) -> None:
        super().__init__(message)
        self.code = code
