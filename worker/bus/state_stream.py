"""Session snapshots kept in RabbitMQ itself: a stream every replica appends to, and the new
owner of a partition replays (the recent window, that partition only) to take it over."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher

STATE_STREAM = "avatar.sessions.state"
PARTITION_HEADER = "x-partition"
MARKER_HEADER = "x-read-marker"
READ_TIMEOUT_S = 60.0


def stream_arguments(max_age: str) -> dict[str, aio_pika.abc.FieldValue]:
    return {"x-queue-type": "stream", "x-max-age": max_age}


class StateStream:
    def __init__(self, connection: AbstractConnection, publisher: Publisher) -> None:
        self._connection = connection
        self._publisher = publisher

    async def append(self, partition: int, body: bytes) -> None:
        """Append one snapshot, confirmed by the broker."""
        envelope = AmqpEnvelope(
            body=body,
            properties={
                "content_type": "application/json",
                "delivery_mode": 2,
                "headers": {PARTITION_HEADER: partition},
            },
        )
        await self._publisher.publish_reply(envelope, STATE_STREAM)

    async def read(self, partition: int, since: datetime) -> list[bytes]:
        """Every snapshot of `partition` appended since `since`, oldest first.

        A stream has no "end": a marker is appended first and the read stops when it comes by.
        """
        marker = uuid.uuid4().hex
        await self._publisher.publish_reply(
            AmqpEnvelope(body=b"", properties={"headers": {MARKER_HEADER: marker}}), STATE_STREAM
        )
        bodies: list[bytes] = []
        done = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            headers = message.headers or {}
            if headers.get(MARKER_HEADER) == marker:
                done.set()
            elif headers.get(PARTITION_HEADER) == partition and message.body:
                bodies.append(message.body)
            await message.ack()

        channel = await self._connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=1000)  # streams need a prefetch to consume
            queue = await channel.get_queue(STATE_STREAM, ensure=False)
            await queue.consume(on_message, arguments={"x-stream-offset": since})
            await asyncio.wait_for(done.wait(), READ_TIMEOUT_S)
        finally:
            await channel.close()
        return bodies
