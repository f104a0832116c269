"""The session pool against the simulator: keep-alive, idle and duration limits, capacity,
reconnection and reconciliation (issue 4)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from contracts.commands import SessionCreate, SessionSpeak
from contracts.events import CommandFailed, CommandRejected, SessionCreated, SessionStopped
from simulator.admin import RequestRecord
from simulator.server import RunningSimulator
from tests.integration.conftest import Producer, wait_until
from worker.app import Worker


def create(session_id: str, **kw: Any) -> SessionCreate:
    return SessionCreate(session_id=session_id, avatar_id="Wayne_20240711", **kw)


async def heygen_id(producer: Producer, session_id: str) -> str:
    created = await producer.tap.wait_for(
        lambda e: isinstance(e, SessionCreated) and e.session_id == session_id
    )
    assert isinstance(created, SessionCreated)
    return created.heygen_session_id


@pytest.mark.parametrize("simulator_overrides", [{"idle_timeout_override_s": 1.5}])
@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 0.4}])
async def test_keepalive_holds_a_session_past_several_idle_timeouts(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.call(create("kept"))
    hid = await heygen_id(producer, "kept")
    await asyncio.sleep(5)  # more than three of HeyGen's (shortened) idle timeouts
    stats = (await simulator.admin.stats()).sessions[hid]
    assert stats.status != "closed", stats.closed_reason
    assert stats.keep_alives >= 8
    ok = await producer.call(SessionSpeak(session_id="kept", text="still here"))
    assert ok.type == "speech.started"


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 2.0}])
async def test_sessions_created_together_spread_their_first_keepalives(
    producer: Producer, simulator: RunningSimulator
) -> None:
    names = [f"burst-{i}" for i in range(20)]
    await asyncio.gather(*(producer.call(create(name)) for name in names))
    hids = {await heygen_id(producer, name) for name in names}

    def first(endpoint: str, log: list[RequestRecord]) -> dict[str, float]:
        at: dict[str, float] = {}
        for r in log:
            if r.endpoint == endpoint and r.session_id in hids:
                at.setdefault(r.session_id, r.at)
        return at

    await asyncio.sleep(2.3)
    log = (await simulator.admin.stats()).requests
    started, kept = first("streaming.start", log), first("streaming.keep_alive", log)
    assert kept.keys() == hids
    offsets = [kept[h] - started[h] for h in hids]
    # Drawn from 0.1-1.0 of the interval: none right after the start, and spread over most of
    # it. 0.85-1.0 kept all twenty within 0.3 s plus the 50 ms timer tick.
    assert min(offsets) >= 0.15
    assert max(offsets) - min(offsets) >= 0.8


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 0.5}])
async def test_speech_counts_as_activity_so_no_needless_keepalive(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.call(create("busy"))
    hid = await heygen_id(producer, "busy")

    async def keep_alives() -> int:
        return (await simulator.admin.stats()).sessions[hid].keep_alives

    # The first interval is drawn from most of it (test above); the later ones are the rule.
    await wait_until(lambda: keep_alives(), timeout=2)
    for _ in range(8):
        await producer.call(SessionSpeak(session_id="busy", text="hi"))
        await asyncio.sleep(0.2)
    assert await keep_alives() == 1


@pytest.mark.parametrize("worker_overrides", [{"idle_timeout_s": 1}])
async def test_idle_session_is_stopped_by_policy(producer: Producer) -> None:
    await producer.call(create("idle"))
    stopped = await producer.tap.wait_for(lambda e: isinstance(e, SessionStopped), timeout=5)
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason == "idle"
    assert stopped.usage.billed_seconds >= 1


async def test_max_duration_is_enforced_per_session(producer: Producer) -> None:
    await producer.call(create("short", max_duration_s=1))
    stopped = await producer.tap.wait_for(lambda e: isinstance(e, SessionStopped), timeout=5)
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason == "max_duration"


@pytest.mark.parametrize("worker_overrides", [{"max_sessions": 2}])
async def test_worker_capacity_rejects_before_calling_heygen(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.call(create("c1"))
    await producer.call(create("c2"))
    rejected = await producer.call(create("c3"))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "capacity"
    assert (await simulator.admin.stats()).calls.get("streaming.new") == 2


@pytest.mark.parametrize("simulator_overrides", [{"concurrency_limit": 1}])
async def test_heygen_concurrency_limit_becomes_capacity_without_retry(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    await producer.call(create("h1"))
    rejected = await producer.call(create("h2"))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "capacity"
    assert (await simulator.admin.stats()).calls.get("streaming.new") == 2
    assert worker.services is not None
    assert worker.services.registry.get("h2") is None


async def test_session_closed_remotely_is_reconnected_and_usable(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.call(create("phoenix"))
    old = await heygen_id(producer, "phoenix")
    await simulator.admin.close_session(old)
    failed = await producer.call(SessionSpeak(session_id="phoenix", text="are you there"))
    assert isinstance(failed, CommandFailed)
    assert failed.code == "session_closed"
    types = [e.type for e in producer.tap.of("phoenix")]
    assert types[-3:] == ["session.reconnecting", "session.reconnected", "command.failed"]
    reconnected = next(e for e in producer.tap.of("phoenix") if e.type == "session.reconnected")
    assert reconnected.heygen_session_id != old
    assert reconnected.access_token
    again = await producer.call(SessionSpeak(session_id="phoenix", text="back again"))
    assert again.type == "speech.started"
    seqs = [e.seq for e in producer.tap.of("phoenix")]
    assert seqs == list(range(1, len(seqs) + 1))


@pytest.mark.parametrize("worker_overrides", [{"keepalive_interval_s": 0.3}])
async def test_keepalive_notices_a_closed_session_and_reconnects(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await producer.call(create("watched"))
    old = await heygen_id(producer, "watched")
    await simulator.admin.close_session(old)
    await producer.tap.wait_for(
        lambda e: e.type == "session.reconnected" and e.session_id == "watched", timeout=5
    )
    assert (await simulator.admin.stats()).live_sessions == 1


@pytest.mark.parametrize(
    "worker_overrides",
    [{"reap_unknown_sessions": True, "leak_grace_s": 0.3, "reconcile_interval_s": 0.2}],
)
async def test_leaked_session_is_stopped_by_reconciliation(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    await producer.call(create("owned"))
    owned = await heygen_id(producer, "owned")
    # A session nobody owns, as a crashed worker would leave behind.
    async with httpx.AsyncClient(
        base_url=simulator.base_url, headers={"X-Api-Key": simulator.api_key}
    ) as http:
        answer = await http.post("/v1/streaming.new", json={"avatar_id": "a", "version": "v2"})
        leaked = answer.json()["data"]["session_id"]
    for _ in range(50):
        sessions = (await simulator.admin.stats()).sessions
        if sessions[leaked].status == "closed":
            break
        await asyncio.sleep(0.1)
    assert sessions[leaked].status == "closed"
    assert sessions[owned].status != "closed"
    assert worker.metrics.leaked_sessions_stopped_total._value.get() == 1


@pytest.mark.parametrize("worker_overrides", [{"ownership_poll_s": 0.2}])
async def test_partitions_owned_comes_from_the_management_api(worker: Worker) -> None:
    # The management API lists a new consumer after up to collect_statistics_interval (5 s).
    for _ in range(150):
        if worker.partition_watch.owned == {0, 1}:
            break
        await asyncio.sleep(0.1)
    assert worker.partition_watch.owned == {0, 1}
    assert worker.metrics.partitions_owned._value.get() == 2


async def test_a_create_whose_answer_was_lost_is_answered_again_not_rebilled(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    create_once = create("again")
    await producer.call(create_once)
    assert worker.services is not None
    dispatcher = worker.dispatcher
    assert dispatcher is not None
    # session.ready can reach the tap before the worker has let go of the command.
    await wait_until(lambda: create_once.command_id in dispatcher.ledger.finished)
    # As after a publish that was never confirmed: nothing remembers answering it.
    dispatcher.ledger.finished = type(dispatcher.ledger.finished)(10)
    session = worker.services.registry.get("again")
    assert session is not None
    session.recent_commands.clear()
    await producer.send(create_once)
    ready = await producer.tap.wait_count(
        lambda e: e.type == "session.ready" and e.causation_id == create_once.command_id, 2
    )
    created = [e for e in producer.tap.of("again") if isinstance(e, SessionCreated)]
    assert len(created) == 2
    assert created[0].heygen_session_id == created[1].heygen_session_id
    assert len(ready) == 2
    assert (await simulator.admin.stats()).calls.get("streaming.new") == 1


@pytest.mark.parametrize("worker_overrides", [{"orphan_grace_s": 0.2}])
async def test_a_create_whose_answer_was_cut_off_leaves_no_billed_session(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    await producer.call(create("kept"))
    kept = await heygen_id(producer, "kept")
    # HeyGen makes the session, then the connection drops before its answer arrives.
    await simulator.admin.set_fault("streaming.new", reset=True, apply_first=True, count=1)
    answer = await producer.call(create("cut"))
    assert isinstance(answer, CommandFailed), answer
    assert answer.code == "transport"
    for _ in range(50):
        stats = await simulator.admin.stats()
        if stats.live_sessions == 1:
            break
        await asyncio.sleep(0.1)
    assert [h for h, s in stats.sessions.items() if s.status != "closed"] == [kept]
    assert worker.metrics.leaked_sessions_stopped_total._value.get() == 1
