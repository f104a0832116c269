"""LiveAvatar LITE over the real RabbitMQ against the simulator's ws_url: create, audio in
parts, observed speech, pacing, interrupt, refusals, keep-alives, idle close, a dropped or
stalled socket. Every chunk is counted by the simulated avatar."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import pytest

from contracts.commands import (
    LiveKitConfig,
    SessionInterrupt,
    SessionKeepalive,
    SessionSpeak,
    SessionSpeakAudio,
)
from contracts.common import LiveAvatarMode, SpeechFinishSource
from contracts.events import (
    CommandCompleted,
    CommandRejected,
    SessionCreated,
    SessionReady,
    SessionReconnected,
    SpeechFinished,
    SpeechInterrupted,
    SpeechStarted,
)
from simulator.server import RunningSimulator
from tests.integration.conftest import Producer, la_create
from tests.integration.lite import audio_bytes, lite_stats, parts


async def open_lite(producer: Producer, session_id: str, **kw: Any) -> SessionCreated:
    command = la_create(session_id, mode=LiveAvatarMode.LITE, **kw)
    ready = await producer.call(command)
    assert isinstance(ready, SessionReady), ready
    return next(e for e in producer.tap.caused_by(command) if isinstance(e, SessionCreated))


async def speak(producer: Producer, commands: list[SessionSpeakAudio], within: float = 15) -> None:
    for command in commands:
        await producer.send(command)
    answers = await producer.tap.answers(commands, within)
    assert all(isinstance(a, CommandCompleted) for a in answers), answers


def speech_of(producer: Producer, kind: type[Any], utterance_id: str) -> list[Any]:
    return [e for e in producer.tap.events if isinstance(e, kind) and e.task_id == utterance_id]


async def test_create_waits_for_connected_and_keeps_alive_over_the_socket(
    producer: Producer, simulator: RunningSimulator
) -> None:
    # Whatever is sent before `connected` is lost: the worker must not send anything before.
    await simulator.admin.configure_liveavatar(lite_connect_delay_s=0.4)
    started = time.monotonic()
    created = await open_lite(producer, "lite-create")
    assert time.monotonic() - started >= 0.4
    assert "liveavatar-lite" not in created.model_dump_json()  # the ws_url is the worker's
    await producer.call(SessionKeepalive(session_id="lite-create"))
    await speak(producer, parts("lite-create", "u1", [0.3]))
    stats = await lite_stats(simulator, created.heygen_session_id)
    assert stats.dropped_early == 0
    assert stats.keep_alives == 1
    rest = await simulator.admin.liveavatar_stats()
    assert rest.calls.get("sessions.keep-alive", 0) == 0


async def test_the_avatar_joins_the_producers_own_livekit_room(producer: Producer) -> None:
    room = LiveKitConfig(
        livekit_url="wss://rooms.example.com", livekit_room="r1", livekit_client_token="tok"
    )
    created = await open_lite(producer, "lite-room", livekit_config=room)
    assert created.livekit_url == "wss://rooms.example.com"


@pytest.mark.parametrize(
    "worker_overrides",
    [{"liveavatar_lite_event_id_per": "utterance"}, {"liveavatar_lite_event_id_per": "chunk"}],
    ids=["event-id-per-utterance", "event-id-per-chunk"],
)
async def test_an_utterance_in_parts_is_chunked_spoken_and_observed(
    producer: Producer, simulator: RunningSimulator, worker_overrides: dict[str, Any]
) -> None:
    per = worker_overrides["liveavatar_lite_event_id_per"]
    # The avatar counts chunks that break its own rule as protocol errors.
    await simulator.admin.configure_liveavatar(lite_event_id_per=per)
    created = await open_lite(producer, f"lite-{per}")
    utterance = parts(f"lite-{per}", "hello-1", [0.7, 1.0, 0.3])
    started = time.monotonic()
    await speak(producer, utterance)
    finished = await producer.tap.wait_for(
        lambda e: isinstance(e, SpeechFinished) and e.task_id == "hello-1"
    )
    # The avatar played 2 s of audio: its observed end cannot come sooner.
    assert time.monotonic() - started >= 1.9
    assert isinstance(finished, SpeechFinished)
    assert finished.source is SpeechFinishSource.OBSERVED
    [began] = speech_of(producer, SpeechStarted, "hello-1")
    assert began.causation_id == utterance[0].command_id
    assert began.seq < finished.seq
    stats = await lite_stats(simulator, created.heygen_session_id)
    # 0.5 + 0.2 s, 1 s, 0.3 s: the first chunk of an utterance is half a second.
    assert stats.audio_chunks == 4
    assert stats.audio_bytes == audio_bytes(utterance)
    assert (stats.utterances, stats.speak_ends) == (1, 1)
    assert (stats.duplicate_chunks, stats.protocol_errors, stats.dropped_early) == (0, 0, 0)


@pytest.mark.parametrize("worker_overrides", [{"liveavatar_lite_lead_s": 0.5}])
async def test_chunks_are_paced_within_the_lead(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-pace")
    utterance = parts("lite-pace", "long", [1.0, 1.0, 1.0, 1.0])
    started = time.monotonic()
    await speak(producer, utterance)
    # Published at once, but 4 s of audio is sent no more than 0.5 s ahead of real time.
    assert time.monotonic() - started >= 2.4
    stats = await lite_stats(simulator, created.heygen_session_id)
    assert stats.max_ahead_s <= 0.5 + 1.0 + 0.2  # the lead, one chunk, the start delay
    assert stats.audio_bytes == audio_bytes(utterance)


@pytest.mark.parametrize("worker_overrides", [{"liveavatar_lite_lead_s": 0.5}])
async def test_interrupt_stops_queued_chunks_at_once(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-cut")
    utterance = parts("lite-cut", "cut-me", [1.0] * 6, final=False)
    for command in utterance:
        await producer.send(command)
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechStarted) and e.task_id == "cut-me")
    interrupted = await producer.call(SessionInterrupt(session_id="lite-cut"))
    assert isinstance(interrupted, SpeechInterrupted)
    answers = await producer.tap.answers(utterance)
    cut = [a for a in answers if isinstance(a, CommandRejected)]
    assert cut, answers
    assert all(a.code == "cancelled" for a in cut), answers
    # The rest of the interrupted utterance is refused, not spoken.
    tail = parts("lite-cut", "cut-me", [0.2])
    refused = await producer.call(tail[0])
    assert isinstance(refused, CommandRejected)
    assert "interrupted" in refused.message
    stats = await lite_stats(simulator, created.heygen_session_id)
    assert stats.interrupts == 1
    assert stats.audio_bytes < audio_bytes(utterance)
    sent_at_interrupt = stats.audio_chunks
    await asyncio.sleep(1.2)
    assert (await lite_stats(simulator, created.heygen_session_id)).audio_chunks == (
        sent_at_interrupt
    )
    assert speech_of(producer, SpeechFinished, "cut-me") == []
    # The session speaks again afterwards.
    await speak(producer, parts("lite-cut", "after", [0.3]))
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechFinished) and e.task_id == "after")


async def test_text_on_lite_and_audio_on_full_are_refused_with_a_reason(
    producer: Producer,
) -> None:
    await open_lite(producer, "lite-text")
    refused = await producer.call(SessionSpeak(session_id="lite-text", text="hello"))
    assert isinstance(refused, CommandRejected)
    assert "LITE" in refused.message
    assert "session.speak_audio" in refused.message
    full = la_create("full-audio")
    await producer.call(full)
    refused = await producer.call(parts("full-audio", "u", [0.2])[0])
    assert isinstance(refused, CommandRejected)
    assert "not a liveavatar LITE session" in refused.message


@pytest.mark.parametrize(
    ("audio", "reason"),
    [
        ("@@not-base64@@", "not valid base64"),
        (base64.b64encode(b"\x01\x02\x03").decode(), "odd number of bytes"),
        (base64.b64encode(bytes(48_002)).decode(), "at most 48000"),
    ],
)
async def test_bad_audio_is_refused_at_validation(
    producer: Producer, audio: str, reason: str
) -> None:
    await open_lite(producer, "lite-bad")
    body = {
        "type": "session.speak_audio",
        "command_id": "bad-audio",
        "session_id": "lite-bad",
        "utterance_id": "u",
        "audio": audio,
    }
    await producer.publish_raw(
        __import__("json").dumps(body).encode(),
        "lite-bad",
        content_type="application/json",
        type="session.speak_audio",
    )
    rejected = await producer.tap.wait_for(
        lambda e: isinstance(e, CommandRejected) and e.causation_id == "bad-audio"
    )
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "validation"
    assert reason in rejected.message
    assert audio not in rejected.message


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 0.3}])
async def test_keep_alives_hold_an_idle_session_open(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await simulator.admin.configure_liveavatar(idle_timeout_s=1.0)
    created = await open_lite(producer, "lite-kept")
    await asyncio.sleep(2.5)
    stats = await simulator.admin.liveavatar_stats()
    assert stats.sessions[created.heygen_session_id].status == "active"
    assert (await lite_stats(simulator, created.heygen_session_id)).keep_alives >= 3


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 3600}])
async def test_an_idle_close_is_reconnected_while_wanted(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await simulator.admin.configure_liveavatar(idle_timeout_s=1.0)
    created = await open_lite(producer, "lite-idle")
    reconnected = await producer.tap.wait_for(
        lambda e: isinstance(e, SessionReconnected) and e.session_id == "lite-idle", timeout=15
    )
    assert isinstance(reconnected, SessionReconnected)
    stats = await simulator.admin.liveavatar_stats()
    assert stats.sessions[created.heygen_session_id].end_reason == "IDLE_TIMEOUT"


async def test_a_dropped_socket_is_reopened_mid_utterance_with_nothing_lost_or_repeated(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-drop")
    pid = created.heygen_session_id
    utterance = parts("lite-drop", "through", [0.6, 0.6, 0.6, 0.6])
    await speak(producer, utterance[:2])
    assert await simulator.admin.drop_room(pid) == 1
    await speak(producer, utterance[2:])
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechFinished) and e.task_id == "through")
    stats = await lite_stats(simulator, pid)
    assert stats.audio_bytes == audio_bytes(utterance)
    assert (stats.duplicate_chunks, stats.protocol_errors, stats.speak_ends) == (0, 0, 1)
    assert [e for e in producer.tap.events if isinstance(e, SessionReconnected)] == []


@pytest.mark.parametrize("worker_overrides", [{"liveavatar_lite_lead_s": 0.5}])
async def test_a_socket_dropped_while_a_part_is_being_paced_out_loses_and_repeats_nothing(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-drop-paced")
    pid = created.heygen_session_id
    utterance = parts("lite-drop-paced", "paced", [1.0, 1.0, 1.0, 1.0])
    for command in utterance:
        await producer.send(command)
    await asyncio.sleep(1.2)  # the worker is pacing the second or third second out
    assert await simulator.admin.drop_room(pid) == 1
    answers = await producer.tap.answers(utterance, 15)
    assert all(isinstance(a, CommandCompleted) for a in answers), answers
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechFinished) and e.task_id == "paced")
    stats = await lite_stats(simulator, pid)
    assert stats.audio_bytes == audio_bytes(utterance)
    assert (stats.duplicate_chunks, stats.protocol_errors, stats.speak_ends) == (0, 0, 1)


async def test_a_socket_that_cannot_be_reopened_is_replaced_by_a_reconnection(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-gone")
    await simulator.admin.add_liveavatar_fault("lite", status=503, count=1)
    assert await simulator.admin.drop_room(created.heygen_session_id) == 1
    reconnected = await producer.tap.wait_for(
        lambda e: isinstance(e, SessionReconnected) and e.session_id == "lite-gone", timeout=15
    )
    assert isinstance(reconnected, SessionReconnected)
    assert reconnected.heygen_session_id != created.heygen_session_id
    await speak(producer, parts("lite-gone", "again", [0.3]))
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechFinished) and e.task_id == "again")


async def test_a_stalled_avatar_delays_but_loses_nothing(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await open_lite(producer, "lite-stall")
    await simulator.admin.stall_lite(created.heygen_session_id, 1.0)
    began = time.monotonic()
    utterance = parts("lite-stall", "slow", [0.5, 0.5])
    await speak(producer, utterance)  # sent: the socket holds what the avatar does not read
    await producer.tap.wait_for(lambda e: isinstance(e, SpeechFinished) and e.task_id == "slow")
    assert time.monotonic() - began >= 1.9  # the stall, then 1 s of audio
    stats = await lite_stats(simulator, created.heygen_session_id)
    assert stats.audio_bytes == audio_bytes(utterance)
    assert stats.duplicate_chunks == 0
