"""Events the worker publishes to `avatar.events` (and to a command's `reply_to`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, ConfigDict, Field

from contracts.common import (
    ContractModel,
    MessageId,
    Name,
    Provider,
    RejectCode,
    SessionId,
    SessionState,
    ShortStr,
    SpeechFinishSource,
    StopReason,
    StreamingVersion,
    TaskMode,
    TaskType,
    new_id,
    require_type_in_schema,
    utc_now,
)


class EventBase(ContractModel):
    """Fields common to every event."""

    model_config = ConfigDict(json_schema_extra=require_type_in_schema)

    type: str = Field(description="The event's name; also the AMQP `type` property.")
    event_id: MessageId = Field(default_factory=new_id, description="Also the AMQP `message_id`.")
    session_id: SessionId | None = Field(
        default=None, description="The logical session; absent when the event concerns none."
    )
    seq: int | None = Field(
        default=None,
        ge=1,
        description="Per-session counter increasing by one per event: detects gaps and duplicates.",
    )
    occurred_at: AwareDatetime = Field(default_factory=utc_now)
    causation_id: ShortStr | None = Field(
        default=None,
        description="The command_id that caused the event; absent for the worker's own.",
    )
    correlation_id: ShortStr | None = Field(
        default=None, description="Copied from the causing command."
    )
    worker_id: Name = Field(description="The worker replica that published the event.")


class SessionEvent(EventBase):
    """An event about one logical session, which it always names."""

    session_id: SessionId = Field(description="The logical session.")


class SdpOffer(ContractModel):
    """HeyGen's WebRTC SDP offer (v1 sessions)."""

    type: Literal["offer"] = "offer"
    sdp: str = Field(min_length=1)


class IceServer(ContractModel):
    urls: list[str] | None = None
    username: str | None = None
    credential: str | None = None
    credentialType: str | None = None


class ConnectionDetails(ContractModel):
    """How a viewer joins the current provider session; shared by created and reconnected."""

    # A missing-field error would echo the whole input, token included, in its text.
    model_config = ConfigDict(hide_input_in_errors=True)

    heygen_session_id: str = Field(
        min_length=1,
        description="The provider's own id of the current session (heygen or liveavatar).",
    )
    url: str | None = Field(default=None, description="v2: the LiveKit room URL (wss).")
    access_token: str | None = Field(
        default=None, repr=False, description="v2: the LiveKit client token. Never logged."
    )
    realtime_endpoint: str | None = None
    session_duration_limit: int | None = Field(default=None, description="As HeyGen reports it.")
    is_paid: bool | None = None
    sdp: SdpOffer | None = Field(default=None, description="v1: the SDP offer to answer.")
    ice_servers: list[IceServer] | None = Field(default=None, description="v1: ICE servers.")
    livekit_url: str | None = Field(
        default=None, description="liveavatar: the LiveKit room URL for the end user's browser."
    )
    livekit_client_token: str | None = Field(
        default=None,
        repr=False,
        description="liveavatar: the browser's LiveKit token (never the worker's agent token). "
        "Never logged.",
    )
    max_session_duration: int | None = Field(
        default=None, description="liveavatar: the session's length cap in seconds, as it says."
    )


class SessionCreated(ConnectionDetails, SessionEvent):
    """The provider session exists and was started; connection details for the viewer."""

    type: Literal["session.created"] = "session.created"
    provider: Provider = Provider.HEYGEN
    version: StreamingVersion
    owner: str | None = Field(default=None, description="Principal that created the session.")
    idle_timeout_s: int = Field(gt=0, description="Idle policy in force.")
    max_duration_s: int = Field(gt=0, description="Duration cap in force.")


class SessionReady(SessionEvent):
    """The session accepts speech."""

    type: Literal["session.ready"] = "session.ready"
    heygen_session_id: str = Field(min_length=1)


class SpeechStarted(SessionEvent):
    """The speech is under way: the provider accepted it (heygen), or the avatar was observed
    starting it (liveavatar)."""

    type: Literal["speech.started"] = "speech.started"
    task_id: str = Field(min_length=1)
    duration_ms: float | None = Field(default=None, ge=0)
    task_type: TaskType
    task_mode: TaskMode
    characters: int = Field(ge=0)


class SpeechFinished(SessionEvent):
    """A speech ended: observed (LiveAvatar's avatar.speak_ended, a HeyGen sync answer), or
    estimated from duration_ms (`source` says which)."""

    type: Literal["speech.finished"] = "speech.finished"
    task_id: str = Field(min_length=1)
    duration_ms: float | None = Field(default=None, ge=0)
    source: SpeechFinishSource
    interrupted: bool = Field(
        default=False, description="True when an interrupt cut it short before HeyGen answered."
    )


class UserSpeechStarted(SessionEvent):
    """The end user started speaking (liveavatar)."""

    type: Literal["user.speech_started"] = "user.speech_started"


class UserSpeechEnded(SessionEvent):
    """The end user stopped speaking (liveavatar)."""

    type: Literal["user.speech_ended"] = "user.speech_ended"


class UserTranscription(SessionEvent):
    """What the end user said, final (liveavatar)."""

    type: Literal["user.transcription"] = "user.transcription"
    text: str


class AvatarTranscription(SessionEvent):
    """What the avatar says (liveavatar)."""

    type: Literal["avatar.transcription"] = "avatar.transcription"
    text: str


class SpeechInterrupted(SessionEvent):
    """Current speech was cut."""

    type: Literal["speech.interrupted"] = "speech.interrupted"
    task_id: str | None = Field(default=None, description="The speech that was cut, if known.")


class SessionKeepaliveFailed(SessionEvent):
    """A keep-alive call failed."""

    type: Literal["session.keepalive_failed"] = "session.keepalive_failed"
    code: str
    message: str
    will_reconnect: bool


class SessionReconnecting(SessionEvent):
    """HeyGen lost the session while it is still wanted: a replacement is being created."""

    type: Literal["session.reconnecting"] = "session.reconnecting"
    attempt: int = Field(ge=1)
    reason: str
    previous_heygen_session_id: str = Field(min_length=1)


class SessionReconnected(ConnectionDetails, SessionEvent):
    """The replacement session is up: new connection details for the viewer."""

    type: Literal["session.reconnected"] = "session.reconnected"
    attempt: int = Field(ge=1)
    previous_heygen_session_id: str = Field(min_length=1)


class Usage(ContractModel):
    billed_seconds: float = Field(default=0.0, ge=0)
    credits_estimate: float = Field(default=0.0, ge=0)
    tasks: int = Field(default=0, ge=0)
    characters: int = Field(default=0, ge=0)
    credits: float | None = Field(
        default=None,
        ge=0,
        description="Credits the session used: the provider's own figure where `credits_source` "
        "is provider (liveavatar's credits_consumed), else the estimate.",
    )
    credits_source: Literal["provider", "estimate"] = "estimate"


class SessionStopped(SessionEvent):
    """The session ended, with why and what it cost."""

    type: Literal["session.stopped"] = "session.stopped"
    reason: StopReason
    detail: str | None = None
    usage: Usage = Field(default_factory=Usage)
    heygen_session_id: str | None = None
    provider_end_reason: str | None = Field(
        default=None,
        max_length=64,
        description="The provider's own end reason when it ended the session (liveavatar: e.g. "
        "IDLE_TIMEOUT, NO_CREDITS, MAX_DURATION_REACHED); `reason` maps it.",
    )


class CommandRejected(EventBase):
    """A command was not executed (invalid, unknown session, capacity, expired, ...)."""

    type: Literal["command.rejected"] = "command.rejected"
    code: RejectCode
    message: str
    command_type: str | None = None


class CommandFailed(EventBase):
    """A command failed against the provider after retries."""

    type: Literal["command.failed"] = "command.failed"
    code: str = Field(description='Error kind, e.g. "server", "timeout", "session_closed".')
    message: str
    retryable: bool
    heygen_code: int | None = None
    command_type: str | None = None


class CommandCompleted(EventBase):
    """Terminal event of commands that otherwise produce none (session.ice, session.keepalive)."""

    type: Literal["command.completed"] = "command.completed"
    command_type: str


class SessionInfo(ContractModel):
    session_id: SessionId
    heygen_session_id: str | None = None
    state: SessionState
    owner: str | None = None
    created_at: AwareDatetime
    last_activity_at: AwareDatetime | None = None
    partition: int | None = Field(default=None, ge=0)
    provider: Provider = Provider.HEYGEN
    heygen_status: str | None = Field(
        default=None, description='From the provider\'s live list ("absent" if missing there).'
    )


class SessionsListed(EventBase):
    """Reply to sessions.list, sent to its reply_to."""

    type: Literal["sessions.listed"] = "sessions.listed"
    sessions: list[SessionInfo]
    truncated: bool = False


Event = Annotated[
    SessionCreated
    | SessionReady
    | SpeechStarted
    | SpeechFinished
    | SpeechInterrupted
    | UserSpeechStarted
    | UserSpeechEnded
    | UserTranscription
    | AvatarTranscription
    | SessionKeepaliveFailed
    | SessionReconnecting
    | SessionReconnected
    | SessionStopped
    | CommandRejected
    | CommandFailed
    | CommandCompleted
    | SessionsListed,
    Field(discriminator="type"),
]

EVENT_MODELS: tuple[type[EventBase], ...] = (
    SessionCreated,
    SessionReady,
    SpeechStarted,
    SpeechFinished,
    SpeechInterrupted,
    UserSpeechStarted,
    UserSpeechEnded,
    UserTranscription,
    AvatarTranscription,
    SessionKeepaliveFailed,
    SessionReconnecting,
    SessionReconnected,
    SessionStopped,
    CommandRejected,
    CommandFailed,
    CommandCompleted,
    SessionsListed,
)
EVENT_TYPES: dict[str, type[EventBase]] = {
    model.model_fields["type"].default: model for model in EVENT_MODELS
}
