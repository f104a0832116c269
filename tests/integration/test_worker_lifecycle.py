"""Start-up against existing topology, readiness, and a drain that finishes in-flight work."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import SessionSpeak
from contracts.common import TaskMode
from contracts.events import SpeechFinished
from contracts.topology import partition_queue
from simulator.server import RunningSimulator
from tests.conftest import RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_USER, RABBITMQCTL
from tests.integration.conftest import (
    PARTITIONS,
    Producer,
    leftover_commands,
    wait_until,
    worker_process,
    worker_settings,
)
from worker.app import Worker
from worker.bus.topology import TopologyError

CONFLICTS = {
    "classic": {},
    "quorum-without-sac": {"x-queue-type": "quorum"},
}


async def declare_conflicting_p0(connection: AbstractRobustConnection, arguments: Any) -> None:
    channel = await connection.channel()
    await channel.declare_queue(partition_queue(0), durable=True, arguments=arguments)
    await channel.close()


@pytest.mark.parametrize("arguments", CONFLICTS.values(), ids=CONFLICTS.keys())
async def test_conflicting_queue_fails_start_with_advice(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    arguments: dict[str, Any],
) -> None:
    await declare_conflicting_p0(connection, arguments)
    worker = Worker(worker_settings(amqp_url, simulator))
    try:
        with pytest.raises(TopologyError) as raised:
            await worker.start()
    finally:
        await worker.shutdown()
    message = str(raised.value)
    # Names the queue, quotes the broker's reason (without its stack) and says what to do.
    assert "queue avatar.commands.p0 exists with different arguments" in message
    assert "inequivalent arg" in message
    assert "rabbitmqctl delete_queue avatar.commands.p0" in message


async def test_conflicting_queue_exits_the_cli_with_one_line(
    amqp_url: str, simulator: RunningSimulator, connection: AbstractRobustConnection, tmp_path: Path
) -> None:
    await declare_conflicting_p0(connection, {})
    async with worker_process(amqp_url, simulator, tmp_path / "worker.log") as process:
        code = await process.wait()
        log = process.log()
    assert code != 0, log
    assert "Traceback" not in log, log
    assert "queue avatar.commands.p0 exists with different arguments" in log, log
    assert "rabbitmqctl delete_queue avatar.commands.p0" in log, log


async def test_second_start_on_same_topology_is_fine(
    amqp_url: str, simulator: RunningSimulator, producer: Producer, worker: Worker
) -> None:
    again = Worker(worker_settings(amqp_url, simulator, worker_id="second"))
    try:
        await again.start()
        assert again.readiness() == (True, "ready")
    finally:
        await again.shutdown()
    assert worker.readiness() == (True, "ready")
    await producer.open_session("still-served")


async def test_readiness_drops_when_the_drain_begins(
    producer: Producer,
    worker: Worker,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
) -> None:
    assert worker.health is not None
    readyz = f"http://127.0.0.1:{worker.health.port}/readyz"
    async with httpx.AsyncClient() as http:
        assert worker.readiness() == (True, "ready")
        assert (await http.get(readyz)).status_code == 200
        await producer.open_session("draining")
        await simulator.admin.configure(words_per_minute=600)  # 0.1 s a word
        speak = SessionSpeak(
            session_id="draining", text=" ".join(["word"] * 8), task_mode=TaskMode.SYNC
        )
        await producer.send(speak)
        await wait_until(lambda: worker.dispatcher is not None and worker.dispatcher.in_flight)
        shutdown = asyncio.create_task(worker.shutdown())
        await wait_until(lambda: not worker.readiness()[0], 1)
        assert worker.readiness() == (False, "draining")
        response = await http.get(readyz)
        assert (response.status_code, response.text) == (503, "draining")
        assert not shutdown.done()
        await asyncio.wait_for(shutdown, 5)
    # The drain let the in-flight sync speak finish and be acknowledged.
    finished = producer.tap.caused_by(speak)
    assert [e.type for e in finished] == ["speech.started", "speech.finished"]
    assert isinstance(finished[-1], SpeechFinished)
    assert not finished[-1].interrupted
    assert await leftover_commands(connection, worker.settings.partitions) == []


async def test_unknown_vhost_exits_the_cli_with_one_line(
    amqp_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    missing = f"{amqp_url}-missing"
    async with worker_process(missing, simulator, tmp_path / "worker.log") as process:
        code = await process.wait()
        log = process.log()
    assert code != 0, log
    assert "Traceback" not in log, log
    assert "cannot connect to RabbitMQ" in log, log


async def test_a_refusal_by_the_broker_is_logged_as_what_it_refused(
    amqp_url: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Connected, then refused: the log quotes the broker rather than "cannot connect"."""
    vhost = amqp_url.rsplit("/", 1)[1]
    # Room for the topology's queues (partitions, dead letters, state stream), and no more.
    limit = {"value": PARTITIONS + 2}
    async with httpx.AsyncClient(auth=(RABBIT_USER, RABBIT_PASSWORD), timeout=10) as mgmt:
        url = f"{RABBIT_MGMT}/api/vhost-limits/{vhost}/max-queues"
        (await mgmt.put(url, json=limit)).raise_for_status()
    async with worker_process(amqp_url, simulator, tmp_path / "worker.log") as process:
        code = await process.wait()
        log = process.log()
    assert code != 0, log
    assert "Traceback" not in log, log
    assert "cannot connect" not in log, log
    assert "RabbitMQ refused the worker's request: PRECONDITION_FAILED" in log, log
    assert "queue limit in vhost" in log, log


async def rabbitmqctl(*args: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [*RABBITMQCTL, *args], capture_output=True, text=True, check=True
    )
    return done.stdout


async def test_readiness_waits_for_every_consumer_after_a_reconnect(
    amqp_url: str, worker: Worker
) -> None:
    vhost = amqp_url.rsplit("/", 1)[1]
    seen: list[tuple[bool, str]] = []

    async def watch() -> None:
        while True:
            state = worker.readiness()
            if not seen or seen[-1] != state:
                seen.append(state)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(watch())
    try:
        await rabbitmqctl("close_all_connections", "-p", vhost, "readiness test")
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: len(seen) > 1 and seen[-1] == (True, "ready"), 30)
        assert seen[-1] == (True, "ready"), seen
        # Ready again only once the broker has this worker's consumer on every partition.
        listed = await rabbitmqctl("list_consumers", "-q", "-p", vhost, "queue_name")
    finally:
        watcher.cancel()
    assert seen[0] == (True, "ready")
    assert any(not ready for ready, _ in seen), seen
    queues = {line.strip() for line in listed.splitlines()}
    assert {partition_queue(p) for p in range(worker.settings.partitions)} <= queues
