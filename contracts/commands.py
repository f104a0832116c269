"""Commands producers publish to `avatar.commands`: one strict model per `type`."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.common import (
    DEFAULT_MAX_TEXT_CHARS,
    LIMITS,
    ContractModel,
    Emotion,
    InteractivityType,
    LiveAvatarMode,
    MessageId,
    Name,
    Provider,
    Quality,
    SessionId,
    SessionState,
    ShortStr,
    StreamingVersion,
    TaskMode,
    TaskType,
    VideoEncoding,
    new_id,
    require_type_in_schema,
    utc_now,
)


class CommandBase(ContractModel):
    """Fields common to every command."""

    model_config = ConfigDict(json_schema_extra=require_type_in_schema)

    type: str = Field(description="The command's name; also the AMQP `type` property.")
    command_id: MessageId = Field(
        default_factory=new_id,
        description="Idempotency key, also the AMQP `message_id`; generated when omitted.",
    )
    correlation_id: ShortStr | None = Field(
        default=None, description="Copied into every event the command causes."
    )
    deadline: AwareDatetime | None = Field(
        default=None, description="Absolute time after which the worker will not execute it."
    )
    reply_to: ShortStr | None = Field(
        default=None, description="Queue that also receives the command's events (replies)."
    )
    sent_at: AwareDatetime = Field(
        default_factory=utc_now,
        description="When the producer sent it (AMQP timestamps have 1 s resolution).",
    )


class SessionCommand(CommandBase):
    """A command addressed to one logical session."""

    session_id: SessionId = Field(description="The producer's stable id of the session.")


class Voice(ContractModel):
    voice_id: Name | None = None
    rate: float = Field(default=1.0, ge=0.5, le=1.5)
    emotion: Emotion | None = None


class SttSettings(ContractModel):
    provider: Literal["deepgram", "gladia"]
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class Sdp(ContractModel):
    """The producer's WebRTC SDP answer (v1 sessions)."""

    type: Literal["answer"] = "answer"
    sdp: str = Field(min_length=1)


class IceCandidate(ContractModel):
    """A trickled WebRTC ICE candidate, as the browser's RTCIceCandidate.toJSON()."""

    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: int | None = Field(default=None, ge=0)
    usernameFragment: str | None = None


class LiveKitConfig(ContractModel):
    """liveavatar LITE: the producer's own LiveKit room, which the avatar joins."""

    livekit_url: str = Field(min_length=1, max_length=2048)
    livekit_room: str = Field(min_length=1, max_length=256)
    livekit_client_token: str = Field(
        min_length=1, max_length=8192, description="The token the avatar joins with. Never logged."
    )


class SessionCreate(SessionCommand):
    """Create an avatar session on HeyGen's Streaming API or on LiveAvatar, and start it."""

    type: Literal["session.create"] = "session.create"
    provider: Provider | None = Field(
        default=None,
        description="The avatar API to run it on; the worker's WORKER_DEFAULT_PROVIDER when "
        "omitted. Fields the provider cannot honour are refused, never dropped.",
    )
    avatar_id: Name
    voice: Voice | None = Field(
        default=None, description="liveavatar takes voice_id only (avatar_persona.voice_id)."
    )
    quality: Quality | None = Field(default=None, description="very_high: liveavatar only.")
    video_encoding: VideoEncoding | None = None
    version: StreamingVersion = Field(
        default=StreamingVersion.V2, description="heygen only; liveavatar refuses v1."
    )
    activity_idle_timeout: int | None = Field(
        default=None, ge=30, le=3600, description="heygen only: its own idle close, in seconds."
    )
    knowledge_base: str | None = Field(default=None, description="heygen only: inline prompt.")
    knowledge_base_id: str | None = Field(
        default=None, description="heygen's knowledge base; liveavatar: context_id's old name."
    )
    language: str | None = Field(default=None, min_length=1, max_length=35)
    stt_settings: SttSettings | None = Field(default=None, description="heygen only.")
    mode: LiveAvatarMode | None = Field(
        default=None,
        description="liveavatar only: FULL (the default: LiveAvatar's voice) or LITE (your own "
        "audio through session.speak_audio).",
    )
    livekit_config: LiveKitConfig | None = Field(
        default=None, description="liveavatar LITE only: the avatar joins your own LiveKit room."
    )
    is_sandbox: bool | None = Field(
        default=None, description="liveavatar only: short free sessions with the sandbox avatar."
    )
    interactivity_type: InteractivityType | None = Field(
        default=None, description="liveavatar only: CONVERSATIONAL (default) or PUSH_TO_TALK."
    )
    context_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="liveavatar only: the context (knowledge) the avatar answers from.",
    )
    idle_timeout_s: int | None = Field(
        default=None, gt=0, description="Worker policy: stop after this long without speech."
    )
    max_duration_s: int | None = Field(
        default=None,
        gt=0,
        description="Worker policy: stop after this long in any case (liveavatar: also its "
        "max_session_duration).",
    )

    @model_validator(mode="after")
    def _fits_provider(self) -> SessionCreate:
        if self.provider is not None:
            problems = provider_conflicts(self, self.provider)
            if problems:
                raise PydanticCustomError("provider_conflict", "; ".join(problems))
        return self

    def for_provider(self, default: Provider) -> SessionCreate:
        """This command with `provider` filled in (the worker's default when omitted), checked
        against it: raises ValueError naming the fields the provider cannot honour."""
        if self.provider is not None:
            return self
        problems = provider_conflicts(self, default)
        if problems:
            raise ValueError("; ".join(problems))
        return self.model_copy(update={"provider": default})

    @property
    def liveavatar_context_id(self) -> str | None:
        """context_id, or knowledge_base_id under its legacy name."""
        return self.context_id or self.knowledge_base_id


HEYGEN_ONLY = ("activity_idle_timeout", "knowledge_base", "stt_settings")
LIVEAVATAR_ONLY = ("mode", "is_sandbox", "interactivity_type", "context_id", "livekit_config")
# LITE brings its own voice and listener: the persona and conversation settings are FULL's.
FULL_ONLY = ("voice", "language", "interactivity_type", "context_id", "knowledge_base_id")


def provider_conflicts(cmd: SessionCreate, provider: Provider) -> list[str]:
    """What `provider` cannot honour in `cmd`, one message per field naming both."""
    if provider is Provider.HEYGEN:
        refused = [f for f in LIVEAVATAR_ONLY if getattr(cmd, f) is not None]
        if cmd.quality is Quality.VERY_HIGH:
            refused.append("quality: very_high")
        return [f"{field} is not supported with provider heygen" for field in refused]
    refused = [f for f in HEYGEN_ONLY if getattr(cmd, f) is not None]
    if cmd.version is StreamingVersion.V1:
        refused.append("version: v1")
    if cmd.voice is not None:
        refused += [f"voice.{f}" for f in ("rate", "emotion") if f in cmd.voice.model_fields_set]
    problems = [f"{field} is not supported with provider liveavatar" for field in refused]
    if cmd.mode is LiveAvatarMode.LITE:
        refused = [f for f in FULL_ONLY if getattr(cmd, f) is not None]
        problems += [f"{f} is not supported with provider liveavatar in mode LITE" for f in refused]
    elif cmd.livekit_config is not None:
        problems.append("livekit_config is only supported with provider liveavatar in mode LITE")
    if cmd.context_id and cmd.knowledge_base_id and cmd.context_id != cmd.knowledge_base_id:
        problems.append(
            "context_id and knowledge_base_id (its legacy name) differ with provider liveavatar"
        )
    return problems


class SessionStart(SessionCommand):
    """v1 only: send the WebRTC answer (`streaming.start`)."""

    type: Literal["session.start"] = "session.start"
    sdp: Sdp


class SessionIce(SessionCommand):
    """v1 only: trickle an ICE candidate (`streaming.ice`)."""

    type: Literal["session.ice"] = "session.ice"
    candidate: IceCandidate


class SessionSpeak(SessionCommand):
    """Make the avatar speak (`streaming.task`)."""

    type: Literal["session.speak"] = "session.speak"
    # The upper bound is enforced from LIMITS at validation time; the schema shows the default.
    text: str = Field(min_length=1, json_schema_extra={"maxLength": DEFAULT_MAX_TEXT_CHARS})
    task_type: TaskType = TaskType.REPEAT
    task_mode: TaskMode = TaskMode.ASYNC

    @field_validator("text")
    @classmethod
    def _text_within_limits(cls, text: str) -> str:
        if len(text) > LIMITS.max_text_chars:
            raise PydanticCustomError(
                "string_too_long",
                "String should have at most {max_length} characters",
                {"max_length": LIMITS.max_text_chars},
            )
        if not text.strip():
            raise PydanticCustomError("blank_text", "Text must not be blank")
        return text


AUDIO_SAMPLE_RATE = 24_000
AUDIO_BYTES_PER_SECOND = AUDIO_SAMPLE_RATE * 2  # signed 16-bit mono
MAX_AUDIO_BYTES = AUDIO_BYTES_PER_SECOND  # one second a message: 64,000 base64 characters
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Base64Audio = Annotated[
    str, StringConstraints(max_length=4 * MAX_AUDIO_BYTES // 3, pattern=BASE64_PATTERN)
]


def decode_audio(audio: str) -> bytes:
    """The PCM bytes of a validated `SessionSpeakAudio.audio`."""
    return base64.b64decode(audio, validate=True)


class SessionSpeakAudio(SessionCommand):
    """liveavatar LITE: part of an utterance in your own voice, lip-synced by the avatar.

    `audio` is base64 (RFC 4648, padded) of raw PCM: signed 16-bit little-endian, mono,
    24,000 Hz, no WAV header; at most 48,000 bytes (1 s, 64,000 base64 characters) a message.
    Parts with one `utterance_id` are spoken in order as one utterance; `final` ends it."""

    type: Literal["session.speak_audio"] = "session.speak_audio"
    utterance_id: MessageId = Field(
        description="Shared by the parts of one utterance; speech events carry it as task_id."
    )
    audio: Base64Audio = Field(
        default="",
        description="base64 PCM s16le mono 24 kHz, at most 48,000 bytes (1 s) decoded; may be "
        "empty on the final part. Never logged.",
    )
    final: bool = Field(default=False, description="True on the utterance's last part.")

    @field_validator("audio", mode="before")
    @classmethod
    def _pcm(cls, audio: object) -> object:
        # Before the pattern and length checks, so the reason says what is wrong with it.
        if not isinstance(audio, str):
            return audio
        try:
            pcm = decode_audio(audio)
        except (binascii.Error, ValueError):
            raise PydanticCustomError(
                "audio_base64", "audio is not valid base64 (RFC 4648, padded)"
            ) from None
        if len(pcm) % 2:
            raise PydanticCustomError(
                "audio_format",
                "audio has an odd number of bytes ({size}): PCM s16le mono takes 2 a sample",
                {"size": len(pcm)},
            )
        if len(pcm) > MAX_AUDIO_BYTES:
            raise PydanticCustomError(
                "audio_too_large",
                "audio is {size} bytes; a message carries at most {limit} (1 s at 24 kHz)",
                {"size": len(pcm), "limit": MAX_AUDIO_BYTES},
            )
        return audio

    @model_validator(mode="after")
    def _not_empty(self) -> SessionSpeakAudio:
        if not self.audio and not self.final:
            raise PydanticCustomError("audio_empty", "audio may be empty only on the final part")
        return self


class SessionInterrupt(SessionCommand):
    """Cut the current speech (`streaming.interrupt`); not queued behind a running speak."""

    type: Literal["session.interrupt"] = "session.interrupt"


class SessionStop(SessionCommand):
    """Stop the session (`streaming.stop`); preempts its queued speaks."""

    type: Literal["session.stop"] = "session.stop"
    reason: str | None = Field(default=None, max_length=200)


class SessionKeepalive(SessionCommand):
    """Send an explicit `streaming.keep_alive` (the worker also sends them on its own)."""

    type: Literal["session.keepalive"] = "session.keepalive"


class SessionsFilter(ContractModel):
    session_ids: list[SessionId] | None = None
    states: list[SessionState] | None = None


class SessionsList(CommandBase):
    """Ask for the sessions the worker knows; answered by `sessions.listed` to `reply_to`."""

    type: Literal["sessions.list"] = "sessions.list"
    filter: SessionsFilter = Field(default_factory=SessionsFilter)

    @property
    def session_id(self) -> None:
        """No session: lets `command.session_id` work on every command."""
        return None


Command = Annotated[
    SessionCreate
    | SessionStart
    | SessionIce
    | SessionSpeak
    | SessionSpeakAudio
    | SessionInterrupt
    | SessionStop
    | SessionKeepalive
    | SessionsList,
    Field(discriminator="type"),
]

COMMAND_MODELS: tuple[type[CommandBase], ...] = (
    SessionCreate,
    SessionStart,
    SessionIce,
    SessionSpeak,
    SessionSpeakAudio,
    SessionInterrupt,
    SessionStop,
    SessionKeepalive,
    SessionsList,
)
COMMAND_TYPES: dict[str, type[CommandBase]] = {
    model.model_fields["type"].default: model for model in COMMAND_MODELS
}
