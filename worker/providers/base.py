"""The provider interface: how the worker drives one avatar API's sessions.

Handlers, the session pool, reconnection, orphan hunting and listing talk to a `Provider` and
nothing else; they never see a provider's wire format. One implementation per avatar API:
`worker/providers/heygen/` (the legacy Streaming API) and `worker/providers/liveavatar/`.

Rules every implementation keeps:
- It knows no logical sessions and no bus: it is addressed by its own session id
  (`provider_session_id`) and answers with the types below.
- Every call takes `deadline` (a `time.monotonic()` value, or None): no attempt starts, and no
  retry waits, past it. Calls that are billed or not idempotent are never repeated blindly.
- Failures are raised as the `ProviderError` subclasses below, never as transport or
  wire-format exceptions.
- What the provider observes on its own (speech started and ended, the end user's speech, a
  remote stop, a lost link) comes out of ONE place: `observed()`, an async iterator the worker
  consumes in one task per provider. There are no callbacks into the worker.
- Secrets (API keys, session tokens, LiveKit tokens, WebSocket URLs) never leave the provider
  except inside `Created.resume`, which is a `SecretStr` the worker stores only in its private
  state snapshot, and the end user's own `BrowserConnection` credentials.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, Self

from pydantic import SecretStr

ProviderName = Literal["heygen", "liveavatar"]
TaskType = Literal["repeat", "talk"]  # repeat: say the text; talk: the provider's LLM answers it
TaskMode = Literal["sync", "async"]
# Why the worker stops a session (contracts' StopReason values); the provider maps it onto its own.
StopCause = Literal["requested", "idle", "max_duration", "expired_remotely", "shutdown", "error"]


# --- what a session is created from ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveKitRoom:
    """liveavatar LITE: the producer's own LiveKit room, which the avatar joins."""

    url: str
    room: str
    client_token: SecretStr


@dataclass(frozen=True, slots=True)
class SessionProfile:
    """A provider-neutral description of the session to create (built from `session.create`).

    Validation has already refused what the chosen provider cannot honour, so a provider may
    ignore a field that is None and must not silently drop one that is set: raising
    `InvalidRequestError` for it is a bug caught here, not at the user's.
    """

    avatar_id: str
    voice_id: str | None = None
    voice_rate: float | None = None  # heygen only
    voice_emotion: str | None = None  # heygen only
    quality: Literal["very_high", "high", "medium", "low"] | None = None  # very_high: liveavatar
    video_encoding: Literal["H264", "VP8"] | None = None
    language: str | None = None
    # heygen's knowledge_base_id, liveavatar's avatar_persona.context_id.
    context_id: str | None = None
    knowledge_base: str | None = None  # heygen only: a prompt given inline
    # The provider's own session length cap in seconds (liveavatar max_session_duration).
    max_duration_s: int | None = None
    # heygen only
    version: Literal["v2", "v1"] = "v2"
    activity_idle_timeout: int | None = None
    stt_provider: Literal["deepgram", "gladia"] | None = None
    stt_confidence: float | None = None
    # liveavatar only
    mode: Literal["FULL", "LITE"] = "FULL"
    is_sandbox: bool | None = None
    interactivity_type: Literal["CONVERSATIONAL", "PUSH_TO_TALK"] | None = None
    livekit_room: LiveKitRoom | None = None  # LITE only


# --- what calls answer -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrowserConnection:
    """What the end user's browser needs to join the stream, named as in `session.created`.

    Each provider fills its own fields and leaves the others None. Never the worker's own
    credentials (LiveKit agent token, WebSocket URLs).
    """

    # heygen
    url: str | None = None
    access_token: str | None = None
    realtime_endpoint: str | None = None
    session_duration_limit: float | None = None
    is_paid: bool | None = None
    sdp: dict[str, str] | None = None  # v1: the SDP offer, {type, sdp}
    ice_servers: list[dict[str, object]] | None = None
    # liveavatar
    livekit_url: str | None = None
    livekit_client_token: str | None = None
    max_session_duration: float | None = None


@dataclass(frozen=True, slots=True)
class Created:
    """A remote session now exists (and may bill) but is not started yet: see `start`."""

    provider_session_id: str
    browser: BrowserConnection
    # Provider-private, opaque, secret: what `start` needs to (re)attach the worker's own link
    # to this session, also from another replica after a takeover. None when the provider has
    # no link of its own: the worker then calls `start` once per created session, never again.
    resume: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class Spoken:
    """A speak was accepted.

    `ended`: the answer itself means the speech is over (a HeyGen sync task), so no observed
    end follows. Otherwise, if the provider `observes_speech`, `SpeechStarted` and `SpeechEnded`
    for `command_id` follow on `observed()`; if not, the worker estimates the end from
    `duration_ms`.
    """

    task_id: str
    duration_ms: float | None = None
    ended: bool = False


@dataclass(frozen=True, slots=True)
class AudioSent:
    """What a `speak_audio` call sent: seconds of audio, and whether an interrupt cut the
    utterance before all of it went (the rest was dropped, never to be sent)."""

    seconds: float
    cut: bool = False


@dataclass(frozen=True, slots=True)
class RemoteSession:
    """One live session as the provider lists it."""

    provider_session_id: str
    status: str  # the provider's own word, e.g. heygen "connected", liveavatar "active"
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Stopped:
    """What the provider says about a stopped session's cost; None when it does not say."""

    credits_consumed: float | None = None


# --- what the provider observes on its own ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    provider_session_id: str
    command_id: str | None  # the speak it answers; None if the provider did not say


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    provider_session_id: str
    command_id: str | None


@dataclass(frozen=True, slots=True)
class UserSpeechStarted:
    provider_session_id: str


@dataclass(frozen=True, slots=True)
class UserSpeechEnded:
    provider_session_id: str


@dataclass(frozen=True, slots=True)
class UserTranscription:
    provider_session_id: str
    text: str


@dataclass(frozen=True, slots=True)
class AvatarTranscription:
    provider_session_id: str
    text: str


@dataclass(frozen=True, slots=True)
class RemoteStopped:
    """The provider ended the session. `end_reason` is its own word (e.g. `NO_CREDITS`)."""

    provider_session_id: str
    end_reason: str


@dataclass(frozen=True, slots=True)
class LinkLost:
    """The worker's own link to the session (LiveKit room, WebSocket) dropped and could not be
    restored by the provider; the remote session may still run. `reason` is free text."""

    provider_session_id: str
    reason: str


Observed = (
    SpeechStarted
    | SpeechEnded
    | UserSpeechStarted
    | UserSpeechEnded
    | UserTranscription
    | AvatarTranscription
    | RemoteStopped
    | LinkLost
)


# --- errors ----------------------------------------------------------------------------------


class ProviderError(Exception):
    """A failed provider call. `retryable`: the condition is transient (a later call may
    succeed); whether the provider itself repeats the call depends on the endpoint.
    `endpoint` is a bounded name (for metrics labels), `code` the provider's own code."""

    retryable: ClassVar[bool] = False
    kind: ClassVar[str] = "unknown"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        details = [f"{name}={value}" for name, value in self._details() if value is not None]
        suffix = f" ({', '.join(details)})" if details else ""
        return f"{self.endpoint}: {self.message}{suffix}"

    def __repr__(self) -> str:
        fields = [f"endpoint={self.endpoint!r}", f"message={self.message!r}"]
        fields += [f"{name}={value!r}" for name, value in self._details()]
        return f"{type(self).__name__}({', '.join(fields)})"

    def _details(self) -> list[tuple[str, object]]:
        return [("code", self.code), ("http_status", self.http_status)]


class AuthenticationError(ProviderError):
    kind = "auth"


class ForbiddenError(ProviderError):
    kind = "forbidden"


class SessionClosedError(ProviderError):
    """The session is closed or in the wrong state for the call. `closed` is False when the
    provider only said "wrong state" (HeyGen answers that to a task sent before the viewer
    joined: a fresh session is not a closed one); True when it is certainly gone."""

    kind = "session_closed"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
        closed: bool | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, code=code, http_status=http_status)
        self.closed = "closed" in message.lower() if closed is None else closed

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("closed", self.closed)]


class InvalidRequestError(ProviderError):
    kind = "invalid_request"


class UnsupportedError(InvalidRequestError):
    """The provider cannot do this at all (e.g. an ICE candidate for LiveAvatar)."""

    kind = "unsupported"


class CapacityError(ProviderError):
    """Concurrency limit, or no credits left to start a session: the worker answers
    `command.rejected` with code `capacity`."""

    retryable = True
    kind = "capacity"


class RateLimitedError(ProviderError):
    retryable = True
    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, code=code, http_status=http_status)
        self.retry_after = retry_after

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("retry_after", self.retry_after)]


class ServerError(ProviderError):
    retryable = True
    kind = "server"


class ProviderTimeoutError(ProviderError):
    """No answer in time: the provider may or may not have acted on the request."""

    retryable = True
    kind = "timeout"


class TransportError(ProviderError):
    """A connection-level failure. `request_sent` is False only when the request provably never
    reached the provider (the connection could not be opened), which makes even billed calls
    safe to repeat."""

    retryable = True
    kind = "transport"

    def __init__(self, message: str, *, endpoint: str, request_sent: bool) -> None:
        super().__init__(message, endpoint=endpoint)
        self.request_sent = request_sent

    def _details(self) -> list[tuple[str, object]]:
        return [*super()._details(), ("request_sent", self.request_sent)]


def may_have_acted(error: BaseException) -> bool:
    """The call failed, but the provider may have carried it out (and billed it)."""
    if isinstance(error, TransportError):
        return error.request_sent
    return isinstance(error, ProviderTimeoutError | ServerError)


# --- the interface ---------------------------------------------------------------------------


class Provider(ABC):
    """One avatar API. Use as an async context manager or call `aclose()` when done."""

    name: ClassVar[ProviderName]
    # Speech start and end arrive on `observed()` for async speaks (else the end is estimated).
    observes_speech: ClassVar[bool] = False
    # Credits a minute a live session burns, for the burn-rate alert; None if not credit-billed.
    credits_per_minute: ClassVar[float | None] = None
    # The provider closes a session without keep-alive or activity after this many seconds.
    idle_close_s: ClassVar[float] = 120.0

    @abstractmethod
    async def create(self, profile: SessionProfile, *, deadline: float | None = None) -> Created:
        """Make a remote session (billed from here on). Never repeated blindly."""

    @abstractmethod
    async def start(
        self,
        provider_session_id: str,
        *,
        resume: SecretStr | None = None,
        sdp_answer: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """Make a created session ready to speak, or re-attach the worker's link to a running one
        (after a takeover: same `resume` as `Created.resume`, which the provider must accept
        more than once). `sdp_answer`: the browser's answer for a heygen v1 session."""

    @abstractmethod
    async def speak(
        self,
        provider_session_id: str,
        text: str,
        *,
        command_id: str,
        task_type: TaskType = "repeat",
        task_mode: TaskMode = "async",
        deadline: float | None = None,
    ) -> Spoken:
        """Have the avatar say `text`; returns once the provider accepted it (a sync HeyGen task:
        once it was spoken). A provider without sync speech takes `sync` as `async` (the worker
        then waits for the observed end). `command_id` is what `SpeechStarted`/`SpeechEnded`
        carry back; the provider may use it as its own event id or keep a mapping."""

    async def speak_audio(
        self,
        provider_session_id: str,
        audio: bytes,
        *,
        utterance_id: str,
        final: bool,
        deadline: float | None = None,
    ) -> AudioSent:
        """Have the avatar lip-sync `audio` (PCM s16le mono 24 kHz) as the next part of
        `utterance_id`; `final` ends the utterance. Returns once all of it was sent (paced no
        faster than the avatar needs), or an interrupt cut it. `SpeechStarted`/`SpeechEnded`
        for `utterance_id` follow on `observed()`. Never repeats audio it may have sent."""
        raise UnsupportedError(f"{self.name} takes no audio", endpoint="speak_audio")

    @abstractmethod
    async def interrupt(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        """Cut the current speech and drop queued speech. Whether a `SpeechEnded` follows for the
        cut speech is up to the provider's API; the worker accepts both."""

    @abstractmethod
    async def keep_alive(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        """Reset the provider's idle timer."""

    @abstractmethod
    async def stop(
        self,
        provider_session_id: str,
        *,
        cause: StopCause = "requested",
        deadline: float | None = None,
    ) -> Stopped:
        """End the session and close the worker's link to it. Raises `SessionClosedError` when
        the provider says it was already gone."""

    @abstractmethod
    async def list_live(self, *, deadline: float | None = None) -> list[RemoteSession]:
        """Every live session of this account (all pages)."""

    @abstractmethod
    def observed(self) -> AsyncIterator[Observed]:
        """What the provider observed, in arrival order per session, for every session it has
        started; consumed by exactly one task. Ends only when the provider is closed."""

    async def ice(
        self,
        provider_session_id: str,
        candidate: dict[str, object],
        *,
        deadline: float | None = None,
    ) -> None:
        """Trickle a browser ICE candidate (heygen v1 only)."""
        raise UnsupportedError(f"{self.name} takes no ICE candidates", endpoint="ice")

    def credit_rate(self, mode: Literal["FULL", "LITE"] = "FULL") -> float | None:
        """Credits a minute one live session in `mode` burns (`SessionProfile.mode`)."""
        return self.credits_per_minute

    async def credits_left(self, *, deadline: float | None = None) -> float | None:
        """The account's credit balance; None when the provider has no such figure."""
        return None

    @abstractmethod
    async def aclose(self) -> None:
        """Close links and connection pools; ends `observed()`."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
