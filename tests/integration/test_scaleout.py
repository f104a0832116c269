"""Three worker processes share the partitions; a rolling restart (one SIGKILL, one SIGTERM)
drops no session and runs every command once, in order, with seq continuous (issue 8)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import SessionCreate, SessionSpeak
from contracts.events import CommandFailed, CommandRejected
from contracts.topology import DEAD_LETTER_QUEUE
from simulator.server import RunningSimulator, running_simulator
from tests.conftest import RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_USER
from tests.integration.conftest import WorkerProcess, tapped_producer, worker_process
from worker.bus.ownership import PARTITION_PREFIX

PARTITIONS = 6
SESSIONS = [f"s{i:02d}" for i in range(60)]
# Where a speak's answer stands in the session's publish order, who answered it, its seq.
Answer = tuple[int, str, int | None]
TERMINAL = {"speech.started", "command.failed", "command.rejected"}
REPLICA_ENV = {
    "WORKER_PARTITIONS": str(PARTITIONS),
    "WORKER_OWNERSHIP_POLL_S": "0.3",
    "WORKER_KEEPALIVE_INTERVAL_S": "1",
    # A graceful handover works off what the replica holds (the prefetch of each partition it
    # owns) within the grace; cut short, it requeues commands behind newer ones (RabbitMQ puts
    # a returned message at the back), which the next owner may run first. So, as the sizing
    # advice of docs/concepts/ordering.md says, hold less than can be finished in the grace:
    # with 10 sessions per partition 16 is plenty, while 64 (the default) took one loaded
    # replica here over 13 s.
    # The default grace is 25 s.
    "WORKER_PREFETCH": "16",
    "WORKER_SHUTDOWN_GRACE_S": "10",
    "WORKER_MAX_SESSIONS": "200",
    "LOG_LEVEL": "DEBUG",
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


async def dead_letters(amqp_url: str) -> int:
    vhost = quote(urlsplit(amqp_url).path[1:], safe="")
    async with httpx.AsyncClient(base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD)) as m:
        queue = (await m.get(f"/api/queues/{vhost}/{DEAD_LETTER_QUEUE}")).json()
    return int(queue.get("messages", 0))


def replica_lines(log_dir: Path, session_id: str) -> list[str]:
    """What each replica logged about a session (partition, redelivered or not), and warnings."""
    return [
        f"{path.stem}: {line[:400]}"
        for path in sorted(log_dir.glob("r*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if f'"session_id": "{session_id}"' in line or '"WARNING"' in line
    ]


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


# Its own waits add up to more than the suite's 120 s default; it takes 30-60 s on the 2-core
# machine (up to 106 s seen before the fixes), which the default suite's budget has no room for:
# it runs in `make soak` (docs/concepts/ordering.md).
@pytest.mark.slow
@pytest.mark.timeout(240)
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
        try:
            await producer.tap.wait_count(lambda e: e.type == "session.ready", len(SESSIONS), 30)
        except TimeoutError:
            ready = {e.session_id for e in producer.tap.events if e.type == "session.ready"}
            missing = {
                s: [(e.type, e.worker_id) for e in producer.tap.of(s)]
                for s in SESSIONS
                if s not in ready
            }
            raise AssertionError(f"not ready within 30 s: {missing}") from None

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
        began = time.monotonic()
        marks: dict[str, float] = {}

        def mark(name: str) -> None:
            marks[name] = round(time.monotonic() - began, 1)

        await asyncio.sleep(2)
        r1.process.kill()  # crash: no drain, no release
        await r1.process.wait()
        mark("sigkill r1")
        await asyncio.sleep(2)
        r2.sigterm()  # graceful: drain and hand over
        mark("sigterm r2")
        assert await r2.wait(30) == 0, r2.log()
        mark("r2 exited")
        await replica("r4")
        await replica("r5")
        mark("r4, r5 ready")
        replaced = time.monotonic()
        await asyncio.sleep(2)
        stop_traffic.set()
        await sender
        mark("traffic stopped")

        speaks = [s for per_session in published.values() for s in per_session]
        ids = {s.command_id for s in speaks}
        with contextlib.suppress(TimeoutError):  # reported below, with the other figures
            await producer.tap.wait_count(
                lambda e: e.causation_id in ids and e.type in TERMINAL, len(speaks), 60
            )
        mark("answered")
        dead = await dead_letters(amqp_url)
        spread = await wait_spread(amqp_url, {"r3", "r4", "r5"})
        rebalance_s = time.monotonic() - replaced
        mark("spread")
        stats = await simulator.admin.stats()

    # Events are at-least-once (a crashed owner's last event is re-published with the same id
    # and seq); a consumer dedupes by event_id, and so does this test.
    events = list({e.event_id: e for e in producer.tap.events}.values())
    by_command = defaultdict(list)
    for event in events:
        if event.causation_id in ids and event.type in TERMINAL:
            by_command[event.causation_id].append(event)
    outcomes = Counter(by_command[s.command_id][0].type for s in speaks if by_command[s.command_id])
    failed = Counter(
        (e.code, e.worker_id)
        for e in events
        if isinstance(e, CommandFailed) and e.causation_id in ids
    )
    gaps: dict[str, list[tuple[int, str, str]]] = {}
    inversions: dict[str, list[tuple[Answer, Answer]]] = {}
    for session_id in SESSIONS:
        mine = sorted((e for e in events if e.session_id == session_id), key=lambda e: e.seq or 0)
        if [e.seq for e in mine] != list(range(1, len(mine) + 1)):
            gaps[session_id] = [(e.seq or 0, e.type, e.worker_id) for e in mine]
        order = {s.command_id: i for i, s in enumerate(published[session_id])}
        answered = [
            (order[e.causation_id], e.worker_id, e.seq)
            for e in mine
            if e.causation_id in order and e.type == "speech.started"
        ]
        inverted = [(a, b) for a, b in itertools.pairwise(answered) if b[0] < a[0]]
        if inverted:
            inversions[session_id] = inverted
    ours = {getattr(e, "heygen_session_id", None): e.session_id for e in events}
    closed = {
        ours.get(heygen_id, heygen_id): (s.closed_at, s.closed_reason, s.keep_alives)
        for heygen_id, s in stats.sessions.items()
        if s.closed_reason is not None
    }
    print(
        f"\nscale-out: {len(SESSIONS)} sessions, {len(speaks)} speaks, outcomes {dict(outcomes)},"
        f" failed by code {dict(failed)},"
        f" unanswered {sum(1 for s in speaks if not by_command[s.command_id])},"
        f" dead-lettered {dead}, sessions closed {len(closed)}, sessions with seq gaps {len(gaps)},"
        f" order inversions {sum(map(len, inversions.values()))},"
        f" rebalance {rebalance_s:.1f} s after the replacements were ready,"
        f" spread {dict(sorted(Counter(spread.values()).items()))}, timeline {marks}"
    )
    for session_id, seqs in gaps.items():
        print(f"seq gap in {session_id}: {seqs}")
    for session_id, pairs in inversions.items():
        print(f"inversion in {session_id}: {pairs}")
        for line in replica_lines(tmp_path, session_id):
            print(line)

    # No session closed by HeyGen's idle timeout: keep-alives survived both handovers.
    assert closed == {}, closed

    # Exactly one answer per command, none lost.
    answers = {
        s.command_id: [(e.type, e.worker_id) for e in by_command[s.command_id]] for s in speaks
    }
    assert [a for a in answers.values() if len(a) != 1] == []
    cut_short = outcomes["command.failed"]
    rejected = Counter(
        (e.code, e.worker_id)
        for e in events
        if isinstance(e, CommandRejected) and e.causation_id in ids
    )
    assert outcomes["command.rejected"] == 0, rejected
    # Only a speak the SIGKILL cut mid-call fails ("interrupted"): one per session at most,
    # since a session's speaks run one at a time.
    cut = [
        s.session_id
        for s in speaks
        if any(isinstance(e, CommandFailed) for e in by_command[s.command_id])
    ]
    assert {code for code, _ in failed} <= {"interrupted"}, failed
    assert max(Counter(cut).values(), default=0) <= 1, Counter(cut)

    heygen_tasks = sum(s.tasks for s in stats.sessions.values())
    started = outcomes["speech.started"]
    # HeyGen spoke each started speak once; a cut-short one may or may not have reached it.
    assert started <= heygen_tasks <= started + cut_short, (heygen_tasks, outcomes)

    # seq continuous per session, answers in publish order per session.
    assert gaps == {}
    assert inversions == {}
