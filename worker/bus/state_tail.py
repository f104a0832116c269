"""Follows the state stream for as long as the replica runs: the latest snapshot of each session
and the latest ownership record of each partition, ready when a partition is taken over.

Replaying the stream's window at each takeover cost seconds on a loaded replica (thousands of
records, all partitions, read again for every partition taken over) while the sessions waited
without keep-alives. Following it all along spreads that work out, and a takeover only waits
for one marker to come by.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractRobustChannel,
)
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from contracts.codec import AmqpEnvelope
from contracts.common import SessionState
from worker.bus.publisher import Publisher
from worker.bus.state_stream import (
    BATCH_HEADER,
    KEYS_HEADER,
    MARKER_HEADER,
    OWNERSHIP_HEADER,
    PARTITION_HEADER,
    READ_TIMEOUT_S,
    STATE_STREAM,
    WORKER_HEADER,
)

log = logging.getLogger(__name__)

# Acks are batched: one frame per record was a large part of the cost of following.
ACK_EVERY = 100
# One exclusive queue per running replica: the broker deletes it when the replica's connection
# goes, and a passive declare from another connection answers 405 RESOURCE_LOCKED while it
# lives and 404 NOT_FOUND once it is gone. (RabbitMQ 4.3 refuses transient queues that are
# not exclusive.) Either answer closes the probing channel, which is reopened per probe.
PRESENCE_PREFIX = "avatar.presence."
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Mark:
    state: str
    worker: str
    at: datetime | None


@dataclass(frozen=True)
class Snapshot:
    body: bytes
    at: datetime | None


class StateTail:
    def __init__(
        self, connection: AbstractConnection, publisher: Publisher, *, window: timedelta
    ) -> None:
        self._connection = connection
        self._publisher = publisher
        self._window = window
        self._channel: AbstractChannel | None = None
        self._snapshots: dict[int, dict[str, Snapshot]] = {}
        # Session -> the partition of its latest snapshot (its home).
        self._homes: dict[str, int] = {}
        self._marks: dict[int, Mark] = {}
        self._markers: dict[str, asyncio.Event] = {}
        # Set and replaced at every ownership record, to wake whoever waits for one.
        self._marked = asyncio.Event()
        self._unacked = 0
        self._probing = asyncio.Lock()

    async def start(self, instance: str) -> None:
        """Follow from the start of the window (what a replay would have read), and say that
        `instance` is alive for as long as this connection lives."""
        self._channel = await self._connection.channel(publisher_confirms=False)
        # Declared and consumed on the robust channel: again after a reconnection.
        await self._channel.declare_queue(PRESENCE_PREFIX + instance, exclusive=True)
        await self._channel.set_qos(prefetch_count=1000)  # streams need a prefetch
        # Declared (passively) so the robust channel consumes again after a reconnection; it
        # then reads the window again, in order, which leaves the same latest records.
        queue = await self._channel.declare_queue(STATE_STREAM, passive=True)
        since = datetime.now(UTC) - self._window
        await queue.consume(self._on_message, arguments={"x-stream-offset": since})

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def sync(self) -> None:
        """Until every record appended before now has been taken in."""
        marker = uuid.uuid4().hex
        seen = self._markers[marker] = asyncio.Event()
        try:
            await self._publisher.append(
                AmqpEnvelope(body=b"", properties={"headers": {MARKER_HEADER: marker}}),
                STATE_STREAM,
            )
            await asyncio.wait_for(seen.wait(), READ_TIMEOUT_S)
        finally:
            self._markers.pop(marker, None)

    async def alive(self, instance: str) -> bool:
        """Whether the replica `instance` still has its connection (True if unsure)."""
        # One probe at a time: channels opened concurrently on a busy connection broke it.
        async with self._probing:
            try:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    return await self._alive(instance)
            except ChannelLockedResource:
                return True  # held exclusively by its replica's live connection
            except ChannelNotFoundEntity:
                return False
            except Exception as exc:  # timeout, connection trouble: keep waiting for it
                log.warning("cannot tell whether %s is alive: %r", instance, exc)
                return True

    async def _alive(self, instance: str) -> bool:
        # Every answer closes the channel (405 or 404), so each probe opens its own.
        probe = await self._connection.channel(publisher_confirms=False)
        try:
            name = PRESENCE_PREFIX + instance
            if isinstance(probe, AbstractRobustChannel):
                # Not restored after a reconnection: it may well not exist by then.
                await probe.declare_queue(name, passive=True, robust=False)
            else:
                await probe.declare_queue(name, passive=True)
        finally:
            if not probe.is_closed:
                await probe.close()
        return True  # our own replica: the exclusive queue is this connection's

    def mark(self, partition: int) -> Mark | None:
        return self._marks.get(partition)

    async def next_mark(self) -> None:
        """Until any ownership record comes by."""
        await self._marked.wait()

    def snapshots(self, partition: int) -> list[bytes]:
        """The latest snapshot of each session of `partition` written inside the window."""
        since = datetime.now(UTC) - self._window
        return [
            s.body
            for s in self._snapshots.get(partition, {}).values()
            if s.at is None or s.at >= since
        ]

    def names(self, text: str) -> bool:
        """Whether the latest snapshot of any session of any partition contains `text`."""
        needle = text.encode()
        return any(
            needle in snapshot.body
            for sessions in self._snapshots.values()
            for snapshot in sessions.values()
        )

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            self._take(message)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping an unreadable state record: %r", exc)
        self._unacked += 1
        if self._unacked >= ACK_EVERY or self._markers:
            self._unacked = 0
            await message.ack(multiple=True)

    def _take(self, message: AbstractIncomingMessage) -> None:
        headers = message.headers or {}
        marker = headers.get(MARKER_HEADER)
        if marker is not None:
            seen = self._markers.get(str(marker))
            if seen is not None:
                seen.set()
            return
        at = _aware(message.timestamp)
        if BATCH_HEADER in headers:
            bodies = message.body.split(b"\n")
            keys = headers.get(KEYS_HEADER)
            if isinstance(keys, bytes):
                keys = keys.decode()
            if not isinstance(keys, str):  # written by a replica that sent no keys
                for body in bodies:
                    self._take_snapshot(body, at)
                return
            for key, body in zip(keys.split("\n"), bodies, strict=True):
                number, session_id, state = key.split(" ")
                self._keep(int(number), session_id, state, Snapshot(body, at))
            return
        partition = headers.get(PARTITION_HEADER)
        if not isinstance(partition, int):
            return
        ownership = headers.get(OWNERSHIP_HEADER)
        if ownership:
            self._marks[partition] = Mark(str(ownership), str(headers.get(WORKER_HEADER)), at)
            self._marked.set()
            self._marked = asyncio.Event()
            return
        self._take_snapshot(message.body, at)

    def _take_snapshot(self, body: bytes, at: datetime | None) -> None:
        fields = json.loads(body)
        self._keep(fields["partition"], fields["session_id"], fields["state"], Snapshot(body, at))

    def home(self, session_id: str) -> int | None:
        """The partition of the session's latest snapshot; None once stopped or never seen."""
        return self._homes.get(session_id)

    def _keep(self, partition: int, session_id: str, state: str, snapshot: Snapshot) -> None:
        sessions = self._snapshots.setdefault(partition, {})
        if state == SessionState.STOPPED.value:
            sessions.pop(session_id, None)  # nothing left to adopt
            self._homes.pop(session_id, None)
        else:
            sessions[session_id] = snapshot
            self._homes[session_id] = partition


def _aware(at: datetime | None) -> datetime | None:
    if at is None or at.tzinfo is not None:
        return at
    return at.replace(tzinfo=UTC)
