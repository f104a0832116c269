"""Session snapshots kept in RabbitMQ itself: a stream every replica appends to and follows
(`state_tail.py`), so that the new owner of a partition can take its sessions over.

Snapshots are group-committed: those appended while earlier ones wait for their confirm go out
together, one per line of one record. A snapshot is written before each event, so under load the
stream would otherwise cost the broker more messages than the events themselves.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher

STATE_STREAM = "avatar.sessions.state"
PARTITION_HEADER = "x-partition"
# A record of newline-separated snapshots (compact JSON has no raw newline); each names its
# partition. Single snapshots with PARTITION_HEADER are still read (older replicas).
BATCH_HEADER = "x-snapshots"
# Records in flight at once; more snapshots wait and join the next record.
FLUSHERS = 2
MAX_BATCH = 500
MARKER_HEADER = "x-read-marker"
# Ownership records: a draining owner says so before cancelling its consumer, and says
# "released" once its in-flight commands are done; the next owner waits for that.
OWNERSHIP_HEADER = "x-ownership"
WORKER_HEADER = "x-worker"
READ_TIMEOUT_S = 60.0


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
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def append(self, body: bytes) -> None:
        """Append one snapshot (its JSON names its partition); returns once confirmed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((body, future))
        if len(self._flushers) < FLUSHERS:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                body = b"\n".join(body for body, _ in batch)
                await self._append(body, {BATCH_HEADER: len(batch)})
            except Exception as exc:  # PublishFailed: every snapshot of the record failed
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

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

    async def read(self, since: datetime) -> list[bytes]:
        """The body of every record appended since `since`, oldest first.

        A stream has no "end": a marker is appended first, and the read stops when it comes by.
        """
        marker = uuid.uuid4().hex
        await self._publisher.publish_reply(
            AmqpEnvelope(body=b"", properties={"headers": {MARKER_HEADER: marker}}), STATE_STREAM
        )
        bodies: list[bytes] = []
        passed = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            if (message.headers or {}).get(MARKER_HEADER) == marker:
                passed.set()
            elif not passed.is_set():
                bodies.append(message.body)
            await message.ack()

        async with self._reading:
            channel = await self._reader()
            queue = await channel.get_queue(STATE_STREAM, ensure=False)
            tag = await queue.consume(on_message, arguments={"x-stream-offset": since})
            try:
                await asyncio.wait_for(passed.wait(), READ_TIMEOUT_S)
            finally:
                await queue.cancel(tag)
        return bodies
