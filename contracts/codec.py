"""Commands and events to AMQP message parts and back; pure (no aio-pika), for any client."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from contracts.commands import COMMAND_TYPES, Command, CommandBase
from contracts.common import LIMITS, MESSAGE_ID_PATTERN, SESSION_ID_PATTERN
from contracts.events import EVENT_TYPES, Event, EventBase

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
PERSISTENT = 2

_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
_MESSAGE_ID_RE = re.compile(MESSAGE_ID_PATTERN)
_MAX_ECHO = 64  # longest piece of untrusted input quoted back in an error


@dataclass(frozen=True)
class AmqpEnvelope:
    """A message body and the AMQP properties to publish it with (`aio_pika.Message(body, **p)`)."""

    body: bytes
    properties: dict[str, Any] = field(default_factory=dict)


class DecodeErrorReason(StrEnum):
    OVERSIZED = "oversized"
    CONTENT_TYPE = "content_type"
    UNDECODABLE = "undecodable"
    UNKNOWN_TYPE = "unknown_type"
    TYPE_MISMATCH = "type_mismatch"
    SCHEMA = "schema"


class DecodeError(ValueError):
    """A message that is not a valid command or event.

    The ids are taken best-effort from the body (when it parsed and they are well-formed) so
    that the receiver can answer with `command.rejected` to the right session and reply_to.
    """

    def __init__(
        self,
        reason: DecodeErrorReason,
        message: str,
        *,
        field: str | None = None,
        session_id: str | None = None,
        command_id: str | None = None,
        command_type: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.field = field
        self.session_id = session_id
        self.command_id = command_id
        self.command_type = command_type
        self.reply_to = reply_to
        self.correlation_id = correlation_id


def _envelope(
    message: CommandBase | EventBase, message_id: str, timestamp: datetime
) -> AmqpEnvelope:
    properties: dict[str, Any] = {
        "content_type": CONTENT_TYPE,
        "content_encoding": CONTENT_ENCODING,
        "type": message.type,
        "message_id": message_id,
        "correlation_id": message.correlation_id,
        "timestamp": timestamp,
        "delivery_mode": PERSISTENT,
        "headers": {},
    }
    if isinstance(message, CommandBase):
        properties["reply_to"] = message.reply_to
    # None fields are omitted: every optional field defaults to None, so decoding restores them.
    return AmqpEnvelope(message.model_dump_json(exclude_none=True).encode(), properties)


def encode_command(command: CommandBase) -> AmqpEnvelope:
    """Body and properties (type, message_id=command_id, reply_to, persistent) of a command."""
    return _envelope(command, command.command_id, command.sent_at)


def encode_event(event: EventBase) -> AmqpEnvelope:
    """Body and properties (type, message_id=event_id, persistent) of an event."""
    return _envelope(event, event.event_id, event.occurred_at)


def decode_command(
    body: bytes,
    *,
    content_type: str | None = CONTENT_TYPE,
    message_type: str | None = None,
    max_bytes: int | None = None,
) -> Command:
    """Parse and validate a command; raises DecodeError (only) when it is not a valid one.

    `message_type` is the AMQP `type` property, which must agree with the body when set;
    `max_bytes` defaults to LIMITS.max_message_bytes.
    """
    limit = LIMITS.max_message_bytes if max_bytes is None else max_bytes
    return cast("Command", _decode(body, content_type, message_type, limit, COMMAND_TYPES))


def decode_event(
    body: bytes,
    *,
    content_type: str | None = CONTENT_TYPE,
    message_type: str | None = None,
    max_bytes: int | None = None,
) -> Event:
    """Parse and validate an event; raises DecodeError (only). No size limit unless given."""
    return cast("Event", _decode(body, content_type, message_type, max_bytes, EVENT_TYPES))


_M = TypeVar("_M", bound=BaseModel)


def _decode(
    body: bytes,
    content_type: str | None,
    message_type: str | None,
    max_bytes: int | None,
    models: Mapping[str, type[_M]],
) -> _M:
    if max_bytes is not None and len(body) > max_bytes:
        raise DecodeError(
            DecodeErrorReason.OVERSIZED,
            f"message is {len(body)} bytes, more than the limit of {max_bytes}",
        )
    if not _is_json(content_type):
        raise DecodeError(
            DecodeErrorReason.CONTENT_TYPE,
            f"content type {_echo(content_type)} is not {CONTENT_TYPE} (UTF-8)",
        )
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DecodeError(
            DecodeErrorReason.UNDECODABLE, f"body is not UTF-8: {exc.reason}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DecodeError(DecodeErrorReason.UNDECODABLE, f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DecodeError(DecodeErrorReason.UNDECODABLE, "body is not a JSON object")

    ids = _known_ids(data)
    body_type = data.get("type")
    if not isinstance(body_type, str) or body_type not in models:
        raise DecodeError(
            DecodeErrorReason.UNKNOWN_TYPE,
            f"unknown message type {_echo(body_type)}; expected one of {', '.join(models)}",
            field="type",
            **ids,
        )
    if message_type is not None and message_type != body_type:
        raise DecodeError(
            DecodeErrorReason.TYPE_MISMATCH,
            f"AMQP type property {_echo(message_type)} disagrees with body type {body_type!r}",
            field="type",
            **ids,
        )
    try:
        return models[body_type].model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        # An unknown field's name is untrusted input: shorten it like any other echo.
        paths = [".".join(_shorten(str(part)) for part in error["loc"]) for error in errors]
        message = "; ".join(f"{path}: {e['msg']}" for path, e in zip(paths, errors, strict=True))
        raise DecodeError(
            DecodeErrorReason.SCHEMA, message, field=paths[0] if paths else None, **ids
        ) from None


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return True
    media_type, *params = (part.strip().lower() for part in content_type.split(";"))
    if media_type != CONTENT_TYPE:
        return False
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    return all(charset in ("utf-8", "utf8") for charset in charsets)


def _known_ids(data: dict[str, Any]) -> dict[str, str | None]:
    """The well-formed ids found in a parsed body: safe to copy into a rejection event."""

    def pick(key: str, pattern: re.Pattern[str] | None = None, limit: int = 255) -> str | None:
        value = data.get(key)
        if not isinstance(value, str) or not value or len(value.encode("utf-8")) > limit:
            return None
        return value if pattern is None or pattern.fullmatch(value) else None

    return {
        "session_id": pick("session_id", _SESSION_ID_RE),
        "command_id": pick("command_id", _MESSAGE_ID_RE),
        "command_type": pick("type", limit=_MAX_ECHO),
        "reply_to": pick("reply_to"),
        "correlation_id": pick("correlation_id"),
    }


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


def _echo(value: object) -> str:
    return _shorten(repr(value))
