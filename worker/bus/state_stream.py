"""Session snapshots kept in RabbitMQ itself: a stream every replica appends to and follows
(`state_tail.py`), so that the new owner of a partition can take its sessions over.

Snapshots are group-committed: those appended while earlier ones wait for their confirm go out
together, one per line of one record. A snapshot is written before each event, so under load the
stream would otherwise cost the broker more messages than the events themselves.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aio_pika

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher

STATE_STREAM = "avatar.sessions.state"
PARTITION_HEADER = "x-partition"
# A record of newline-separated snapshots (compact JSON has no raw newline); each names its
# partition. Single snapshots with PARTITION_HEADER are still read (older replicas).
BATCH_HEADER = "x-snapshots"
# Per line of a batch, "<partition> <session_id> <state>": followers file the snapshot without
# parsing its JSON (which cost more than writing it). Records without it are parsed.
KEYS_HEADER = "x-snapshot-keys"
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
    """Appends to the state stream (followed by `StateTail`)."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher
        self._pending: list[tuple[bytes, str, asyncio.Future[None]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def append(self, body: bytes, partition: int, session_id: str, state: str) -> None:
        """Append one snapshot of `session_id`; returns once confirmed."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((body, f"{partition} {session_id} {state}", future))
        if len(self._flushers) < FLUSHERS:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                body = b"\n".join(body for body, _, _ in batch)
                keys = "\n".join(key for _, key, _ in batch)
                await self._append(body, {BATCH_HEADER: len(batch), KEYS_HEADER: keys})
            except Exception as exc:  # PublishFailed: every snapshot of the record failed
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, _, future in batch:
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
        await self._publisher.append(envelope, STATE_STREAM)
