"""Session snapshots kept in RabbitMQ itself: a stream every replica appends to, and the new
owner of a partition replays (the recent window, that partition only) to take it over."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher

STATE_STREAM = "avatar.sessions.state"
PARTITION_HEADER = "x-partition"
MARKER_HEADER = "x-read-marker"
# Ownership records: a draining owner says so before cancelling its consumer, and says
# "released" once its in-flight commands are done; the next owner waits for that.
OWNERSHIP_HEADER = "x-ownership"
WORKER_HEADER = "x-worker"
READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Record:
    body: bytes
    headers: Mapping[str, Any]
    timestamp: datetime | None

    @property
    def ownership(self) -> tuple[str, str] | None:
        """(state, worker) of an ownership record; None for a snapshot."""
        state = self.headers.get(OWNERSHIP_HEADER)
        return (str(state), str(self.headers.get(WORKER_HEADER))) if state else None


def stream_arguments(max_age: str) -> dict[str, aio_pika.abc.FieldValue]:
    return {"x-queue-type": "stream", "x-max-age": max_age}


class StateStream:
    def __init__(self, connection: AbstractConnection, publisher: Publisher) -> None:
        self._connection = connection
        self._publisher = publisher
        # One reader channel, one read at a time: opening channels concurrently on a busy
        # connection tripped "CHANNEL_ERROR - expected 'channel.open'", which closes it all.
        self._reading = asyncio.Lock()
        self._channel: AbstractChannel | None = None

    async def append(self, partition: int, body: bytes) -> None:
        """Append one snapshot, confirmed by the broker."""
        await self._append(body, {PARTITION_HEADER: partition})

    async def mark(self, partition: int, ownership: str, worker_id: str) -> None:
        """Append an ownership record ("draining", "released") for `partition`."""
        headers: dict[str, aio_pika.abc.FieldValue] = {
            PARTITION_HEADER: partition,
            OWNERSHIP_HEADER: ownership,
            WORKER_HEADER: worker_id,
        }
        await self._append(b"", headers)

    async def _append(self, body: bytes, headers: dict[str, aio_pika.abc.FieldValue]) -> None:
        envelope = AmqpEnvelope(
            body=body,
            properties={
                "content_type": "application/json",
                "delivery_mode": 2,
                "headers": headers,
                "timestamp": datetime.now(UTC),
            },
        )
        await self._publisher.publish_reply(envelope, STATE_STREAM)

    async def _reader(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=False)
            await self._channel.set_qos(prefetch_count=1000)  # streams need a prefetch
        return self._channel

    async def read(
        self,
        partition: int | None,
        since: datetime,
        *,
        keep_reading: Callable[[list[Record]], bool] = lambda _: False,
        wait_s: float = 0.0,
    ) -> list[Record]:
        """Every record of `partition` (of all, for None) appended since `since`, oldest first.

        A stream has no "end": a marker is appended first and the read stops when it comes by,
        or, while `keep_reading(records)` holds, when a later record makes it false (at most
        `wait_s` more seconds).
        """
        marker = uuid.uuid4().hex
        await self._publisher.publish_reply(
            AmqpEnvelope(body=b"", properties={"headers": {MARKER_HEADER: marker}}), STATE_STREAM
        )
        records: list[Record] = []
        passed = asyncio.Event()
        done = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            headers = message.headers or {}
            if headers.get(MARKER_HEADER) == marker:
                passed.set()
            elif partition is None or headers.get(PARTITION_HEADER) == partition:
                records.append(Record(message.body, headers, message.timestamp))
            if passed.is_set() and not keep_reading(records):
                done.set()
            await message.ack()

        async with self._reading:
            channel = await self._reader()
            queue = await channel.get_queue(STATE_STREAM, ensure=False)
            tag = await queue.consume(on_message, arguments={"x-stream-offset": since})
            try:
                await asyncio.wait_for(passed.wait(), READ_TIMEOUT_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), wait_s)
            finally:
                await queue.cancel(tag)
        return records
