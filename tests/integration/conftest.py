"""Integration harness: a real RabbitMQ vhost, the HeyGen simulator and an in-process worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from contracts.client import publish_command
from contracts.codec import decode_event
from contracts.commands import CommandBase
from contracts.events import Event
from contracts.topology import EVENTS_EXCHANGE
from simulator.server import RunningSimulator, running_simulator
from worker.app import Worker
from worker.settings import WorkerSettings

TERMINAL = {
    "session.create": {"session.ready"},
    "session.start": {"session.ready"},
    "session.speak": {"speech.started"},
    "session.interrupt": {"speech.interrupted"},
    "session.stop": {"session.stopped"},
    "session.keepalive": {"command.completed"},
    "session.ice": {"command.completed"},
}
ALWAYS_TERMINAL = {"command.rejected", "command.failed"}


class EventTap:
    """Every event published on the vhost, in arrival order, with waiting helpers."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = decode_event(message.body, content_type=message.content_type)
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        await message.ack()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10) -> Event:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await self._changed.wait()

    async def wait_count(self, predicate: Callable[[Event], bool], n: int, timeout: float = 10) -> list[Event]:
        async with asyncio.timeout(timeout), self._changed:
            while len(found := [e for e in self.events if predicate(e)]) < n:
                await self._changed.wait()
            return found

    def of(self, session_id: str) -> list[Event]:
        return [e for e in self.events if e.session_id == session_id]

    def caused_by(self, command: CommandBase) -> list[Event]:
        return [e for e in self.events if e.causation_id == command.command_id]


class Producer:
    """What a producing service does: publish commands, watch events."""

    def __init__(self, channel: AbstractChannel, tap: EventTap) -> None:
        self.channel = channel
        self.tap = tap

    async def send(self, command: CommandBase) -> None:
        await publish_command(self.channel, command)

    async def call(self, command: CommandBase, timeout: float = 10) -> Event:
        """Publish and wait for the command's terminal event."""
        await self.send(command)
        wanted = TERMINAL.get(command.type, set()) | ALWAYS_TERMINAL
        return await self.tap.wait_for(
            lambda e: e.causation_id == command.command_id and e.type in wanted, timeout
        )


def worker_settings(amqp_url: str, sim: RunningSimulator, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "amqp_url": amqp_url,
        "heygen_api_key": sim.api_key,
        "heygen_base_url": sim.base_url,
        "partitions": 2,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "shutdown_grace_s": 5,
        "worker_id": "test-worker",
        **overrides,
    }
    return WorkerSettings.model_validate(values)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(port=0) as sim:
        yield sim


@pytest.fixture
def worker_overrides() -> dict[str, Any]:
    """Override in a test module to change the worker's settings."""
    return {}


@pytest.fixture
async def worker(
    amqp_url: str, simulator: RunningSimulator, worker_overrides: dict[str, Any]
) -> AsyncIterator[Worker]:
    worker = Worker(worker_settings(amqp_url, simulator, **worker_overrides))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.shutdown()


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def producer(connection: AbstractRobustConnection, worker: Worker) -> AsyncIterator[Producer]:
    channel = await connection.channel(publisher_confirms=True)
    tap = EventTap()
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(EVENTS_EXCHANGE, routing_key="#")
    await queue.consume(tap.on_message)
    yield Producer(channel, tap)
