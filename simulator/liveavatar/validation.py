"""Request bodies and queries as LiveAvatar's FastAPI checks them: a bad one is HTTP 422 with
`{"detail": [{loc, msg, type}]}`, the locations prefixed by "body" or "query" as FastAPI does."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Mode = Literal["FULL", "LITE", "CUSTOM"]  # CUSTOM: LITE's old name
M = TypeVar("M", bound=BaseModel)
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


class InvalidRequest(Exception):
    """The 422 answer's `detail` list."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(detail)} validation errors")
        self.detail = detail


class _Body(BaseModel):
    # FastAPI ignores unknown fields unless a model forbids them.
    model_config = ConfigDict(extra="ignore", frozen=True)


class VideoSettings(_Body):
    quality: Literal["very_high", "high", "medium", "low"] = "high"
    encoding: Literal["VP8", "H264"] = "H264"


class AvatarPersona(_Body):
    voice_id: str | None = None
    context_id: str | None = None
    language: str = "en"


class LiveKitConfig(_Body):
    livekit_url: str
    livekit_room: str
    livekit_client_token: str


class TokenRequest(_Body):
    mode: Mode = "FULL"
    avatar_id: uuid.UUID
    is_sandbox: bool = False
    video_settings: VideoSettings = VideoSettings()
    max_session_duration: int | None = Field(default=None, ge=1)
    avatar_persona: AvatarPersona | None = None
    interactivity_type: Literal["CONVERSATIONAL", "PUSH_TO_TALK"] = "CONVERSATIONAL"
    livekit_config: LiveKitConfig | None = None  # LITE: the avatar joins the caller's room

    @property
    def full(self) -> bool:
        return self.mode == "FULL"


class SessionRef(_Body):
    session_id: uuid.UUID


class StopRequest(SessionRef):
    reason: EndReason | None = None


class StartRequest(_Body):
    session_id: uuid.UUID | None = None  # LiveKit's plugin sends it; the bearer token decides


class ListQuery(_Body):
    type: Literal["active", "historic"]
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=20, ge=1, le=100)


def parse(model: type[M], data: Mapping[str, Any], where: str) -> M:
    """`data` as `model`, or InvalidRequest with FastAPI's detail (without the input values)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = [
            {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidRequest(detail) from None


def parse_token(body: Mapping[str, Any]) -> TokenRequest:
    request = parse(TokenRequest, body, "body")
    if request.full and request.avatar_persona is None:
        raise InvalidRequest(
            [
                {
                    "loc": ["body", "avatar_persona"],
                    "msg": "avatar_persona is required in FULL mode",
                    "type": "missing",
                }
            ]
        )
    return request
