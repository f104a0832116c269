"""Partition handover between replicas: sessions, keep-alives, seq and idempotency move with
the partition (issue 8), here with two in-process workers on one vhost."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from contracts.codec import encode_command
from contracts.commands import SessionCreate, SessionSpeak
from contracts.events import SessionCreated
from contracts.topology import partition_queue
from simulator.server import RunningSimulator, running_simulator
from tests.integration.conftest import LIVEAVATAR_AVATAR, Producer, wait_until, worker_settings
from worker.app import Worker
from worker.bus.delivery import FORWARDED_HEADER, FORWARDED_USER_HEADER
from worker.providers.base import SessionProfile
from worker.sessions.session import Session

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


@pytest.mark.parametrize(
    ("provider", "avatar"), [("heygen", "a"), ("liveavatar", LIVEAVATAR_AVATAR)]
)
async def test_orphan_hunt_stops_only_the_sessions_nobody_names(
    amqp_url: str,
    simulator: RunningSimulator,
    worker: Worker,
    producer: Producer,
    provider: str,
    avatar: str,
) -> None:
    since = datetime.now(UTC)
    named = [
        await producer.open_session(f"named-{i}", provider=provider, avatar_id=avatar)
        for i in range(3)
    ]
    assert worker.services is not None
    # What a create cut short by a crash leaves: a session no event or snapshot names.
    orphan = await worker.services.providers[provider].create(SessionProfile(avatar_id=avatar))
    standby = Worker(worker_settings(amqp_url, simulator, **FAST, worker_id="replica-b"))
    await standby.start()
    try:
        # It knows none of these sessions: only the state stream tells which are claimed.
        stopped = await standby.orphans.hunt(since, datetime.now(UTC))
    finally:
        await standby.shutdown()
    assert stopped == [orphan.provider_session_id]
    status = await statuses(simulator, provider)
    assert status[orphan.provider_session_id] in {"closed", "ended"}
    for created in named:
        assert status[created.heygen_session_id] not in {"closed", "ended"}


async def statuses(simulator: RunningSimulator, provider: str) -> dict[str, str]:
    """Each simulated session's status, on the provider's side."""
    if provider == "liveavatar":
        live = await simulator.admin.liveavatar_stats()
        return {sid: row.status for sid, row in live.sessions.items()}
    legacy = await simulator.admin.stats()
    return {sid: row.status for sid, row in legacy.sessions.items()}


async def created(worker: Worker, producer: Producer, session_id: str) -> Session:
    """A session created through the worker, as the worker holds it."""
    await producer.call(SessionCreate(session_id=session_id, avatar_id="a"))
    assert worker.services is not None
    session = worker.services.registry.get(session_id)
    assert session is not None
    return session


async def publish_into(
    producer: Producer, command: SessionSpeak, queue: str, headers: dict[str, Any] | None = None
) -> None:
    """Straight into one partition queue, past the consistent-hash exchange."""
    envelope = encode_command(command)
    properties = {**envelope.properties, "headers": headers or {}}
    await producer.channel.default_exchange.publish(
        aio_pika.Message(envelope.body, **properties), routing_key=queue
    )


async def test_commands_arriving_on_another_partition_are_sent_to_the_sessions_home(
    worker: Worker, producer: Producer
) -> None:
    # RabbitMQ rebuilds the consistent-hash ring when it restarts, in the order it recovers
    # the bindings; the soak saw two partitions swap. Commands published into the "wrong"
    # partition queue stand in for that: they still reach the session, in order.
    session = await created(worker, producer, "moved")
    elsewhere = partition_queue(1 - session.partition)
    speaks = [SessionSpeak(session_id="moved", text=f"after the move {i}") for i in range(3)]
    for speak in speaks:
        await publish_into(producer, speak, elsewhere)
    answers = await producer.tap.answers(speaks)
    assert [a.type for a in answers] == ["speech.started"] * 3
    every = [e.seq for e in producer.tap.of("moved")]
    assert sorted(s or 0 for s in every) == list(range(1, len(every) + 1))
    started = [e.causation_id for e in producer.tap.of("moved") if e.type == "speech.started"]
    assert started == [s.command_id for s in speaks]
    forwarded = worker.metrics.commands_total.labels(type="session.speak", outcome="forwarded")
    assert forwarded._value.get() == 3


async def test_a_forwarded_command_keeps_its_sender_only_when_a_worker_forwarded_it(
    worker: Worker, producer: Producer
) -> None:
    # The sender travels in a header that only the worker's own broker user is trusted with
    # (the broker checks user_id): a producer setting it itself gains nothing.
    session = await created(worker, producer, "guarded")
    session.owner = "alice"
    forged = SessionSpeak(session_id="guarded", text="not alice")
    headers = {FORWARDED_HEADER: 0, FORWARDED_USER_HEADER: "alice"}
    await publish_into(producer, forged, partition_queue(session.partition), headers)
    (answer,) = await producer.tap.answers([forged])
    # No user_id vouches for the header (the worker's would), so the sender is nobody, and
    # nobody may not speak in alice's session.
    assert answer.type == "command.rejected"
    assert getattr(answer, "code", None) == "forbidden"


@pytest.mark.parametrize("worker_overrides", [{**FAST, "snapshot_refresh_s": 1.0}])
async def test_live_sessions_are_resnapshotted_each_period_spread_over_it(
    worker: Worker, producer: Producer
) -> None:
    assert worker.handover is not None
    names = [f"r{i}" for i in range(10)]
    for name in names:
        await created(worker, producer, name)
    save = worker.handover.save
    saves: list[tuple[float, str]] = []

    async def recorded(session: Session) -> None:
        await save(session)
        saves.append((time.monotonic(), session.session_id))

    worker.handover.save = recorded  # type: ignore[method-assign]

    def times(name: str) -> list[float]:
        return [at for at, sid in saves if sid == name]

    # The pass under way may be an empty one (the worker had no session when it began).
    await wait_until(lambda: all(len(times(name)) >= 3 for name in names), timeout=8)
    for name in names:
        # Once a period (1 s), so none falls out of the takeover's window (two periods + 60 s).
        gaps = [b - a for a, b in itertools.pairwise(times(name))]
        assert all(0.5 < gap < 1.5 for gap in gaps), (name, gaps)
    # One pass's saves are spread over the period, not sent in a burst (0.1 s apart here).
    first_pass = sorted(at for at, _ in saves)[: len(names)]
    assert first_pass[-1] - first_pass[0] >= 0.5
