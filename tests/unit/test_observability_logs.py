"""Log lines, JSON and console: context ids, trace ids, extras, exceptions, and secrets never
written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from worker.observability.logs import (
    LogFormat,
    configure_logging,
    forget_secret,
    log_context,
    register_secret,
)
from worker.observability.tracing import setup_tracing, shutdown_tracing, tracer

API_KEY = "hg-key-5f1c0a9e7d3b"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ2aWV3ZXIiLCJyb29tIjoiYWJjIn0.c2lnbmF0dXJlLXBhcnQ"
log = logging.getLogger("worker.test")
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """Configures JSON logging into a buffer; returns a reader of this test's parsed lines."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)
    register_secret(API_KEY)

    def read() -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [line for line in parsed if line["logger"] == log.name]

    yield read
    forget_secret(API_KEY)
    root.handlers[:], root.level = saved


def test_a_line_has_the_fields_and_the_context(lines: Lines) -> None:
    exporter = InMemorySpanExporter()
    setup_tracing(exporter=exporter)
    try:
        with (
            log_context(session_id="s-1", command_id="c-1"),
            tracer().start_as_current_span("command") as span,
        ):
            log.info("speaking %d chars", 12, extra={"task_type": "repeat"})
    finally:
        shutdown_tracing()
    (line,) = lines()
    context = span.get_span_context()
    assert line["level"] == "INFO"
    assert line["logger"] == "worker.test"
    assert line["message"] == "speaking 12 chars"
    assert line["session_id"] == "s-1"
    assert line["command_id"] == "c-1"
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["task_type"] == "repeat"
    assert line["ts"].endswith("Z")


def test_outside_any_context_the_ids_are_null(lines: Lines) -> None:
    log.warning("idle")
    (line,) = lines()
    assert line["session_id"] is None
    assert line["command_id"] is None
    assert line["trace_id"] is None


async def test_context_follows_tasks_and_nests(lines: Lines) -> None:
    async def child() -> None:
        log.info("in task")

    with log_context(session_id="s-2"):
        with log_context(command_id="c-9"):
            await asyncio.create_task(child())
        log.info("after")
    log.info("outside")
    in_task, after, outside = lines()
    assert (in_task["session_id"], in_task["command_id"]) == ("s-2", "c-9")
    assert (after["session_id"], after["command_id"]) == ("s-2", None)
    assert outside["session_id"] is None


def test_exceptions_become_a_string_field(lines: Lines) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("handler failed")
    (line,) = lines()
    assert line["level"] == "ERROR"
    assert isinstance(line["exc"], str)
    assert "ValueError: broken" in line["exc"]


def test_secrets_never_reach_the_output(lines: Lines) -> None:
    try:
        raise RuntimeError(f"call failed with key {API_KEY}")
    except RuntimeError:
        log.exception(
            "headers %s",
            {"X-Api-Key": API_KEY},
            extra={
                "access_token": "plain-livekit-token",
                "answer": {"data": {"url": "wss://x", "token": "one-use"}, "note": JWT},
                "api_key": API_KEY,
                "Authorization": "Bearer abc",
                "keys": [API_KEY],
            },
        )
    (line,) = lines()
    text = json.dumps(line)
    for secret in (API_KEY, JWT, "plain-livekit-token", "one-use", "Bearer abc"):
        assert secret not in text
    assert line["access_token"] == "[REDACTED]"
    assert line["answer"]["data"] == {"url": "wss://x", "token": "[REDACTED]"}
    assert line["answer"]["note"] == "[REDACTED]"
    assert line["keys"] == ["[REDACTED]"]
    assert "[REDACTED]" in line["message"]
    assert "RuntimeError: call failed with key [REDACTED]" in line["exc"]


def test_a_registered_token_is_redacted_until_forgotten(lines: Lines) -> None:
    token = "lk-token-not-a-jwt-42"
    register_secret(token)
    log.info("token %s", token)
    forget_secret(token)
    log.info("token %s", token)
    first, second = lines()
    assert first["message"] == "token [REDACTED]"
    assert second["message"] == f"token {token}"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _log_into(stream: io.StringIO, log_format: LogFormat) -> str:
    """What one record with context, extras and a secret looks like in `log_format` on `stream`."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", stream=stream, log_format=log_format)
    register_secret(API_KEY)
    try:
        with log_context(session_id="s-7", command_id="c-7"):
            log.info("calling with %s", API_KEY, extra={"task_id": "t-1", "token": "lk-1"})
    finally:
        forget_secret(API_KEY)
        root.handlers[:], root.level = saved
    return stream.getvalue()


def test_a_terminal_gets_readable_lines_with_the_ids_and_no_secret() -> None:
    (line,) = _log_into(_Terminal(), "auto").splitlines()
    clock, level, logger, rest = line.split(maxsplit=3)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", clock)
    assert (level, logger) == ("INFO", "worker.test:")
    assert rest == (
        "calling with [REDACTED]  session_id=s-7 command_id=c-7 task_id=t-1 token=[REDACTED]"
    )


def test_a_pipe_gets_json_and_log_format_overrides_the_guess() -> None:
    assert json.loads(_log_into(io.StringIO(), "auto"))["session_id"] == "s-7"
    assert json.loads(_log_into(_Terminal(), "json"))["command_id"] == "c-7"
    assert _log_into(io.StringIO(), "console").split()[1] == "INFO"


def test_a_console_traceback_follows_its_line_redacted() -> None:
    stream = _Terminal()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO", stream=stream)
    register_secret(API_KEY)
    try:
        raise RuntimeError(f"refused {API_KEY}")
    except RuntimeError:
        log.exception("handler failed")
    finally:
        forget_secret(API_KEY)
        root.handlers[:], root.level = saved
    first, *trace = stream.getvalue().splitlines()
    assert first.endswith("handler failed")
    assert trace[0] == "Traceback (most recent call last):"
    assert trace[-1] == "RuntimeError: refused [REDACTED]"
