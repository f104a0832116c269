"""A producer that survives broker faults (resends the same command until confirmed) and a
traffic generator of creates, speaks (unique texts), keep-alives and stops."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from contracts.client import publish_command
from contracts.commands import (
    CommandBase,
    SessionCreate,
    SessionInterrupt,
    SessionKeepalive,
    SessionSpeak,
    SessionStop,
)
from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE
from tests.reliability.checker import Checker
from worker.bus.connection import connect_failover, split_urls

SEND_GIVE_UP_S = 120


class ResilientProducer:
    """Publishes with confirms; a publish not confirmed is resent with the same command_id
    (the producer side of at-least-once). Its event tap is a quorum queue, so events published
    while the broker restarts are not lost to the test."""

    def __init__(self, amqp_url: str, checker: Checker) -> None:
        self.amqp_url = amqp_url
        self.checker = checker
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.resends = 0

    async def start(self) -> None:
        # Several comma-separated URLs: a cluster, failed over as the worker does.
        self.connection = await connect_failover(
            split_urls(self.amqp_url), connection_name="test-producer"
        )
        self.channel = await self.connection.channel(publisher_confirms=True)
        exchange = await self.channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await self.channel.declare_queue(
            f"test-tap-{uuid.uuid4().hex[:8]}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self.checker.on_message)

    async def close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.connection.close(), 5)

    async def send(self, command: CommandBase) -> None:
        assert self.channel is not None
        self.checker.sent(command)
        async with asyncio.timeout(SEND_GIVE_UP_S):
            while True:
                try:
                    await publish_command(self.channel, command, timeout=3)
                    return
                except Exception:
                    self.resends += 1
                    await asyncio.sleep(0.3)

    async def send_raw(self, body: bytes, routing_key: str, **properties: object) -> None:
        """A hostile or careless producer's message (no retries: the broker is up)."""
        assert self.channel is not None
        message_id = str(properties.setdefault("message_id", uuid.uuid4().hex))
        self.checker.sent_poison(message_id)
        exchange = await self.channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(
            aio_pika.Message(body, **properties),  # type: ignore[arg-type]
            routing_key=routing_key,
        )


class Traffic:
    """Mixed traffic on `sessions` until `stop()`: mostly speaks, some keep-alives and
    interrupts. Every speak has a unique text."""

    def __init__(
        self,
        producer: ResilientProducer,
        sessions: list[str],
        *,
        rate_hz: float = 40,
        interrupts: bool = False,
        seed: int = 7,
    ) -> None:
        self.producer = producer
        self.sessions = sessions
        self.rate_hz = rate_hz
        self.interrupts = interrupts
        self.rng = random.Random(seed)
        self.sent = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def open_sessions(self, timeout: float = 30) -> None:  # noqa: ASYNC109
        for session_id in self.sessions:
            await self.producer.send(SessionCreate(session_id=session_id, avatar_id="a"))
        await self.producer.checker.wait_answered(timeout)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def close_sessions(self, *, settle: bool = True) -> None:
        """Stop every session; with `settle`, once everything sent so far is answered, so that
        no stop overtakes a running speak (that race is bug B3, shown by the backpressure test)."""
        if settle:
            await self.producer.checker.wait_answered(60)
        for session_id in self.sessions:
            await self.producer.send(SessionStop(session_id=session_id))

    async def _run(self) -> None:
        while not self._stop.is_set():
            session_id = self.rng.choice(self.sessions)
            roll = self.rng.random()
            command: CommandBase
            if self.interrupts and roll < 0.05:
                command = SessionInterrupt(session_id=session_id)
            elif roll < 0.1:
                command = SessionKeepalive(session_id=session_id)
            else:
                command = SessionSpeak(session_id=session_id, text=f"{session_id} says {self.sent}")
            self.sent += 1
            await self.producer.send(command)
            await asyncio.sleep(1 / self.rate_hz)
