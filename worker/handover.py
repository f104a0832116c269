"""Partition handover: snapshot sessions after each of their events, adopt a partition's
sessions when this replica becomes its owner, forget them when it stops being the owner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from contracts.common import SessionState
from contracts.topology import partition_queue
from worker.bus.publisher import Publisher, PublishFailed
from worker.bus.state_stream import Record, StateStream
from worker.handlers.context import Services
from worker.heygen.errors import HeyGenError
from worker.sessions.session import Session
from worker.sessions.snapshot import SessionSnapshot

log = logging.getLogger(__name__)

DRAINING = "draining"
RELEASED = "released"
OWNING = "owning"
# How long commands of a partition taken over from a crashed owner wait to be put in order.
SETTLE_S = 1.0


class Handover:
    def __init__(
        self,
        services: Services,
        stream: StateStream,
        worker_id: str,
        *,
        refresh_s: float,
        drain_wait_s: float,
    ) -> None:
        self._services = services
        self._stream = stream
        self._worker_id = worker_id
        self._refresh_s = refresh_s
        self._drain_wait_s = drain_wait_s
        self._adopted: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        # Bumped by every release, so an adoption that a release interrupted does not count.
        self._generation: dict[int, int] = {}
        # Partitions taken over from a crashed owner: deliveries wait, then go in sent_at order.
        self._settling: dict[int, list[tuple[datetime, asyncio.Future[None]]]] = {}

    @property
    def adopted(self) -> frozenset[int]:
        return frozenset(self._adopted)

    async def save(self, session: Session) -> None:
        """Append the session's current snapshot (called after each of its events)."""
        snapshot = SessionSnapshot.of(session, self._worker_id)
        await self._stream.append(session.partition, snapshot.model_dump_json().encode())

    async def ensure(self, partition: int) -> None:
        """Before the first command of a partition this replica did not own: take it over."""
        if partition in self._adopted:
            return
        async with self._locks.setdefault(partition, asyncio.Lock()):
            if partition not in self._adopted:
                generation = self._generation.get(partition, 0)
                await self._adopt(partition)
                if self._generation.get(partition, 0) == generation:
                    self._adopted.add(partition)
                else:
                    self._drop_sessions(partition)  # released meanwhile: adopt again later

    async def seal(self, partitions: Iterable[int]) -> None:
        """Before a graceful release: snapshots with nothing in flight, so the next owner
        re-publishes nothing."""
        for partition in partitions:
            for session in list(self._services.registry.partition(partition).values()):
                # No estimated speech.finished may fire after its clean snapshot.
                session.cancel_speech_timers()
                with contextlib.suppress(PublishFailed):
                    async with session.emit_lock:
                        await self.save(session)

    async def admit(self, partition: int, sent_at: datetime) -> None:
        """Hold a command of a partition taken over from a crashed owner until the settle
        window ends, then let commands go in the order producers sent them.

        The broker activates the next consumer and hands it newer messages before it has put
        back the dead owner's unacknowledged ones; sorting by `sent_at` restores each
        session's order (one producer per session keeps a monotonic clock).
        """
        waiting = self._settling.get(partition)
        if waiting is None:
            return
        future = asyncio.get_running_loop().create_future()
        waiting.append((sent_at, future))
        await future

    async def _settle(self, partition: int) -> None:
        await asyncio.sleep(SETTLE_S)
        waiting = sorted(self._settling.pop(partition, []), key=lambda item: item[0])
        log.info("partition %d settled: %d commands held", partition, len(waiting))
        for _, future in waiting:
            if not future.done():
                future.set_result(None)

    def release(self, partition: int) -> None:
        """Another replica owns it now: drop its sessions here without stopping them."""
        log.info("releasing partition %d (adopted: %s)", partition, partition in self._adopted)
        self._adopted.discard(partition)
        self._generation[partition] = self._generation.get(partition, 0) + 1
        self._drop_sessions(partition)

    def _drop_sessions(self, partition: int) -> None:
        registry = self._services.registry
        for session_id, session in list(registry.partition(partition).items()):
            session.cancel_speech_timers()
            registry.remove(session_id)

    def release_all(self) -> None:
        for partition in list(self._adopted):
            self.release(partition)

    async def announce_draining(self, partitions: Iterable[int]) -> None:
        """Before cancelling consumers: the next owners will wait for `announce_released`."""
        for partition in sorted(partitions):
            with contextlib.suppress(PublishFailed):
                await self._stream.mark(partition, DRAINING, self._worker_id)

    async def announce_released(self, partitions: Iterable[int], publisher: Publisher) -> None:
        """In-flight commands are done: the next owners may go ahead, and are woken up."""
        for partition in sorted(partitions):
            with contextlib.suppress(PublishFailed):
                await self._stream.mark(partition, RELEASED, self._worker_id)
                await publisher.wake_partition(partition_queue(partition), self._worker_id)

    async def _read_after_release(self, partition: int) -> list[Record]:
        """The partition's records, once a draining previous owner has released it.

        Without this wait the next command of a session could run here while the previous
        owner still finishes the one before it. A crashed owner leaves no "draining" record:
        the broker requeued its unfinished commands, and nothing needs waiting for.
        """
        # Every live session is re-snapshotted at least every refresh, so two of them is enough.
        since = datetime.now(UTC) - timedelta(seconds=2 * self._refresh_s + 60)
        return await self._stream.read(
            partition, since, keep_reading=self._draining_elsewhere, wait_s=self._drain_wait_s
        )

    def _draining_elsewhere(self, records: list[Record]) -> bool:
        """The latest ownership record says another replica is still draining, recently."""
        marks = [(r.ownership, r.timestamp) for r in records if r.ownership is not None]
        if not marks:
            return False
        (state, worker), at = marks[-1]
        fresh = at is not None and datetime.now(UTC) - at < timedelta(seconds=self._drain_wait_s)
        return state == DRAINING and worker != self._worker_id and fresh

    async def _adopt(self, partition: int) -> None:
        latest: dict[str, SessionSnapshot] = {}
        began = time.monotonic()
        records = await self._read_after_release(partition)
        read_s = time.monotonic() - began
        marks = [r.ownership for r in records if r.ownership is not None]
        if marks and marks[-1][1] != self._worker_id:
            # Taken from another replica: whatever it did not finish (a crash, or requeued at
            # the end of its drain) comes back after newer commands the broker gave us.
            self._settling[partition] = []
            self._services.spawn(self._settle(partition))
        for record in records:
            if record.ownership is None and record.body:
                snapshot = SessionSnapshot.model_validate_json(record.body)
                latest[snapshot.session_id] = snapshot  # the stream is in append order
        adopted = 0
        for snapshot in latest.values():
            if self._services.registry.get(snapshot.session_id) is not None:
                continue  # ours already, and fresher than any snapshot
            if snapshot.state is SessionState.STOPPED:
                continue
            if snapshot.state is SessionState.CREATING and snapshot.heygen_session_id is None:
                # Cut short during streaming.new: the create is redelivered and runs again, and
                # the HeyGen session the first try may have made is hunted down.
                if self._services.orphans is not None:
                    self._services.orphans.suspect(snapshot.written_at)
                continue
            if snapshot.state is SessionState.STOPPING:
                await self._finish_stop(snapshot)
                continue
            session = snapshot.restore()
            # An event the dead replica may not have got out: again, same id and seq.
            await self._services.emitter.flush(session)
            session.last_activity = 0.0  # unknown since the snapshot: keep it alive at once
            self._services.registry.add(session, force=True)
            self._services.watch(session)
            adopted += 1
        with contextlib.suppress(PublishFailed):
            # Lets the next owner tell a hand-over (released) from a crash (still owning).
            await self._stream.mark(partition, OWNING, self._worker_id)
        log.info(
            "%s took over partition %d: %d live sessions (read %d records in %.2f s, "
            "adopted in %.2f s, last mark %s) seqs %s",
            self._worker_id,
            partition,
            adopted,
            len(records),
            read_s,
            time.monotonic() - began,
            marks[-1] if marks else None,
            {s.session_id: (s.seq, s.writer) for s in latest.values()},
        )

    async def _finish_stop(self, snapshot: SessionSnapshot) -> None:
        """The previous owner died while stopping it: make sure HeyGen stops billing."""
        if snapshot.heygen_session_id is not None:
            with contextlib.suppress(HeyGenError):
                await self._services.heygen.stop(snapshot.heygen_session_id)

    async def refresh_forever(self) -> None:
        """Keep every live session inside the replay window of the stream."""
        while True:
            await asyncio.sleep(self._refresh_s)
            for session in self._services.registry:
                if session.live:
                    async with session.emit_lock:
                        await self.save(session)
