"""Shared building blocks of the contract: id types, enums, limits and the strict base model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

CONTRACT_VERSION = "1.0.0"
"""Version of the message contract (semantic: bump the major on incompatible changes)."""

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MESSAGE_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,128}$"

# No dots in session ids: they sit inside topic routing keys ("<event type>.<session_id>").
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
MessageId = Annotated[str, StringConstraints(pattern=MESSAGE_ID_PATTERN)]


def _fits_shortstr(value: str) -> str:
    # AMQP properties such as correlation_id and reply_to are shortstr: 255 bytes at most.
    if len(value.encode("utf-8")) > 255:
        raise ValueError("must be at most 255 bytes in UTF-8")
    return value


ShortStr = Annotated[
    str, StringConstraints(min_length=1, max_length=255), AfterValidator(_fits_shortstr)
]
"""A string that fits an AMQP shortstr property (correlation_id, reply_to)."""

Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]
"""A non-empty identifier of moderate size (avatar, voice, worker, task ids)."""


def new_id() -> str:
    """A fresh random id usable as session_id, command_id or event_id."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class Provider(StrEnum):
    """The avatar API a session runs on: HeyGen's legacy Streaming API, or LiveAvatar."""

    HEYGEN = "heygen"
    LIVEAVATAR = "liveavatar"


class LiveAvatarMode(StrEnum):
    """LiveAvatar FULL: LiveAvatar listens, thinks and speaks. LITE: you bring the voice
    (`session.speak_audio`), the avatar lip-syncs it."""

    FULL = "FULL"
    LITE = "LITE"


class InteractivityType(StrEnum):
    CONVERSATIONAL = "CONVERSATIONAL"
    PUSH_TO_TALK = "PUSH_TO_TALK"


class Quality(StrEnum):
    VERY_HIGH = "very_high"  # liveavatar only
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class VideoEncoding(StrEnum):
    H264 = "H264"
    VP8 = "VP8"


class TaskType(StrEnum):
    REPEAT = "repeat"
    TALK = "talk"


class TaskMode(StrEnum):
    SYNC = "sync"
    ASYNC = "async"


class Emotion(StrEnum):
    EXCITED = "Excited"
    SERIOUS = "Serious"
    FRIENDLY = "Friendly"
    SOOTHING = "Soothing"
    BROADCASTER = "Broadcaster"


class StreamingVersion(StrEnum):
    V2 = "v2"
    V1 = "v1"


class SessionState(StrEnum):
    CREATING = "creating"
    READY = "ready"
    SPEAKING = "speaking"
    STOPPING = "stopping"
    STOPPED = "stopped"
    RECONNECTING = "reconnecting"


class StopReason(StrEnum):
    REQUESTED = "requested"
    IDLE = "idle"
    MAX_DURATION = "max_duration"
    EXPIRED_REMOTELY = "expired_remotely"
    SHUTDOWN = "shutdown"
    ERROR = "error"


class RejectCode(StrEnum):
    VALIDATION = "validation"
    UNKNOWN_SESSION = "unknown_session"
    FORBIDDEN = "forbidden"
    CAPACITY = "capacity"
    EXPIRED = "expired"
    SESSION_EXISTS = "session_exists"
    WRONG_STATE = "wrong_state"
    CANCELLED = "cancelled"


class SpeechFinishSource(StrEnum):
    OBSERVED = "observed"
    ESTIMATED = "estimated"


DEFAULT_MAX_TEXT_CHARS = 2000
DEFAULT_MAX_MESSAGE_BYTES = 65536


@dataclass
class Limits:
    """Bounds applied while validating and decoding; the worker sets them from its settings."""

    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


LIMITS = Limits()


def configure_limits(
    *, max_text_chars: int | None = None, max_message_bytes: int | None = None
) -> None:
    """Change the process-wide limits; None leaves a limit as it is."""
    for name, value in (
        ("max_text_chars", max_text_chars),
        ("max_message_bytes", max_message_bytes),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if max_text_chars is not None:
        LIMITS.max_text_chars = max_text_chars
    if max_message_bytes is not None:
        LIMITS.max_message_bytes = max_message_bytes


class ContractModel(BaseModel):
    """Strict, immutable base of every message and nested object of the contract."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def require_type_in_schema(schema: dict[str, Any]) -> None:
    """JSON Schema hook: `type` has a default in Python but is required on the wire."""
    required = schema.setdefault("required", [])
    if "type" not in required:
        required.insert(0, "type")
