"""One fixed, realistic example of every message: embedded in the schemas and the AsyncAPI file."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.commands import (
    CommandBase,
    IceCandidate,
    Sdp,
    SessionCreate,
    SessionIce,
    SessionInterrupt,
    SessionKeepalive,
    SessionsFilter,
    SessionsList,
    SessionSpeak,
    SessionSpeakAudio,
    SessionStart,
    SessionStop,
    Voice,
)
from contracts.common import (
    Emotion,
    Quality,
    RejectCode,
    SessionState,
    SpeechFinishSource,
    StopReason,
    StreamingVersion,
    TaskMode,
    TaskType,
)
from contracts.events import (
    AvatarTranscription,
    CommandCompleted,
    CommandFailed,
    CommandRejected,
    EventBase,
    IceServer,
    SdpOffer,
    SessionCreated,
    SessionInfo,
    SessionKeepaliveFailed,
    SessionReady,
    SessionReconnected,
    SessionReconnecting,
    SessionsListed,
    SessionStopped,
    SpeechFinished,
    SpeechInterrupted,
    SpeechStarted,
    Usage,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)

_T0 = datetime(2025, 1, 15, 9, 30, tzinfo=UTC)
_SID = "demo-session-1"
_CORR = "order-4711"
_HEYGEN = "9f2a6c1e-5b7d-11ef-8c1a-0242ac120002"
_WORKER = "worker-0"
_SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
_LIVEKIT_URL = "wss://heygen-feapbkvq.livekit.cloud"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(_T0.timestamp() + seconds, UTC)


def _command(command_id: str, seconds: float) -> dict[str, object]:
    return {"command_id": command_id, "correlation_id": _CORR, "sent_at": _at(seconds)}


def _event(event_id: str, seq: int | None, seconds: float, cause: str | None) -> dict[str, object]:
    return {
        "event_id": event_id,
        "session_id": _SID,
        "seq": seq,
        "occurred_at": _at(seconds),
        "causation_id": cause,
        "correlation_id": _CORR if cause else None,
        "worker_id": _WORKER,
    }


COMMAND_EXAMPLES: tuple[CommandBase, ...] = (
    SessionCreate(
        **_command("cmd-create-1", 0),
        session_id=_SID,
        avatar_id="Wayne_20240711",
        voice=Voice(voice_id="en-US-JennyNeural", rate=1.1, emotion=Emotion.FRIENDLY),
        quality=Quality.MEDIUM,
        activity_idle_timeout=120,
        language="en",
        idle_timeout_s=300,
        max_duration_s=1800,
    ),
    SessionStart(**_command("cmd-start-1", 1), session_id=_SID, sdp=Sdp(type="answer", sdp=_SDP)),
    SessionIce(
        **_command("cmd-ice-1", 1.2),
        session_id=_SID,
        candidate=IceCandidate(
            candidate="candidate:1 1 UDP 2122252543 192.0.2.10 51234 typ host",
            sdpMid="0",
            sdpMLineIndex=0,
        ),
    ),
    SessionSpeak(
        **_command("cmd-speak-1", 5),
        session_id=_SID,
        text="Hello! Your order has shipped and arrives tomorrow.",
        task_type=TaskType.REPEAT,
        task_mode=TaskMode.ASYNC,
        deadline=_at(15),
        reply_to="amq.gen-replies-demo",
    ),
    SessionSpeakAudio(
        **_command("cmd-speak-audio-1", 6),
        session_id=_SID,
        utterance_id="utt-1",
        audio="AAAAAAAAAAA=",  # four samples of silence
        final=True,
    ),
    SessionInterrupt(**_command("cmd-interrupt-1", 7), session_id=_SID),
    SessionStop(**_command("cmd-stop-1", 60), session_id=_SID, reason="conversation over"),
    SessionKeepalive(**_command("cmd-keepalive-1", 30), session_id=_SID),
    SessionsList(
        **_command("cmd-list-1", 40),
        reply_to="amq.gen-replies-demo",
        filter=SessionsFilter(states=[SessionState.READY, SessionState.SPEAKING]),
    ),
)

EVENT_EXAMPLES: tuple[EventBase, ...] = (
    SessionCreated(
        **_event("evt-1", 1, 2.5, "cmd-create-1"),
        heygen_session_id=_HEYGEN,
        version=StreamingVersion.V2,
        owner="crm-service",
        url=_LIVEKIT_URL,
        access_token="eyJhbGciOiJIUzI1NiJ9.example.token",
        realtime_endpoint="wss://webrtc-signaling.heygen.io/v2-alpha/interactive-avatar/session/x",
        session_duration_limit=600,
        is_paid=True,
        idle_timeout_s=300,
        max_duration_s=1800,
    ),
    SessionReady(**_event("evt-2", 2, 3, "cmd-create-1"), heygen_session_id=_HEYGEN),
    SpeechStarted(
        **_event("evt-3", 3, 5.4, "cmd-speak-1"),
        task_id="task-81f2",
        duration_ms=3120.0,
        task_type=TaskType.REPEAT,
        task_mode=TaskMode.ASYNC,
        characters=52,
    ),
    SpeechFinished(
        **_event("evt-4", 4, 8.5, "cmd-speak-1"),
        task_id="task-81f2",
        duration_ms=3120.0,
        source=SpeechFinishSource.ESTIMATED,
    ),
    SpeechInterrupted(**_event("evt-5", 5, 7.1, "cmd-interrupt-1"), task_id="task-81f2"),
    UserSpeechStarted(**_event("evt-14", 5, 9.0, None)),
    UserSpeechEnded(**_event("evt-15", 6, 10.6, None)),
    UserTranscription(**_event("evt-16", 7, 10.9, None), text="When will it arrive?"),
    AvatarTranscription(**_event("evt-17", 8, 11.4, None), text="It arrives tomorrow."),
    SessionKeepaliveFailed(
        **_event("evt-6", 6, 30.2, None),
        code="session_closed",
        message="Session is not in correct state",
        will_reconnect=True,
    ),
    SessionReconnecting(
        **_event("evt-7", 7, 30.3, None),
        attempt=1,
        reason="session_closed",
        previous_heygen_session_id=_HEYGEN,
    ),
    SessionReconnected(
        **_event("evt-8", 8, 32, None),
        attempt=1,
        previous_heygen_session_id=_HEYGEN,
        heygen_session_id="a41b7e02-5b7e-11ef-8c1a-0242ac120002",
        sdp=SdpOffer(sdp=_SDP),
        ice_servers=[IceServer(urls=["stun:stun.l.google.com:19302"])],
    ),
    SessionStopped(
        **_event("evt-9", 9, 61, "cmd-stop-1"),
        reason=StopReason.REQUESTED,
        detail="conversation over",
        usage=Usage(billed_seconds=60.0, credits_estimate=0.2, tasks=1, characters=52),
        heygen_session_id="a41b7e02-5b7e-11ef-8c1a-0242ac120002",
    ),
    CommandRejected(
        **_event("evt-10", 10, 62, "cmd-speak-2"),
        code=RejectCode.UNKNOWN_SESSION,
        message="session demo-session-1 is stopped",
        command_type="session.speak",
    ),
    CommandFailed(
        **_event("evt-11", 11, 63, "cmd-speak-3"),
        code="server",
        message="HeyGen answered 500 after 3 attempts",
        retryable=True,
        heygen_code=None,
        command_type="session.speak",
    ),
    CommandCompleted(
        **_event("evt-12", 12, 30.1, "cmd-keepalive-1"), command_type="session.keepalive"
    ),
    SessionsListed(
        event_id="evt-13",
        occurred_at=_at(40.2),
        causation_id="cmd-list-1",
        correlation_id=_CORR,
        worker_id=_WORKER,
        sessions=[
            SessionInfo(
                session_id=_SID,
                heygen_session_id=_HEYGEN,
                state=SessionState.READY,
                owner="crm-service",
                created_at=_at(2.5),
                last_activity_at=_at(8.5),
                partition=3,
                heygen_status="connected",
            )
        ],
    ),
)
