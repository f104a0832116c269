"""Partition handover: snapshot sessions after each of their events, adopt a partition's
sessions when this replica becomes its owner, forget them when it stops being the owner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from operator import attrgetter

from contracts.common import SessionState
from contracts.topology import partition_queue
from worker.bus.publisher import Publisher, PublishFailed
from worker.bus.state_stream import StateStream
from worker.bus.state_tail import Mark, StateTail
from worker.handlers.context import Services
from worker.handlers.reconnect import reconnect_in_turn
from worker.providers.base import ProviderError
from worker.sessions.session import Session
from worker.sessions.snapshot import SessionSnapshot
from worker.settle import Settling

log = logging.getLogger(__name__)

DRAINING = "draining"
RELEASED = "released"
# Released, but some of its commands were requeued after the next owner became active.
REQUEUED = "released-requeued"
# How often a new owner looks again whether a draining previous owner is still there.
DRAIN_POLL_S = 1.0
OWNING = "owning"


class Handover:
    def __init__(
        self,
        services: Services,
        stream: StateStream,
        tail: StateTail,
        worker_id: str,
        *,
        refresh_s: float,
        drain_wait_s: float,
        prefetch: int | None = None,
    ) -> None:
        self._services = services
        self._stream = stream
        self._tail = tail
        self._worker_id = worker_id
        # This process, in ownership records: a restarted replica with the same id is another.
        self._instance = f"{worker_id}.{uuid.uuid4().hex[:8]}"
        self._refresh_s = refresh_s
        self._drain_wait_s = drain_wait_s
        self._adopted: set[int] = set()
        self._adopting: set[int] = set()
        self._locks: dict[int, asyncio.Lock] = {}
        # Bumped by every release, so an adoption that a release interrupted does not count.
        self._generation: dict[int, int] = {}
        # Partitions being handed over by this replica, and whether it is shutting down: no
        # adoption then, or two replicas would run the same sessions.
        self._leaving: set[int] = set()
        # Partitions being left whose commands went back to the queue meanwhile.
        self._requeued: set[int] = set()
        self._closing = False
        self._settling = Settling(prefetch=prefetch, spawn=services.spawn)

    @property
    def adopted(self) -> frozenset[int]:
        return frozenset(self._adopted)

    async def start(self) -> None:
        await self._tail.start(self._instance)

    async def close(self) -> None:
        await self._tail.close()

    async def save(self, session: Session) -> None:
        """Append the session's current snapshot (called after each of its events)."""
        if session.handed_over:
            # A straggler (a timer, a command past the drain grace) of a session another
            # replica now runs: its event would reuse a seq the new owner hands out too.
            raise PublishFailed(f"session {session.session_id} was handed over")
        snapshot = SessionSnapshot.of(session, self._worker_id)
        taken = time.monotonic()
        await self._stream.append(
            snapshot.model_dump_json().encode(),
            session.partition,
            session.session_id,
            snapshot.state.value,
        )
        # Only once confirmed: a failed append leaves the session first in the next refresh.
        session.saved_at = taken

    def _may_adopt(self, partition: int) -> bool:
        return not self._closing and partition not in self._leaving

    async def ensure(self, partition: int) -> bool:
        """Before the first command of a partition this replica did not own: take it over.
        False when this replica is letting the partition go: requeue the command."""
        # Through the lock even once adopted: asyncio.Lock lets no newcomer ahead of its
        # waiters, so a command that came after those waiting for the takeover cannot start
        # before them (a shortcut for adopted partitions let it).
        async with self._locks.setdefault(partition, asyncio.Lock()):
            if partition in self._adopted:
                return True
            if not self._may_adopt(partition):
                return False
            generation = self._generation.get(partition, 0)
            self._adopting.add(partition)
            try:
                mark = await self._adopt(partition)
            finally:
                self._adopting.discard(partition)
            if self._generation.get(partition, 0) != generation or not self._may_adopt(partition):
                self._drop_sessions(partition)  # released meanwhile: adopt again later
                return False
            self._adopted.add(partition)
            if mark is not None and mark.worker != self._instance:
                # Started once the sessions are in place, so the window is never used up by
                # the takeover itself; every command already waiting is held in it.
                self._settling.begin(partition, clean=mark.state == RELEASED)
            return True

    def requeued(self, partition: int) -> None:
        """A command of `partition` went back to the queue."""
        if partition in self._leaving:
            self._requeued.add(partition)

    def taking_part(self) -> set[int]:
        """The partitions owned or being taken over."""
        return self._adopted | self._adopting

    def stop_adopting(self) -> None:
        """Shutting down, consumers cancelled: adopt nothing more."""
        self._closing = True

    async def seal(self, partitions: Iterable[int]) -> None:
        """Before a graceful release: snapshots with nothing in flight, so the next owner
        re-publishes nothing."""
        registry = self._services.registry
        sessions = [s for p in partitions for s in list(registry.partition(p).values())]
        for session in sessions:
            # No estimated speech.finished may fire after its clean snapshot.
            session.cancel_speech_timers()
        await asyncio.gather(*(self._seal(session) for session in sessions))

    async def _seal(self, session: Session) -> None:
        with contextlib.suppress(PublishFailed):
            async with session.emit_lock:
                await self.save(session)

    async def admit(self, partition: int, sent_at: datetime, redelivered: bool) -> None:
        """Until a command may run; see `worker.settle`."""
        await self._settling.admit(partition, sent_at, redelivered)

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
            session.handed_over = True
            registry.remove(session_id)

    def release_all(self) -> None:
        for partition in list(self._adopted):
            self.release(partition)

    async def announce_draining(self, partitions: Iterable[int]) -> None:
        """Before cancelling consumers: the next owners will wait for `announce_released`."""
        for partition in sorted(partitions):
            self._leaving.add(partition)
            self._requeued.discard(partition)
            # Commands held after its own takeover go now, in order, so they are not left
            # to be cancelled in arrival order at the end of the drain.
            self._settling.release_now(partition)
            with contextlib.suppress(PublishFailed):
                await self._stream.mark(partition, DRAINING, self._instance)

    async def announce_released(self, partitions: Iterable[int], publisher: Publisher) -> None:
        """In-flight commands are done: the next owners may go ahead, and are woken up."""
        for partition in sorted(partitions):
            state = REQUEUED if partition in self._requeued else RELEASED
            with contextlib.suppress(PublishFailed):
                await self._stream.mark(partition, state, self._instance)
                await publisher.wake_partition(partition_queue(partition), self._worker_id)
            self._leaving.discard(partition)  # it may come back to us later
            self._requeued.discard(partition)

    async def _wait_for_release(self, partition: int) -> Mark | None:
        """The partition's latest ownership record, once a draining previous owner released it.

        Without this wait the next command of a session could run here while the previous
        owner still finishes the one before it. A crashed owner leaves no "draining" record:
        the broker requeued its unfinished commands, and nothing needs waiting for. The
        records before "released" (its last snapshots) are in by then: the stream is ordered.
        """
        await self._tail.sync()
        loop = asyncio.get_running_loop()
        # However long a live previous owner takes (a loaded one can take longer than its
        # grace to get there), not forever.
        deadline = loop.time() + 3 * self._drain_wait_s
        while await self._draining_elsewhere(self._tail.mark(partition)):
            left = deadline - loop.time()
            if left <= 0:
                log.warning("partition %d: previous owner still draining, going ahead", partition)
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, DRAIN_POLL_S)):
                    await self._tail.next_mark()
        return self._tail.mark(partition)

    async def _draining_elsewhere(self, mark: Mark | None) -> bool:
        """The latest ownership record is another replica's "draining", and it is alive (a
        replica that died draining left its commands to the broker, nothing to wait for)."""
        if mark is None or mark.state != DRAINING or mark.worker == self._instance:
            return False
        return await self._tail.alive(mark.worker)

    async def _adopt(self, partition: int) -> Mark | None:
        """Restore the partition's live sessions; the latest ownership record before that."""
        began = time.monotonic()
        mark = await self._wait_for_release(partition)
        waited_s = time.monotonic() - began
        snapshots = [
            SessionSnapshot.model_validate_json(b) for b in self._tail.snapshots(partition)
        ]
        restored: list[Session] = []
        for snapshot in snapshots:
            if self._services.registry.get(snapshot.session_id) is not None:
                continue  # ours already, and fresher than any snapshot
            if snapshot.state is SessionState.STOPPED:
                continue
            if snapshot.state is SessionState.CREATING and snapshot.heygen_session_id is None:
                # Cut short during streaming.new: the create is redelivered and runs again, and
                # the provider session the first try may have made is hunted down.
                if self._services.orphans is not None:
                    self._services.orphans.suspect(snapshot.written_at)
                continue
            if snapshot.state is SessionState.STOPPING:
                await self._finish_stop(snapshot)
                continue
            session = snapshot.restore()
            session.last_activity = 0.0  # unknown since the snapshot: keep it alive at once
            self._services.registry.add(session, force=True)
            self._services.watch(session)
            restored.append(session)
        await asyncio.gather(*(self._reattach(s) for s in restored))
        # Events the dead replica may not have got out: again, same id and seq. Any later
        # event of the session publishes its outbox first anyway.
        await asyncio.gather(*(self._services.emitter.flush(s) for s in restored))
        if self._may_adopt(partition):
            with contextlib.suppress(PublishFailed):
                # Lets the next owner tell a hand-over (released) from a crash (still owning).
                await self._stream.mark(partition, OWNING, self._instance)
        log.info(
            "%s took over partition %d: %d live sessions in %.2f s (%.2f s waiting for the "
            "stream and the previous owner, whose last record was %s) seqs %s",
            self._worker_id,
            partition,
            len(restored),
            time.monotonic() - began,
            waited_s,
            mark,
            {s.session_id: (s.seq, s.writer) for s in snapshots},
        )
        return mark

    async def _reattach(self, session: Session) -> None:
        """Join the worker's own link to a taken-over session again (LiveAvatar's room); the
        session is reconnected when that fails (the pool's keep-alive would find it anyway)."""
        if session.resume is None or session.heygen_session_id is None or not session.live:
            return
        try:
            await self._services.provider(session).start(
                session.heygen_session_id, resume=session.resume
            )
        except ProviderError as exc:
            log.warning("re-attaching %s after takeover failed: %s", session.session_id, exc)
            why = f"re-attach after takeover: {exc}"
            self._services.spawn(reconnect_in_turn(self._services, session, why))

    async def _finish_stop(self, snapshot: SessionSnapshot) -> None:
        """The previous owner died while stopping it: make sure the provider stops billing."""
        provider = self._services.providers.get(snapshot.provider)
        if snapshot.heygen_session_id is not None and provider is not None:
            with contextlib.suppress(ProviderError):
                await provider.stop(snapshot.heygen_session_id)

    async def refresh_forever(self) -> None:
        """Keep every live session inside the replay window of the stream.

        Each period re-saves the live sessions oldest snapshot first, spread evenly over it:
        all at once, 10,000 sessions took 72 % of a core over a 5 s window, and the commands
        of that moment waited behind them.
        """
        while True:
            began = time.monotonic()
            live = sorted(
                (s for s in self._services.registry if s.live), key=attrgetter("saved_at")
            )
            step = self._refresh_s / max(len(live), 1)
            for index, session in enumerate(live, start=1):
                await asyncio.sleep(began + index * step - time.monotonic())
                if session.live:
                    # A failed refresh is retried at the next one; the task must live on.
                    with contextlib.suppress(PublishFailed):
                        async with session.emit_lock:
                            await self.save(session)
            await asyncio.sleep(began + self._refresh_s - time.monotonic())
