"""Every command and event with provider liveavatar: real RabbitMQ, the simulator's LiveAvatar
(REST and the room stand-in), an in-process worker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.commands import (
    SessionInterrupt,
    SessionKeepalive,
    SessionsList,
    SessionSpeak,
    SessionStop,
)
from contracts.common import Provider, SpeechFinishSource, StopReason, TaskMode, TaskType
from contracts.events import (
    AvatarTranscription,
    CommandCompleted,
    CommandFailed,
    CommandRejected,
    Event,
    SessionCreated,
    SessionReconnected,
    SessionsListed,
    SessionStopped,
    SpeechFinished,
    SpeechInterrupted,
    SpeechStarted,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    LIVEAVATAR_AVATAR,
    Producer,
    answer_to,
    assert_seq_contiguous,
    create,
    la_create,
    reply_event,
    wait_until,
)

# 40 ms per word: speech long enough to interrupt, short enough for the suite.
WORDS_PER_MINUTE = 1500


@pytest.fixture(autouse=True)
async def fast_speech(simulator: RunningSimulator) -> None:
    await simulator.admin.configure_liveavatar(words_per_minute=WORDS_PER_MINUTE)


async def open_la(producer: Producer, session_id: str, **kw: Any) -> SessionCreated:
    command = la_create(session_id, **kw)
    ready = await producer.call(command)
    assert ready.type == "session.ready", ready
    return next(e for e in producer.tap.caused_by(command) if isinstance(e, SessionCreated))


def of_type(events: list[Event], cls: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, cls)]


async def test_create_speak_observed_and_stop_with_provider_credits(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_la(producer, "la1", max_duration_s=900, context_id="ctx-1")
    # What the browser needs, and nothing of the worker's own (agent token, WebSocket URL).
    assert created.provider is Provider.LIVEAVATAR
    assert created.livekit_url
    assert created.livekit_client_token
    assert created.max_session_duration == 900
    assert created.url is None
    assert created.access_token is None
    body = created.model_dump_json()
    assert "agent" not in body
    assert "ws_url" not in body
    stats = await simulator.admin.liveavatar_stats()
    row = stats.sessions[created.heygen_session_id]
    assert row.status == "active"

    speak = SessionSpeak(session_id="la1", text="Hello from the avatar, observed.")
    started = await producer.call(speak)
    assert isinstance(started, SpeechStarted)
    finished = await producer.tap.wait_for(answer_to(speak, {"speech.finished"}))
    assert isinstance(finished, SpeechFinished)
    assert finished.source is SpeechFinishSource.OBSERVED
    assert finished.task_id == started.task_id
    said = await producer.tap.wait_for(lambda e: isinstance(e, AvatarTranscription))
    assert isinstance(said, AvatarTranscription)
    assert said.text == speak.text

    stopped = await producer.call(SessionStop(session_id="la1", reason="done"))
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason is StopReason.REQUESTED
    assert stopped.usage.tasks == 1
    assert stopped.usage.credits_source == "provider"
    assert stopped.usage.credits is not None
    assert stopped.usage.credits > 0
    stats = await simulator.admin.liveavatar_stats()
    assert stats.sessions[created.heygen_session_id].status != "active"
    await producer.settle()
    events = producer.tap.of("la1")
    assert_seq_contiguous(events)
    # Observed, never estimated; and speech.started before its speech.finished.
    kinds = [e.type for e in events]
    assert kinds.index("speech.started") < kinds.index("speech.finished")


async def test_sync_speak_is_answered_once_the_avatar_finished(producer: Producer) -> None:
    await open_la(producer, "la-sync")
    speak = SessionSpeak(
        session_id="la-sync", text="Say this and tell me when done.", task_mode=TaskMode.SYNC
    )
    await producer.call(speak)
    finished = await producer.tap.wait_for(answer_to(speak, {"speech.finished"}))
    assert isinstance(finished, SpeechFinished)
    assert finished.source is SpeechFinishSource.OBSERVED


async def test_talk_is_sent_as_a_speak_response(producer: Producer) -> None:
    await open_la(producer, "la-talk")
    speak = SessionSpeak(session_id="la-talk", text="What is the weather?", task_type=TaskType.TALK)
    started = await producer.call(speak)
    assert isinstance(started, SpeechStarted)
    assert started.task_type is TaskType.TALK


async def test_user_utterance_becomes_bus_events_in_order(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_la(producer, "la-user")
    await simulator.admin.inject_utterance(created.heygen_session_id, "Where is my order?")
    said = await producer.tap.wait_for(lambda e: isinstance(e, UserTranscription))
    assert isinstance(said, UserTranscription)
    assert said.text == "Where is my order?"
    events = producer.tap.of("la-user")
    user = [e for e in events if e.type.startswith("user.")]
    assert [type(e) for e in user] == [UserSpeechStarted, UserSpeechEnded, UserTranscription]
    assert all(e.causation_id is None for e in user)


async def test_interrupt_cuts_speech_and_no_finish_follows(producer: Producer) -> None:
    await open_la(producer, "la-int")
    long_text = " ".join(["word"] * 200)  # about 8 s at the test's pace
    speak = SessionSpeak(session_id="la-int", text=long_text)
    await producer.call(speak)
    interrupted = await producer.call(SessionInterrupt(session_id="la-int"))
    assert isinstance(interrupted, SpeechInterrupted)
    # A short speak after the interrupt runs and finishes, observed.
    again = SessionSpeak(session_id="la-int", text="Short one.")
    await producer.call(again)
    await producer.tap.wait_for(answer_to(again, {"speech.finished"}))
    await producer.settle()
    assert of_type(producer.tap.caused_by(speak), SpeechFinished) == []


async def test_keepalive_and_list_both_providers(
    producer: Producer, simulator: RunningSimulator
) -> None:
    la = await open_la(producer, "la-list")
    await producer.open_session("hg-list")
    done = await producer.call(SessionKeepalive(session_id="la-list"))
    assert isinstance(done, CommandCompleted)
    async with producer.inbox() as inbox:
        await producer.send(SessionsList(reply_to=inbox.name))
        listed = reply_event(await inbox.next())
    assert isinstance(listed, SessionsListed)
    by_id = {s.session_id: s for s in listed.sessions}
    assert by_id["la-list"].provider is Provider.LIVEAVATAR
    assert by_id["la-list"].heygen_session_id == la.heygen_session_id
    assert by_id["la-list"].heygen_status not in (None, "absent")
    assert by_id["hg-list"].provider is Provider.HEYGEN
    assert by_id["hg-list"].heygen_status not in (None, "absent")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"voice": {"voice_id": "v", "emotion": "Excited"}}, "voice.emotion"),
        ({"version": "v1"}, "version: v1"),
        ({"stt_settings": {"provider": "deepgram"}}, "stt_settings"),
        (
            {"mode": "LITE", "language": "en"},
            "language is not supported with provider liveavatar in mode LITE",
        ),
    ],
)
async def test_fields_liveavatar_cannot_honour_are_refused(
    producer: Producer, fields: dict[str, Any], named: str
) -> None:
    body = {
        "type": "session.create",
        "command_id": f"bad-{named}".replace(" ", "").replace(":", "-"),
        "session_id": "la-bad",
        "avatar_id": LIVEAVATAR_AVATAR,
        "provider": "liveavatar",
        **fields,
    }
    command_id = str(body["command_id"])
    await producer.publish_raw(
        json.dumps(body).encode(),
        "la-bad",
        message_id=command_id,
        type="session.create",
        content_type="application/json",
    )
    rejected = await producer.tap.wait_for(lambda e: e.causation_id == command_id)
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "validation"
    assert named in rejected.message
    assert "liveavatar" in rejected.message


async def test_liveavatar_fields_are_refused_with_heygen(producer: Producer) -> None:
    rejected = await producer.call(create("hg-bad", is_sandbox=True))
    assert isinstance(rejected, CommandRejected)
    assert "is_sandbox" in rejected.message
    assert "heygen" in rejected.message


@pytest.mark.parametrize("worker_overrides", [{"default_provider": "liveavatar"}])
async def test_the_default_provider_comes_from_the_settings(producer: Producer) -> None:
    created = await producer.open_session("la-default", avatar_id=LIVEAVATAR_AVATAR)
    assert created.provider is Provider.LIVEAVATAR
    assert created.livekit_url


async def test_a_room_drop_reconnects_with_the_same_session_id(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_la(producer, "la-drop")
    assert await simulator.admin.drop_room(created.heygen_session_id) >= 1
    reconnected = await producer.tap.wait_for(lambda e: isinstance(e, SessionReconnected), 20)
    assert isinstance(reconnected, SessionReconnected)
    assert reconnected.session_id == "la-drop"
    assert reconnected.previous_heygen_session_id == created.heygen_session_id
    assert reconnected.heygen_session_id != created.heygen_session_id
    assert reconnected.livekit_url
    assert reconnected.livekit_client_token
    # The replacement speaks; the old session no longer bills.
    speak = SessionSpeak(session_id="la-drop", text="Still here.")
    await producer.call(speak)
    await producer.tap.wait_for(answer_to(speak, {"speech.finished"}))
    stats = await simulator.admin.liveavatar_stats()
    assert stats.sessions[created.heygen_session_id].status != "active"


@pytest.mark.parametrize(
    ("end_reason", "reason"),
    [
        ("NO_CREDITS", StopReason.EXPIRED_REMOTELY),
        ("MAX_DURATION_REACHED", StopReason.MAX_DURATION),
    ],
)
async def test_a_final_remote_end_stops_the_session_with_its_reason(
    producer: Producer, simulator: RunningSimulator, end_reason: str, reason: StopReason
) -> None:
    created = await open_la(producer, "la-end")
    await simulator.admin.end_session(created.heygen_session_id, end_reason)
    stopped = await producer.tap.wait_for(lambda e: isinstance(e, SessionStopped), 20)
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason is reason
    assert stopped.provider_end_reason == end_reason
    await producer.settle()
    assert of_type(producer.tap.of("la-end"), SessionReconnected) == []


async def test_an_idle_close_of_a_wanted_session_is_reconnected(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_la(producer, "la-idle")
    await simulator.admin.end_session(created.heygen_session_id, "IDLE_TIMEOUT")
    reconnected = await producer.tap.wait_for(lambda e: isinstance(e, SessionReconnected), 20)
    assert isinstance(reconnected, SessionReconnected)
    assert reconnected.previous_heygen_session_id == created.heygen_session_id


@pytest.mark.parametrize("worker_overrides", [{"speech_start_timeout_s": 0.5}])
async def test_a_speak_never_started_is_failed_not_repeated(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await open_la(producer, "la-mute")
    await simulator.admin.configure_liveavatar(speak_start_delay_s=30)
    speak = SessionSpeak(session_id="la-mute", text="Hi.")
    failed = await producer.call(speak, timeout=15)
    assert isinstance(failed, CommandFailed)
    assert failed.code == "speech_not_started"
    assert not failed.retryable


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 0.3}])
async def test_the_pool_keeps_liveavatar_sessions_alive_over_rest(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_la(producer, "la-ka")

    async def kept_alive() -> bool:
        rows = (await simulator.admin.liveavatar_stats()).sessions
        return rows[created.heygen_session_id].keep_alives >= 2

    await wait_until(kept_alive, 10)


@pytest.mark.parametrize(
    ("worker_overrides", "fields", "reason"),
    [
        ({"idle_timeout_s": 1}, {}, StopReason.IDLE),
        ({}, {"max_duration_s": 1}, StopReason.MAX_DURATION),
    ],
)
async def test_idle_and_duration_policies_stop_liveavatar_sessions(
    producer: Producer, simulator: RunningSimulator, fields: dict[str, Any], reason: StopReason
) -> None:
    created = await open_la(producer, "la-policy", **fields)
    stopped = await producer.tap.wait_for(lambda e: isinstance(e, SessionStopped), 10)
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason is reason
    # The worker's own decision; max_duration_s is LiveAvatar's max_session_duration too, so
    # LiveAvatar may end it first, for the same reason.
    assert stopped.provider_end_reason in (None, "MAX_DURATION_REACHED")
    if reason is StopReason.IDLE:
        assert stopped.provider_end_reason is None
    rows = (await simulator.admin.liveavatar_stats()).sessions
    assert rows[created.heygen_session_id].status != "active"
