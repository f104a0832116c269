"""Partition handover between replicas: sessions, keep-alives, seq and idempotency move with
the partition (issue 8), here with two in-process workers on one vhost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.commands import SessionCreate, SessionSpeak
from contracts.events import SessionCreated
from simulator.server import RunningSimulator, running_simulator
from tests.integration.conftest import Producer, worker_settings
from worker.app import Worker
from worker.heygen.models import NewSessionRequest

SESSIONS = [f"h{i}" for i in range(6)]
FAST = {"ownership_poll_s": 0.2, "keepalive_interval_s": 0.5}


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    # HeyGen closes a session left alone for 3 s: only keep-alives of the new owner save them.
    async with running_simulator(port=0, idle_timeout_override_s=3) as sim:
        yield sim


@pytest.fixture
def worker_overrides() -> dict[str, Any]:
    return {**FAST, "worker_id": "replica-a"}


async def test_sessions_survive_the_owner_going_away(
    amqp_url: str, simulator: RunningSimulator, worker: Worker, producer: Producer
) -> None:
    standby = Worker(worker_settings(amqp_url, simulator, **FAST, worker_id="replica-b"))
    await standby.start()
    try:
        for session_id in SESSIONS:
            await producer.call(SessionCreate(session_id=session_id, avatar_id="a"))
            await producer.call(SessionSpeak(session_id=session_id, text="before"))
        assert standby.services is not None
        assert len(standby.services.registry) == 0  # a waiting consumer owns nothing

        await worker.shutdown()  # drains and hands every partition over
        for _ in range(50):
            if len(standby.services.registry) == len(SESSIONS):
                break
            await asyncio.sleep(0.1)
        assert {s.session_id for s in standby.services.registry} == set(SESSIONS)

        await asyncio.sleep(4)  # longer than HeyGen's idle timeout
        stats = await simulator.admin.stats()
        for event in producer.tap.events:
            if isinstance(event, SessionCreated):
                assert stats.sessions[event.heygen_session_id].status != "closed"

        for session_id in SESSIONS:
            after = await producer.call(SessionSpeak(session_id=session_id, text="after"))
            assert after.type == "speech.started"
            assert after.worker_id == "replica-b"
            every = sorted((e.seq or 0) for e in producer.tap.of(session_id))
            assert every == list(range(1, len(every) + 1)), session_id
    finally:
        await standby.shutdown()


async def test_redelivered_command_is_not_run_again_by_the_new_owner(
    amqp_url: str, simulator: RunningSimulator, worker: Worker, producer: Producer
) -> None:
    await producer.call(SessionCreate(session_id="once", avatar_id="a"))
    speak = SessionSpeak(session_id="once", text="only once")
    await producer.call(speak)
    await worker.shutdown()
    standby = Worker(worker_settings(amqp_url, simulator, **FAST, worker_id="replica-b"))
    await standby.start()
    try:
        await producer.send(speak)  # as if the ack had been lost
        probe = await producer.call(SessionSpeak(session_id="once", text="next"))
        assert probe.type == "speech.started"
        stats = await simulator.admin.stats()
        assert stats.count("streaming.task") == 2  # "only once" and "next"
    finally:
        await standby.shutdown()


async def test_orphan_hunt_stops_only_the_sessions_nobody_names(
    amqp_url: str, simulator: RunningSimulator, worker: Worker, producer: Producer
) -> None:
    since = datetime.now(UTC)
    named = [await producer.open_session(f"named-{i}") for i in range(3)]
    assert worker.services is not None
    # What a create cut short by a crash leaves: a HeyGen session no event or snapshot names.
    orphan = await worker.services.heygen.new_session(NewSessionRequest(avatar_id="a"))
    standby = Worker(worker_settings(amqp_url, simulator, **FAST, worker_id="replica-b"))
    await standby.start()
    try:
        # It knows none of these sessions: only the state stream tells which are claimed.
        stopped = await standby.orphans.hunt(since, datetime.now(UTC))
    finally:
        await standby.shutdown()
    assert stopped == [orphan.session_id]
    stats = await simulator.admin.stats()
    assert stats.sessions[orphan.session_id].status == "closed"
    for created in named:
        assert stats.sessions[created.heygen_session_id].status != "closed"
