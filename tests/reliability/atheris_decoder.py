"""Coverage-guided fuzzing of decode_command with atheris: `python -m
tests.reliability.atheris_decoder -runs=20000`. Any exception other than DecodeError, or a
result that is not a command, is a crash (atheris exits non-zero and prints the input)."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from contracts.codec import DecodeError, decode_command
    from contracts.commands import CommandBase

CONTENT_TYPES = ["application/json", "text/plain", ""]


def one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    content_type = CONTENT_TYPES[provider.ConsumeIntInRange(0, len(CONTENT_TYPES) - 1)]
    body = provider.ConsumeBytes(provider.remaining_bytes())
    try:
        command = decode_command(body, content_type=content_type or None, max_bytes=4096)
    except DecodeError as err:
        if not err.reason:
            raise AssertionError("DecodeError without a reason") from err
        return
    if not isinstance(command, CommandBase):
        raise AssertionError(f"decode_command returned {type(command)}")


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
