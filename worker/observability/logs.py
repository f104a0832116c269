"""Logging with context ids from contextvars and the current span, secrets redacted: JSON lines
for machines, readable lines for a terminal."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal, TextIO

from opentelemetry import trace

REDACTED = "[REDACTED]"
# Field names whose values are never logged, whatever they hold (compared lower-cased, - as _).
SECRET_FIELDS = frozenset({"access_token", "api_key", "x_api_key", "authorization", "token"})
# LiveKit access tokens are JWTs: redacted even if nobody registered them.
_JWT = r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+"
_ALWAYS_PRESENT = ("session_id", "command_id")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}

_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=MappingProxyType({}))
_secrets: set[str] = set()
_secret_pattern = re.compile(_JWT)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add `fields` (session_id=..., command_id=...) to every record logged inside the block,
    in this task and the tasks it starts."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def register_secret(value: str) -> None:
    """Replace `value` with [REDACTED] wherever it would appear in a log line."""
    if value and value not in _secrets:
        _secrets.add(value)
        _compile()


def forget_secret(value: str) -> None:
    """Stop looking for `value` (a stopped session's token): keeps the pattern small."""
    if value in _secrets:
        _secrets.discard(value)
        _compile()


def _compile() -> None:
    global _secret_pattern
    # Longest first, so a secret containing another is replaced whole.
    literals = [re.escape(secret) for secret in sorted(_secrets, key=len, reverse=True)]
    _secret_pattern = re.compile("|".join([*literals, _JWT]))


def redact(value: Any) -> Any:
    """`value` with registered secrets and JWTs replaced, recursing into dicts and lists."""
    if isinstance(value, str):
        return _secret_pattern.sub(REDACTED, value)
    if isinstance(value, Mapping):
        return {
            str(key): REDACTED if _is_secret_field(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def _is_secret_field(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_FIELDS


LogFormat = Literal["auto", "json", "console"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, session_id, command_id, trace_id,
    span_id, the `extra` fields, and `exc` for an exception."""

    def entry(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record's fields with the context and span ids, secrets redacted."""
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(dict.fromkeys(_ALWAYS_PRESENT))
        entry.update(_context.get())
        span = trace.get_current_span().get_span_context()
        entry["trace_id"] = format(span.trace_id, "032x") if span.is_valid else None
        entry["span_id"] = format(span.span_id, "016x") if span.is_valid else None
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        redacted: dict[str, Any] = redact(entry)
        return redacted

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.entry(record), ensure_ascii=False, default=str)


class ConsoleFormatter(JsonFormatter):
    """One readable line for a person at a terminal: `time LEVEL logger message`, then
    session_id, command_id and the `extra` fields as key=value; a traceback on the lines below.
    Built from the same redacted entry as the JSON line, so it shows no secret the JSON hides."""

    # Trace ids are for log search, not for reading; ts is shown as local wall-clock time.
    _HIDDEN = frozenset({"ts", "level", "logger", "message", "trace_id", "span_id", "exc", "stack"})

    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(record)
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        fields = " ".join(
            f"{key}={value}"
            for key, value in entry.items()
            if key not in self._HIDDEN and value is not None
        )
        line = f"{clock} {entry['level']:<7} {entry['logger']}: {entry['message']}"
        line = f"{line}  {fields}" if fields else line
        return "\n".join([line, *(entry[key] for key in ("exc", "stack") if key in entry)])


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, log_format: LogFormat = "auto"
) -> None:
    """Send every logger's records to `stream` (stderr by default): readable lines when it is a
    terminal and `log_format` is auto, JSON lines otherwise (or when asked)."""
    out = stream if stream is not None else sys.stderr
    console = log_format == "console" or (log_format == "auto" and out.isatty())
    handler = logging.StreamHandler(out)
    handler.setFormatter(ConsoleFormatter() if console else JsonFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:  # one format on the stream, not JSON beside plain text
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # At DEBUG these dump whole AMQP frames: message bodies, access tokens included.
    for chatty in ("aiormq", "aio_pika"):
        logging.getLogger(chatty).setLevel(max(logging.INFO, root.level))
    # httpx logs every request at INFO: the management API polls would drown the worker's own.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
