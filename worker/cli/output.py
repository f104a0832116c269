"""How the CLI prints events: one JSON object per line, or one human-readable line."""

from __future__ import annotations

import sys
from typing import TextIO

from pydantic import BaseModel

from contracts.events import EventBase

# The fields worth a glance per event type; the JSON form has everything.
KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "session.created": ("heygen_session_id", "provider", "version", "url", "livekit_url"),
    "session.ready": ("heygen_session_id",),
    "speech.started": ("task_id", "task_mode", "duration_ms", "characters"),
    "speech.finished": ("task_id", "source", "duration_ms"),
    "speech.interrupted": ("task_id",),
    "session.keepalive_failed": ("code", "message", "will_reconnect"),
    "session.reconnecting": ("attempt", "reason"),
    "session.reconnected": ("attempt", "heygen_session_id"),
    "session.stopped": ("reason", "detail", "provider_end_reason", "usage"),
    "user.transcription": ("text",),
    "avatar.transcription": ("text",),
    "command.rejected": ("command_type", "code", "message"),
    "command.failed": ("command_type", "code", "message", "retryable"),
    "command.completed": ("command_type",),
    "sessions.listed": ("sessions", "truncated"),
}


def write_line(out: TextIO, line: str) -> None:
    # Flushed at once: the reader is a person or a pipe waiting for the next event.
    out.write(line + "\n")
    out.flush()


def note(message: str) -> None:
    """Progress for the person at the terminal, on stderr so stdout stays machine-readable."""
    write_line(sys.stderr, message)


def event_json(event: EventBase) -> str:
    """The full event, access tokens included: this is the user's own terminal, not a log."""
    return event.model_dump_json(exclude_none=True)


def event_line(event: EventBase) -> str:
    """`seq time type key=value ...` for one event."""
    seq = str(event.seq) if event.seq is not None else "-"
    when = event.occurred_at.strftime("%H:%M:%S.%f")[:-3]
    fields = " ".join(
        f"{name}={_show(getattr(event, name))}"
        for name in KEY_FIELDS.get(event.type, ())
        if getattr(event, name, None) is not None
    )
    return f"{seq:>4} {when} {event.type:<26} {fields}".rstrip()


def _show(value: object) -> str:
    if isinstance(value, BaseModel):
        return "{" + " ".join(f"{k}={_show(v)}" for k, v in value.model_dump().items()) + "}"
    if isinstance(value, list):
        return f"[{len(value)}]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str) and " " in value:
        return repr(value)
    return str(value)
