"""Pydantic models of what the HeyGen client sends and returns.

Requests are strict (a typo is a bug here); answers ignore unknown fields because HeyGen adds them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Quality = Literal["high", "medium", "low"]
VideoEncoding = Literal["H264", "VP8"]
Emotion = Literal["Excited", "Serious", "Friendly", "Soothing", "Broadcaster"]
TaskType = Literal["repeat", "talk"]
TaskMode = Literal["sync", "async"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON body: HeyGen's field names, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Voice(_Request):
    voice_id: str | None = None
    rate: float | None = Field(default=None, ge=0.5, le=1.5)
    emotion: Emotion | None = None
    elevenlabs_settings: dict[str, Any] | None = None


class SttSettings(_Request):
    provider: Literal["deepgram", "gladia"] | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class NewSessionRequest(_Request):
    """Body of streaming.new. version "v2" is LiveKit; "v1" (raw WebRTC) omits the field."""

    avatar_id: str | None = None
    voice: Voice | None = None
    quality: Quality | None = None
    video_encoding: VideoEncoding | None = None
    version: Literal["v2", "v1"] = "v2"
    activity_idle_timeout: int | None = Field(default=None, ge=30, le=3600)
    knowledge_base: str | None = None
    knowledge_base_id: str | None = None
    language: str | None = None
    stt_settings: SttSettings | None = None

    def to_wire(self) -> dict[str, Any]:
        body = super().to_wire()
        if self.version == "v1":
            del body["version"]
        return body


class SdpAnswer(_Request):
    type: Literal["answer"] = "answer"
    sdp: str


class IceCandidate(_Request):
    candidate: str
    sdp_mid: str | None = Field(default=None, alias="sdpMid")
    sdp_mline_index: int | None = Field(default=None, alias="sdpMLineIndex")
    username_fragment: str | None = Field(default=None, alias="usernameFragment")


class SdpOffer(_Answer):
    type: str
    sdp: str


class IceServer(_Answer):
    urls: list[str] | str
    username: str | None = None
    credential: str | None = Field(default=None, repr=False)
    credential_type: str | None = Field(default=None, alias="credentialType")


class NewSession(_Answer):
    """streaming.new's data. v2 fills url/access_token; v1 fills sdp/ice_servers.
    Credentials (LiveKit token, TURN passwords) are kept out of repr."""

    session_id: str
    url: str | None = None
    access_token: str | None = Field(default=None, repr=False)
    realtime_endpoint: str | None = None
    session_duration_limit: float | None = None
    is_paid: bool | None = None
    sdp: SdpOffer | None = None
    ice_servers: list[str | IceServer] | None = None
    ice_servers2: list[IceServer] | None = None


class TaskResult(_Answer):
    task_id: str | None = None
    duration_ms: float | None = None


class RemoteSession(_Answer):
    """One entry of streaming.list: status is new, connecting or connected."""

    session_id: str
    status: str
    created_at: datetime | None = None


class Avatar(_Answer):
    avatar_id: str
    default_voice: str | None = None
    is_public: bool | None = None
    status: str | None = None
