"""SIGTERM with work in flight: the worker process drains within its grace, requeues the rest,
exits 0, and a successor answers every command exactly once (no loss, no double execution)."""

from __future__ import annotations

import time
from pathlib import Path

from aio_pika.abc import AbstractRobustConnection

from contracts.commands import SessionSpeak
from contracts.common import TaskMode
from contracts.events import CommandFailed, CommandRejected, Event, SessionCreated
from contracts.topology import DEAD_LETTER_QUEUE
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    PARTITIONS,
    Producer,
    answer_to,
    assert_seq_contiguous,
    leftover_commands,
    queue_depth,
    tapped_producer,
    worker_process,
)

SESSIONS = ("t0", "t1", "t2")
FINAL = {"speech.finished", "command.rejected", "command.failed"}


def burst(per_session: int) -> list[SessionSpeak]:
    """Sync speaks of one word each (0.4 s of speech); the k-th text of a session is 3**k
    characters long, so HeyGen's character count tells which texts it was given, how often."""
    return [
        SessionSpeak(session_id=sid, text="abcdefgh"[k] * 3**k, task_mode=TaskMode.SYNC)
        for k in range(per_session)
        for sid in SESSIONS
    ]


def finals(producer: Producer, command: SessionSpeak) -> list[Event]:
    return [e for e in producer.tap.caused_by(command) if answer_to(command, FINAL)(e)]


async def open_sessions(producer: Producer) -> dict[str, str]:
    return {sid: (await producer.open_session(sid)).heygen_session_id for sid in SESSIONS}


async def applied_texts(simulator: RunningSimulator, heygen_id: str, per_session: int) -> list[int]:
    """How many times HeyGen was given each text of a session (base-3 digits of the count)."""
    characters = (await simulator.admin.stats()).sessions[heygen_id].characters
    return [characters // 3**k % 3 for k in range(per_session)]


async def test_sigterm_drains_in_flight_commands_within_the_grace(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    speaks = burst(3)
    log = tmp_path / "worker.log"
    async with worker_process(
        amqp_url, simulator, log, WORKER_ID="drainer", WORKER_SHUTDOWN_GRACE_S="10"
    ) as process:
        await process.wait_ready()
        producer = await tapped_producer(connection)
        heygen_ids = await open_sessions(producer)
        for speak in speaks:
            await producer.send(speak)
        await producer.tap.wait_for(lambda e: e.type == "speech.started")
        process.sigterm()
        signalled = time.monotonic()
        assert await process.wait() == 0, process.log()
        drain_s = time.monotonic() - signalled
    await producer.settle()
    # Every command finished before the exit, none was requeued, and the grace was not needed.
    for speak in speaks:
        (final,) = finals(producer, speak)
        assert (final.type, final.worker_id) == ("speech.finished", "drainer"), final
    assert drain_s < 5, f"drain took {drain_s:.1f}s"
    assert await leftover_commands(connection, PARTITIONS) == []
    for heygen_id in heygen_ids.values():
        assert await applied_texts(simulator, heygen_id, 3) == [1, 1, 1]
    assert_seq_contiguous(producer.tap.events)
    # A whole run's log holds neither the API key nor a viewer's access token.
    text = log.read_text()
    tokens = [e.access_token for e in producer.tap.events if isinstance(e, SessionCreated)]
    for secret in (simulator.api_key, *tokens):
        assert secret
        assert secret not in text


async def test_sigterm_past_the_grace_loses_nothing(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    speaks = burst(4)
    async with worker_process(
        amqp_url,
        simulator,
        tmp_path / "first.log",
        WORKER_ID="first",
        WORKER_SHUTDOWN_GRACE_S="0.3",
    ) as first:
        await first.wait_ready()
        producer = await tapped_producer(connection)
        heygen_ids = await open_sessions(producer)
        for speak in speaks:
            await producer.send(speak)
        await producer.tap.wait_for(lambda e: e.type == "speech.started")
        first.sigterm()
        assert await first.wait() == 0, first.log()
    await producer.settle()
    unanswered = [s for s in speaks if not finals(producer, s)]
    assert unanswered, "the grace was meant to be too short for the burst"

    async with worker_process(
        amqp_url, simulator, tmp_path / "second.log", WORKER_ID="second"
    ) as second:
        await second.wait_ready()
        for speak in speaks:
            await producer.tap.wait_for(answer_to(speak, FINAL))
        second.sigterm()
        assert await second.wait() == 0, second.log()
    await producer.settle()

    # Exactly one answer per command: from the first worker, or from its successor for what
    # the first one requeued (executed there when it took the session over, else rejected).
    cut: list[str] = []
    for speak in speaks:
        events = producer.tap.caused_by(speak)
        (final,) = finals(producer, speak)
        started = [e.worker_id for e in events if e.type == "speech.started"]
        assert final.worker_id == ("second" if speak in unanswered else "first"), events
        if final.type == "speech.finished":
            assert started == [final.worker_id], events
        elif isinstance(final, CommandFailed):
            # The grace cut its HeyGen call: reported, not repeated (HeyGen may have acted).
            assert (final.retryable, started) == (False, []), events
            cut.append(speak.session_id)
        else:
            assert isinstance(final, CommandRejected), events
            assert (final.code, final.worker_id, started) == ("unknown_session", "second", [])
    assert len(cut) == len(set(cut)), cut
    # HeyGen got each text at most once: the finished ones, plus at most the one per session
    # whose HTTP call the grace cut short.
    for sid, heygen_id in heygen_ids.items():
        applied = await applied_texts(simulator, heygen_id, 4)
        assert max(applied) == 1, (sid, applied)
        mine = [s for s in speaks if s.session_id == sid]
        done = [finals(producer, s)[0].type == "speech.finished" for s in mine]
        assert all(a for a, d in zip(applied, done, strict=True) if d), (sid, applied, done)
        assert sum(applied) - sum(done) <= 1, (sid, applied, done)
    assert await leftover_commands(connection, PARTITIONS) == []
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 0
    assert_seq_contiguous(producer.tap.events)
