"""Valid and invalid commands and events, ids, limits, routing keys and the AMQP codec."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import (
    COMMAND_TYPES,
    EVENT_TYPES,
    LIMITS,
    CommandBase,
    CommandRejected,
    DecodeError,
    DecodeErrorReason,
    Emotion,
    EventBase,
    Quality,
    RejectCode,
    SessionCreate,
    SessionCreated,
    SessionReconnected,
    SessionsList,
    SessionSpeak,
    SessionState,
    SessionStopped,
    SpeechFinishSource,
    StopReason,
    StreamingVersion,
    TaskMode,
    TaskType,
    VideoEncoding,
    command_routing_key,
    configure_limits,
    decode_command,
    decode_event,
    encode_command,
    encode_event,
    event_binding_keys,
    event_routing_key,
    new_id,
    partition_queue,
)
from contracts.common import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_TEXT_CHARS
from contracts.examples import COMMAND_EXAMPLES, EVENT_EXAMPLES

T0 = "2025-01-15T09:30:00Z"

# The smallest valid body of every command.
MINIMAL_COMMANDS: dict[str, dict[str, Any]] = {
    "session.create": {"session_id": "s1", "avatar_id": "Wayne_20240711"},
    "session.start": {"session_id": "s1", "sdp": {"type": "answer", "sdp": "v=0"}},
    "session.ice": {"session_id": "s1", "candidate": {"candidate": "candidate:1 1 UDP 1 h 1"}},
    "session.speak": {"session_id": "s1", "text": "Hello"},
    "session.speak_audio": {
        "session_id": "s1",
        "utterance_id": "u1",
        "audio": "AAA=",
        "final": True,
    },
    "session.interrupt": {"session_id": "s1"},
    "session.stop": {"session_id": "s1"},
    "session.keepalive": {"session_id": "s1"},
    "sessions.list": {},
}

_EVENT_COMMON = {"worker_id": "w0", "session_id": "s1"}
MINIMAL_EVENTS: dict[str, dict[str, Any]] = {
    "session.created": {
        "heygen_session_id": "h1",
        "version": "v2",
        "idle_timeout_s": 300,
        "max_duration_s": 3600,
    },
    "session.ready": {"heygen_session_id": "h1"},
    "speech.started": {
        "task_id": "t1",
        "task_type": "repeat",
        "task_mode": "sync",
        "characters": 5,
    },
    "speech.finished": {"task_id": "t1", "source": "observed"},
    "speech.interrupted": {},
    "user.speech_started": {},
    "user.speech_ended": {},
    "user.transcription": {"text": "hello"},
    "avatar.transcription": {"text": "hi there"},
    "session.keepalive_failed": {"code": "server", "message": "boom", "will_reconnect": False},
    "session.reconnecting": {"attempt": 1, "reason": "closed", "previous_heygen_session_id": "h1"},
    "session.reconnected": {
        "attempt": 1,
        "previous_heygen_session_id": "h1",
        "heygen_session_id": "h2",
    },
    "session.stopped": {"reason": "idle"},
    "command.rejected": {"code": "capacity", "message": "full"},
    "command.failed": {"code": "timeout", "message": "slow", "retryable": True},
    "command.completed": {"command_type": "session.ice"},
    "sessions.listed": {"sessions": []},
}


def command_body(type_: str, **changes: Any) -> dict[str, Any]:
    return {"type": type_, **MINIMAL_COMMANDS[type_], **changes}


def event_body(type_: str, **changes: Any) -> dict[str, Any]:
    return {"type": type_, **_EVENT_COMMON, **MINIMAL_EVENTS[type_], **changes}


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def schema_error(body: dict[str, Any]) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_command(raw(body))
    assert caught.value.reason is DecodeErrorReason.SCHEMA, caught.value
    return caught.value


@pytest.fixture
def restore_limits() -> Iterator[None]:
    saved = (LIMITS.max_text_chars, LIMITS.max_message_bytes)
    yield
    LIMITS.max_text_chars, LIMITS.max_message_bytes = saved


def test_contracts_import_needs_pydantic_only() -> None:
    # Producers install `contracts` alone: importing it must not pull the bus or YAML libraries.
    probe = (
        "import sys, contracts; print(sorted({'aio_pika', 'aiormq', 'yaml'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


# --- commands -------------------------------------------------------------------------------


def test_every_command_type_is_registered_once() -> None:
    assert set(COMMAND_TYPES) == set(MINIMAL_COMMANDS)
    for type_, model in COMMAND_TYPES.items():
        assert model.model_fields["type"].default == type_


@pytest.mark.parametrize("type_", sorted(MINIMAL_COMMANDS))
def test_minimal_command_decodes_with_defaults(type_: str) -> None:
    before = datetime.now(UTC)
    command = decode_command(raw(command_body(type_)))
    assert type(command) is COMMAND_TYPES[type_]
    assert command.type == type_
    assert len(command.command_id) == 32  # a generated uuid4 hex
    assert command.correlation_id is None
    assert command.deadline is None
    assert before <= command.sent_at <= datetime.now(UTC)


def test_command_defaults() -> None:
    speak = SessionSpeak(session_id="s1", text="Hi")
    assert (speak.task_type, speak.task_mode) == (TaskType.REPEAT, TaskMode.ASYNC)
    create = SessionCreate(session_id="s1", avatar_id="a")
    assert create.version is StreamingVersion.V2
    assert create.voice is None
    assert create.quality is None
    assert SessionsList().filter.session_ids is None
    assert SessionCreate(session_id="s1", avatar_id="a").command_id != create.command_id


def test_full_session_create_parses_nested_objects() -> None:
    command = decode_command(
        raw(
            command_body(
                "session.create",
                voice={"voice_id": "v1", "rate": 1.5, "emotion": "Soothing"},
                quality="low",
                video_encoding="H264",
                version="v1",
                activity_idle_timeout=30,
                knowledge_base="You are a helpful guide.",
                knowledge_base_id="kb1",
                language="en",
                stt_settings={"provider": "gladia", "confidence": 0.5},
                idle_timeout_s=60,
                max_duration_s=600,
                deadline="2030-01-01T00:00:00+02:00",
            )
        )
    )
    assert isinstance(command, SessionCreate)
    assert command.voice is not None
    assert command.voice.emotion is Emotion.SOOTHING
    assert command.quality is Quality.LOW
    assert command.video_encoding is VideoEncoding.H264
    assert command.stt_settings is not None
    assert command.stt_settings.provider == "gladia"
    assert command.deadline == datetime(2029, 12, 31, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "field", "message_part"),
    [
        (command_body("session.create", avatar_id=""), "avatar_id", "at least 1 character"),
        ({"type": "session.create", "session_id": "s1"}, "avatar_id", "Field required"),
        (command_body("session.create", voice={"rate": 1.6}), "voice.rate", "less than or equal"),
        (command_body("session.create", voice={"rate": 0.4}), "voice.rate", "greater than"),
        (command_body("session.create", voice={"emotion": "Angry"}), "voice.emotion", "Excited"),
        (command_body("session.create", voice={"pitch": 2}), "voice.pitch", "Extra inputs"),
        (command_body("session.create", quality="ultra"), "quality", "'high', 'medium'"),
        (command_body("session.create", video_encoding="h264"), "video_encoding", "H264"),
        (command_body("session.create", version="v3"), "version", "v2"),
        (command_body("session.create", activity_idle_timeout=29), "activity_idle_timeout", ""),
        (command_body("session.create", activity_idle_timeout=3601), "activity_idle_timeout", ""),
        (
            command_body("session.create", stt_settings={"provider": "x"}),
            "stt_settings.provider",
            "",
        ),
        (
            command_body("session.create", stt_settings={"provider": "gladia", "confidence": 2}),
            "stt_settings.confidence",
            "",
        ),
        (command_body("session.create", idle_timeout_s=0), "idle_timeout_s", "greater than 0"),
        (command_body("session.create", max_duration_s=-5), "max_duration_s", "greater than 0"),
        (command_body("session.start", sdp={"type": "offer", "sdp": "v=0"}), "sdp.type", "answer"),
        (command_body("session.ice", candidate={}), "candidate.candidate", "Field required"),
        (
            command_body("session.ice", candidate={"candidate": "c", "sdpMLineIndex": -1}),
            "candidate.sdpMLineIndex",
            "",
        ),
        (command_body("session.speak", text=""), "text", "at least 1 character"),
        (command_body("session.speak", text=" \n\t "), "text", "must not be blank"),
        (command_body("session.speak", task_type="chat"), "task_type", "'repeat' or 'talk'"),
        (command_body("session.speak", task_mode="later"), "task_mode", "'sync' or 'async'"),
        (command_body("session.stop", reason="x" * 201), "reason", "at most 200"),
        (command_body("session.stop", extra=1), "extra", "Extra inputs are not permitted"),
        (command_body("sessions.list", session_id="s1"), "session_id", "Extra inputs"),
        (command_body("sessions.list", filter={"states": ["gone"]}), "filter.states.0", ""),
        (
            command_body("sessions.list", filter={"session_ids": ["a.b"]}),
            "filter.session_ids.0",
            "pattern",
        ),
        (command_body("session.stop", deadline="2030-01-01T00:00:00"), "deadline", "timezone"),
        (command_body("session.stop", sent_at="yesterday"), "sent_at", "datetime"),
        (command_body("session.stop", correlation_id=""), "correlation_id", ""),
        (command_body("session.stop", correlation_id="c" * 256), "correlation_id", ""),
        (command_body("session.stop", reply_to="é" * 200), "reply_to", "255 bytes"),
    ],
)
def test_invalid_command_names_the_field(
    body: dict[str, Any], field: str, message_part: str
) -> None:
    error = schema_error(body)
    assert error.field == field
    assert error.message.startswith(f"{field}: ")
    assert message_part in error.message
    assert error.session_id == body.get("session_id")
    assert error.command_type == body["type"]


def test_schema_error_lists_every_offending_field() -> None:
    error = schema_error(command_body("session.create", avatar_id="", voice={"rate": 9}))
    assert error.message.count("; ") == 1
    assert "avatar_id: " in error.message
    assert "voice.rate: " in error.message


def test_error_text_does_not_echo_values() -> None:
    error = schema_error(command_body("session.create", avatar_id=["secret-value"]))
    assert "secret-value" not in str(error)


@pytest.mark.parametrize(
    "session_id",
    ["a.b", "", "x" * 65, "abc\n", "abc ", "sé", "a/b", "a*b", "#"],
)
def test_session_id_pattern_rejects(session_id: str) -> None:
    error = schema_error(command_body("session.stop", session_id=session_id))
    assert error.field == "session_id"
    assert error.session_id is None  # an invalid id is never handed back


@pytest.mark.parametrize("session_id", ["a", "x" * 64, "Abc_09-z", new_id()])
def test_session_id_pattern_accepts(session_id: str) -> None:
    assert decode_command(raw(command_body("session.stop", session_id=session_id))).session_id == (
        session_id
    )


@pytest.mark.parametrize("command_id", ["", "has space", "x" * 129, "a/b", "ü"])
def test_command_id_pattern_rejects(command_id: str) -> None:
    assert schema_error(command_body("session.stop", command_id=command_id)).field == "command_id"


@pytest.mark.parametrize("command_id", ["x" * 128, "order-1:retry.2", new_id()])
def test_command_id_pattern_accepts(command_id: str) -> None:
    body = command_body("session.stop", command_id=command_id)
    assert decode_command(raw(body)).command_id == command_id


def test_session_id_accessor_on_every_command() -> None:
    for example in COMMAND_EXAMPLES:
        expected = None if isinstance(example, SessionsList) else "demo-session-1"
        assert example.session_id == expected  # type: ignore[attr-defined]
    command = decode_command(raw(command_body("sessions.list")))
    assert command.session_id is None


def test_models_are_frozen_and_strict() -> None:
    speak = SessionSpeak(session_id="s1", text="Hi")
    with pytest.raises(ValidationError):
        speak.text = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        SessionSpeak(session_id="s1", text="Hi", volume=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="finite"):
        SessionCreate.model_validate(
            {"session_id": "s1", "avatar_id": "a", "voice": {"rate": float("nan")}}
        )


# --- limits ---------------------------------------------------------------------------------


def test_text_limit_default_and_configurable(restore_limits: None) -> None:
    assert LIMITS.max_text_chars == DEFAULT_MAX_TEXT_CHARS == 2000
    SessionSpeak(session_id="s1", text="x" * 2000)
    error = schema_error(command_body("session.speak", text="x" * 2001))
    assert error.message == "text: String should have at most 2000 characters"

    configure_limits(max_text_chars=3000)
    assert len(SessionSpeak(session_id="s1", text="x" * 3000).text) == 3000
    configure_limits(max_text_chars=10)
    with pytest.raises(ValidationError, match="at most 10 characters"):
        SessionSpeak(session_id="s1", text="x" * 11)
    # The published schema keeps the default, whatever this process configured.
    assert SessionSpeak.model_json_schema()["properties"]["text"]["maxLength"] == 2000


def test_message_size_limit_default_and_configurable(restore_limits: None) -> None:
    assert LIMITS.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 65536
    body = raw(command_body("session.create", knowledge_base="k" * 70_000))
    with pytest.raises(DecodeError) as caught:
        decode_command(body)
    assert caught.value.reason is DecodeErrorReason.OVERSIZED
    assert "65536" in caught.value.message
    assert isinstance(decode_command(body, max_bytes=100_000), SessionCreate)
    configure_limits(max_message_bytes=100_000)
    assert isinstance(decode_command(body), SessionCreate)
    configure_limits(max_message_bytes=20)
    with pytest.raises(DecodeError, match="oversized"):
        decode_command(raw(command_body("session.interrupt")))


def test_configure_limits_rejects_nonsense_and_keeps_unset_values(restore_limits: None) -> None:
    with pytest.raises(ValueError, match="max_text_chars"):
        configure_limits(max_text_chars=0)
    with pytest.raises(ValueError, match="max_message_bytes"):
        configure_limits(max_message_bytes=-1)
    configure_limits(max_text_chars=42)
    assert (LIMITS.max_text_chars, LIMITS.max_message_bytes) == (42, DEFAULT_MAX_MESSAGE_BYTES)


# --- enums ----------------------------------------------------------------------------------


def test_enum_values_match_heygen_and_design() -> None:
    assert [q.value for q in Quality] == ["very_high", "high", "medium", "low"]
    assert [e.value for e in VideoEncoding] == ["H264", "VP8"]
    assert [t.value for t in TaskType] == ["repeat", "talk"]
    assert [m.value for m in TaskMode] == ["sync", "async"]
    assert [e.value for e in Emotion] == [
        "Excited",
        "Serious",
        "Friendly",
        "Soothing",
        "Broadcaster",
    ]
    assert [v.value for v in StreamingVersion] == ["v2", "v1"]
    assert {s.value for s in SessionState} == {
        "creating",
        "ready",
        "speaking",
        "stopping",
        "stopped",
        "reconnecting",
    }
    assert {r.value for r in StopReason} == {
        "requested",
        "idle",
        "max_duration",
        "expired_remotely",
        "shutdown",
        "error",
    }
    assert {c.value for c in RejectCode} >= {
        "validation",
        "unknown_session",
        "forbidden",
        "capacity",
        "expired",
    }
    assert {s.value for s in SpeechFinishSource} == {"observed", "estimated"}
    assert str(Quality.HIGH) == "high"  # StrEnum: usable directly as a string


# --- events ---------------------------------------------------------------------------------


def test_every_event_type_is_registered_once() -> None:
    assert set(EVENT_TYPES) == set(MINIMAL_EVENTS)


@pytest.mark.parametrize("type_", sorted(MINIMAL_EVENTS))
def test_minimal_event_decodes(type_: str) -> None:
    event = decode_event(raw(event_body(type_)))
    assert type(event) is EVENT_TYPES[type_]
    assert event.worker_id == "w0"
    assert event.seq is None
    assert event.causation_id is None


@pytest.mark.parametrize(
    "type_",
    [t for t in sorted(MINIMAL_EVENTS) if t.startswith(("session.", "speech."))],
)
def test_session_events_require_session_id(type_: str) -> None:
    body = event_body(type_)
    del body["session_id"]
    with pytest.raises(DecodeError) as caught:
        decode_event(raw(body))
    assert caught.value.field == "session_id"


@pytest.mark.parametrize("type_", ["command.rejected", "command.failed", "sessions.listed"])
def test_command_events_may_concern_no_session(type_: str) -> None:
    body = event_body(type_)
    del body["session_id"]
    assert decode_event(raw(body)).session_id is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event_body("session.ready", seq=0), "seq"),
        (event_body("session.ready", worker_id=""), "worker_id"),
        ({k: v for k, v in event_body("session.ready").items() if k != "worker_id"}, "worker_id"),
        (event_body("session.ready", session_id="a.b"), "session_id"),
        (event_body("session.ready", occurred_at="2025-01-15T09:30:00"), "occurred_at"),
        (event_body("session.stopped", reason="bored"), "reason"),
        (event_body("session.stopped", usage={"tasks": -1}), "usage.tasks"),
        (event_body("command.rejected", code="nope"), "code"),
        (event_body("speech.started", characters=-1), "characters"),
        (event_body("speech.finished", source="guessed"), "source"),
        (event_body("session.reconnecting", attempt=0), "attempt"),
        (event_body("session.created", sdp={"type": "answer", "sdp": "v=0"}), "sdp.type"),
        (event_body("sessions.listed", sessions=[{"session_id": "s1"}]), "sessions.0.state"),
        (event_body("session.ready", bonus=True), "bonus"),
    ],
)
def test_invalid_event_names_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_event(raw(body))
    assert caught.value.reason is DecodeErrorReason.SCHEMA
    assert caught.value.field == field


def test_usage_defaults_to_zero() -> None:
    stopped = SessionStopped(session_id="s1", worker_id="w", reason=StopReason.IDLE)
    assert stopped.usage.billed_seconds == 0
    assert stopped.usage.tasks == 0


def test_connection_fields_are_shared_not_copied() -> None:
    connection_fields = {
        "heygen_session_id",
        "url",
        "access_token",
        "realtime_endpoint",
        "session_duration_limit",
        "is_paid",
        "sdp",
        "ice_servers",
    }
    assert connection_fields <= set(SessionCreated.model_fields)
    assert connection_fields <= set(SessionReconnected.model_fields)
    assert "heygen_session_id" not in SessionReconnected.__annotations__


@pytest.mark.parametrize("model", [SessionCreated, SessionReconnected])
def test_access_token_never_in_repr_or_errors(model: type[EventBase]) -> None:
    fields: dict[str, Any] = {
        "session_id": "s1",
        "worker_id": "w",
        "heygen_session_id": "h",
        "access_token": "TOKEN-123",
    }
    extra = (
        {"version": "v2", "idle_timeout_s": 1, "max_duration_s": 2}
        if model is SessionCreated
        else {"attempt": 1, "previous_heygen_session_id": "h0"}
    )
    event = model.model_validate(fields | extra)
    assert "TOKEN-123" not in repr(event)
    assert "TOKEN-123" not in str(event)
    assert json.loads(encode_event(event).body)["access_token"] == "TOKEN-123"
    with pytest.raises(ValidationError) as caught:
        model.model_validate(fields)  # missing fields: pydantic would echo the whole input
    assert "TOKEN-123" not in str(caught.value)


# --- routing --------------------------------------------------------------------------------


def test_partition_queue_names() -> None:
    assert [partition_queue(i) for i in (0, 7, 12)] == [
        "avatar.commands.p0",
        "avatar.commands.p7",
        "avatar.commands.p12",
    ]
    with pytest.raises(ValueError, match=">= 0"):
        partition_queue(-1)


def test_command_routing_key_is_session_id_or_command_id() -> None:
    assert command_routing_key(SessionSpeak(session_id="abc", text="hi")) == "abc"
    listing = SessionsList(command_id="list-1")
    assert command_routing_key(listing) == "list-1"


def test_event_routing_key() -> None:
    ready = decode_event(raw(event_body("session.ready", session_id="abc123")))
    assert event_routing_key(ready) == "session.ready.abc123"
    rejected = CommandRejected(worker_id="w", code=RejectCode.VALIDATION, message="bad")
    assert event_routing_key(rejected) == "command.rejected._"


def test_event_binding_keys() -> None:
    assert event_binding_keys() == ["#"]
    assert event_binding_keys(session_id="abc") == ["#.abc"]
    assert event_binding_keys(types=["speech.started", "speech.finished"]) == [
        "speech.started.*",
        "speech.finished.*",
    ]
    assert event_binding_keys(session_id="abc", types=["session.ready", "session.ready"]) == [
        "session.ready.abc"
    ]
    with pytest.raises(ValueError, match="session_id"):
        event_binding_keys(session_id="a.#")
    with pytest.raises(ValueError, match=r"unknown event types: speech\.\*"):
        event_binding_keys(types=["speech.*"])
    with pytest.raises(ValueError, match="at least one"):
        event_binding_keys(types=[])


# --- codec ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMAND_EXAMPLES, ids=lambda c: c.type)
def test_command_round_trip_and_properties(command: CommandBase) -> None:
    envelope = encode_command(command)
    assert decode_command(envelope.body, message_type=envelope.properties["type"]) == command
    props = envelope.properties
    assert props["content_type"] == "application/json"
    assert props["content_encoding"] == "utf-8"
    assert props["type"] == command.type
    assert props["message_id"] == command.command_id
    assert props["correlation_id"] == command.correlation_id
    assert props["reply_to"] == command.reply_to
    assert props["timestamp"] == command.sent_at
    assert props["delivery_mode"] == 2
    assert props["headers"] == {}
    assert b"null" not in envelope.body  # None fields are left out of the body


@pytest.mark.parametrize("event", EVENT_EXAMPLES, ids=lambda e: e.type)
def test_event_round_trip_and_properties(event: EventBase) -> None:
    envelope = encode_event(event)
    assert decode_event(envelope.body, message_type=event.type) == event
    props = envelope.properties
    assert (props["type"], props["message_id"]) == (event.type, event.event_id)
    assert props["timestamp"] == event.occurred_at
    assert props["delivery_mode"] == 2
    assert "reply_to" not in props


def test_body_is_flat_json_with_type() -> None:
    body = json.loads(encode_command(SessionSpeak(session_id="s1", text="Hi")).body)
    assert body["type"] == "session.speak"
    assert body["session_id"] == "s1"
    assert body["text"] == "Hi"
    assert body["sent_at"].endswith("Z")


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF8"],
)
def test_accepted_content_types(content_type: str | None) -> None:
    body = raw(command_body("session.stop"))
    assert decode_command(body, content_type=content_type).type == "session.stop"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "application/json; charset=latin-1", ""]
)
def test_rejected_content_types(content_type: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_command(raw(command_body("session.stop")), content_type=content_type)
    assert caught.value.reason is DecodeErrorReason.CONTENT_TYPE


@pytest.mark.parametrize(
    ("body", "message_part"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"session.stop"', "not a JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, "not JSON"),  # deep nesting: RecursionError in json
        (b'{"n": ' + b"9" * 5000 + b"}", "not JSON"),  # beyond Python's int digit limit
    ],
)
def test_undecodable_bodies(body: bytes, message_part: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_command(body, max_bytes=200_000)
    assert caught.value.reason is DecodeErrorReason.UNDECODABLE
    assert message_part in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"session_id": "s1"},
        {"type": "session.created", "session_id": "s1"},
        {"type": ["session.stop"], "session_id": "s1"},
        {"type": "x" * 1000, "session_id": "s1"},
    ],
)
def test_unknown_command_type_keeps_ids(body: dict[str, Any]) -> None:
    body |= {"command_id": "c-1", "reply_to": "replies", "correlation_id": "corr"}
    with pytest.raises(DecodeError) as caught:
        decode_command(raw(body))
    error = caught.value
    assert error.reason is DecodeErrorReason.UNKNOWN_TYPE
    assert error.field == "type"
    assert (error.session_id, error.command_id) == ("s1", "c-1")
    assert (error.reply_to, error.correlation_id) == ("replies", "corr")
    assert len(str(error)) < 400  # untrusted input is not echoed in full


def test_type_property_must_agree_with_body() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_command(raw(command_body("session.stop")), message_type="session.speak")
    assert caught.value.reason is DecodeErrorReason.TYPE_MISMATCH
    assert caught.value.command_type == "session.stop"


def test_decode_event_rejects_commands_and_has_no_default_size_limit() -> None:
    with pytest.raises(DecodeError, match="unknown_type"):
        decode_event(raw(command_body("session.stop")))
    listed = event_body(
        "sessions.listed",
        sessions=[{"session_id": f"s{i}", "state": "ready", "created_at": T0} for i in range(2000)],
    )
    body = raw(listed)
    assert len(body) > DEFAULT_MAX_MESSAGE_BYTES
    assert len(decode_event(body).sessions) == 2000  # type: ignore[union-attr]
    with pytest.raises(DecodeError, match="oversized"):
        decode_event(body, max_bytes=1000)


def test_decode_error_is_a_value_error_with_reason_prefix() -> None:
    with pytest.raises(ValueError, match=r"^schema: text: "):
        decode_command(raw(command_body("session.speak", text="")))


def test_deadline_and_sent_at_keep_sub_second_precision() -> None:
    sent = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    speak = SessionSpeak(
        session_id="s1", text="Hi", sent_at=sent, deadline=sent + timedelta(seconds=1)
    )
    decoded = decode_command(encode_command(speak).body)
    assert decoded.sent_at == sent
    assert decoded.deadline == sent + timedelta(seconds=1)
