"""Per-session order and concurrency, and control commands that do not wait behind speech."""

from __future__ import annotations

import itertools
import time

from contracts.commands import SessionInterrupt, SessionSpeak, SessionStop
from contracts.common import TaskMode
from contracts.events import CommandRejected, SessionStopped, SpeechFinished, SpeechStarted
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    HttpLog,
    Producer,
    answer_to,
    assert_seq_contiguous,
    wait_until,
)

SESSIONS = 10
PER_SESSION = 10
TASK_LATENCY_MS = 50
# At 150 words per minute each word is 0.4 s of speech.
LONG_TEXT = " ".join(["word"] * 100)  # 40 s


async def test_interleaved_commands_keep_per_session_order(
    producer: Producer, simulator: RunningSimulator, http_log: HttpLog
) -> None:
    sessions = [f"order-{i}" for i in range(SESSIONS)]
    heygen_ids = {sid: (await producer.open_session(sid)).heygen_session_id for sid in sessions}
    await simulator.admin.configure(latency={"streaming.task": {"fixed_ms": TASK_LATENCY_MS}})
    commands = [
        SessionSpeak(session_id=sid, text=f"{sid} says number {n}", correlation_id=f"{sid}/{n}")
        for n in range(PER_SESSION)
        for sid in sessions
    ]
    began = time.monotonic()
    for command in commands:
        await producer.send(command)
    answers = await producer.tap.answers(commands)
    elapsed = time.monotonic() - began
    assert all(isinstance(a, SpeechStarted) for a in answers), answers

    for sid in sessions:
        sent = [x for x in http_log.of("streaming.task") if x.session_id == heygen_ids[sid]]
        # HeyGen got the texts in publish order, each only after the previous was answered.
        assert [x.body["text"] for x in sent] == [f"{sid} says number {n}" for n in range(10)]
        assert all(a.ended <= b.started for a, b in itertools.pairwise(sent))
        started = [e for e in producer.tap.of(sid) if isinstance(e, SpeechStarted)]
        assert [e.correlation_id for e in started] == [f"{sid}/{n}" for n in range(10)]
    stats = await simulator.admin.stats()
    for heygen_id in heygen_ids.values():
        assert stats.sessions[heygen_id].tasks == PER_SESSION
    assert_seq_contiguous(producer.tap.events)

    # Sessions ran side by side: far below one task after another.
    serial_s = len(commands) * TASK_LATENCY_MS / 1000
    assert elapsed < serial_s * 0.4, f"{elapsed:.2f}s for {len(commands)} commands"
    requests = http_log.of("streaming.task")
    overlapping = sum(1 for a in requests for b in requests if a.started < b.started < a.ended)
    assert overlapping > len(requests)


async def test_interrupt_cuts_a_long_sync_speak(
    producer: Producer, simulator: RunningSimulator
) -> None:
    created = await producer.open_session("long")
    speak = SessionSpeak(session_id="long", text=LONG_TEXT, task_mode=TaskMode.SYNC)
    await producer.send(speak)
    await _speaking(simulator, created.heygen_session_id)
    interrupt = SessionInterrupt(session_id="long")
    began = time.monotonic()
    interrupted = await producer.call(interrupt, timeout=5)
    assert interrupted.type == "speech.interrupted"
    assert time.monotonic() - began < 2, "the interrupt waited behind the speak"
    finished = await producer.tap.wait_for(answer_to(speak, {"speech.finished"}), 5)
    assert isinstance(finished, SpeechFinished)
    assert finished.interrupted, finished
    assert finished.duration_ms == 40_000
    speech = (finished.occurred_at - speak.sent_at).total_seconds()
    assert speech < 5
    assert_seq_contiguous(producer.tap.events)


async def test_stop_preempts_queued_speaks(producer: Producer, simulator: RunningSimulator) -> None:
    created = await producer.open_session("busy")
    running = SessionSpeak(session_id="busy", text=LONG_TEXT, task_mode=TaskMode.SYNC)
    queued = [SessionSpeak(session_id="busy", text=f"queued {n}") for n in range(3)]
    await producer.send(running)
    await _speaking(simulator, created.heygen_session_id)
    for command in queued:
        await producer.send(command)
    stop = SessionStop(session_id="busy", reason="enough")
    began = time.monotonic()
    stopped = await producer.call(stop, timeout=5)
    assert isinstance(stopped, SessionStopped)
    assert time.monotonic() - began < 2, "the stop waited behind the speak"
    for command in queued:
        (rejected,) = producer.tap.caused_by(command)
        assert isinstance(rejected, CommandRejected)
        assert rejected.code == "cancelled"
    # The running speak ends with the session, reported once.
    outcome = await producer.tap.wait_for(
        lambda e: e.causation_id == running.command_id and e.type != "speech.started", 5
    )
    assert outcome.type in {"speech.finished", "command.failed"}
    stats = await simulator.admin.stats()
    assert stats.count("streaming.task") == 1
    assert stats.sessions[created.heygen_session_id].closed_reason == "stopped"
    assert_seq_contiguous(producer.tap.events)


async def test_stop_during_sync_speak_is_the_sessions_last_word(
    producer: Producer, simulator: RunningSimulator
) -> None:
    """The speech HeyGen accepted is reported (cut short) and billed before session.stopped."""
    created = await producer.open_session("last")
    running = SessionSpeak(session_id="last", text=LONG_TEXT, task_mode=TaskMode.SYNC)
    await producer.send(running)
    await _speaking(simulator, created.heygen_session_id)
    stopped = await producer.call(SessionStop(session_id="last"), timeout=5)
    assert isinstance(stopped, SessionStopped)
    # Whatever the worker says about the running speak, it says before the session ends.
    await producer.tap.wait_for(
        lambda e: e.causation_id == running.command_id and e.type != "speech.started", 5
    )
    kinds = [e.type for e in producer.tap.of("last")]
    assert kinds[-1] == "session.stopped", kinds
    finished = [e for e in producer.tap.of("last") if isinstance(e, SpeechFinished)]
    assert [f.interrupted for f in finished] == [True]
    stats = await simulator.admin.stats()
    assert stopped.usage.tasks == stats.sessions[created.heygen_session_id].tasks == 1
    assert stopped.usage.characters == len(LONG_TEXT)


async def _speaking(simulator: RunningSimulator, heygen_id: str) -> None:
    """Until HeyGen is speaking for the session (the sync speak is running)."""

    async def speaking() -> bool:
        session = (await simulator.admin.stats(include_requests=False)).sessions[heygen_id]
        return session.speaking

    await wait_until(speaking, 5)
