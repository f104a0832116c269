"""The commands this process holds: the ones in flight (their partition, their task, how far they
got) and the last ones it finished. Dedupe reads it; a drain or a handover cuts through it."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager


class RecentIds:
    """The idempotency window: the last `capacity` command ids this process finished."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._ids

    def add(self, command_id: str) -> None:
        self._ids[command_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)


class Ledger:
    def __init__(self, dedup_capacity: int) -> None:
        self.finished = RecentIds(dedup_capacity)
        self._tasks: dict[str, asyncio.Task[object] | None] = {}
        self._partition: dict[str, int] = {}
        # In flight and in their session's mailbox; of those, the ones whose turn came.
        self._queued: set[str] = set()
        self._started: set[str] = set()
        # Partitions whose drain grace is over (or all of them): nothing more starts there.
        self._stopping: set[int] = set()
        self._stop_all = False

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    @contextmanager
    def in_flight(self, command_id: str, partition: int) -> Iterator[None]:
        self._tasks[command_id] = asyncio.current_task()
        self._partition[command_id] = partition
        try:
            yield
        finally:
            del self._tasks[command_id], self._partition[command_id]
            self._started.discard(command_id)
            self._queued.discard(command_id)

    def queued(self, command_id: str) -> None:
        self._queued.add(command_id)

    def start(self, command_id: str, partition: int) -> bool:
        """Its turn came: False when the grace of its partition is over (it must go back)."""
        if self._stop_all or partition in self._stopping:
            return False
        self._started.add(command_id)
        return True

    def cut_short(self, partition: int | None) -> int:
        """The grace is over: requeue the commands of `partition` (or all) in their
        sessions' order. Running ones (and any held before their mailbox) are cancelled;
        the ones waiting for their turn requeue themselves when it comes, right after the
        older command of their session: cancelled at once they would go back to the queue
        ahead of it. A drain should not get here: RabbitMQ puts requeued commands behind
        newer ones already queued, and the next owner may then run those first."""
        if partition is None:
            self._stop_all = True
        else:
            self._stopping.add(partition)
        tasks = [
            task
            for command_id, task in self._tasks.items()
            if task is not None
            and not task.done()
            and partition in (None, self._partition.get(command_id))
            and (command_id in self._started or command_id not in self._queued)
        ]
        for task in tasks:
            task.cancel()
        return len(tasks)

    def resume(self, partition: int) -> None:
        """`partition` was handed over: it may come back later."""
        self._stopping.discard(partition)
