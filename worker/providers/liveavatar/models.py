"""Pydantic models of what the LiveAvatar client sends and returns.

Requests are strict (a typo is a bug here); answers ignore unknown fields because LiveAvatar adds
them. Tokens are SecretStr so that no repr, log line or traceback shows them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

Mode = Literal["FULL", "LITE"]
Quality = Literal["very_high", "high", "medium", "low"]
Encoding = Literal["VP8", "H264"]
InteractivityType = Literal["CONVERSATIONAL", "PUSH_TO_TALK"]
EndReason = Literal[
    "UNKNOWN",
    "USER_DISCONNECTED",
    "SERVER_ERROR",
    "IDLE_TIMEOUT",
    "NO_CREDITS",
    "USER_CLOSED",
    "AVATAR_DELETED",
    "MAX_DURATION_REACHED",
    "ZOMBIE_SESSION_REAP",
    "AGENT_HANG_UP",
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body, unset fields left out."""
        return self.model_dump(mode="json", exclude_none=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class VideoSettings(_Request):
    quality: Quality | None = None
    encoding: Encoding | None = None


class AvatarPersona(_Request):
    voice_id: str | None = None
    context_id: str | None = None
    language: str | None = None


class LiveKitConfig(_Request):
    livekit_url: str
    livekit_room: str
    livekit_client_token: str


class SessionConfig(_Request):
    """Body of POST /v1/sessions/token. FULL mode needs `avatar_persona` (possibly empty)."""

    mode: Mode = "FULL"
    avatar_id: str
    is_sandbox: bool | None = None
    video_settings: VideoSettings | None = None
    max_session_duration: int | None = Field(default=None, ge=1)
    avatar_persona: AvatarPersona | None = None
    interactivity_type: InteractivityType | None = None
    livekit_config: LiveKitConfig | None = Field(default=None, repr=False)  # LITE


class SessionToken(_Answer):
    session_id: str
    session_token: SecretStr


class StartedSession(_Answer):
    """Answer of POST /v1/sessions/start. The agent token and ws_url are the worker's own; the
    client token is the end user's."""

    session_id: str
    livekit_url: str
    livekit_client_token: SecretStr
    livekit_agent_token: SecretStr | None = None
    max_session_duration: float | None = None
    ws_url: SecretStr | None = None  # LITE: the URL carries its own authorisation


class SessionRow(_Answer):
    """One row of GET /v1/sessions (historic rows add end_at and end_reason)."""

    id: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    duration: float | None = None
    mode: str | None = None
    is_sandbox: bool | None = None
    credits_consumed: float | None = None  # a decimal string on the wire
    end_at: datetime | None = None
    end_reason: str | None = None


class SessionPage(_Answer):
    count: int = 0
    next: str | None = None
    results: list[SessionRow] = []


class Credits(_Answer):
    credits_left: float  # a decimal string on the wire
