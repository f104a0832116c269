"""From a delivery to a disposition: decode, deduplicate, check the deadline, run the handler
in the session's mailbox, and turn every outcome into events and an explicit ack decision."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from contracts.codec import DecodeError, decode_command
from contracts.commands import COMMAND_TYPES, Command
from contracts.common import RejectCode
from contracts.events import CommandFailed, CommandRejected
from contracts.topology import partition_queue
from worker.bus.delivery import (
    ACK,
    FORWARDED_HEADER,
    FORWARDED_USER_HEADER,
    HANDOVER_HEADER,
    REQUEUE,
    Delivery,
    Disposition,
    dead_letter,
)
from worker.bus.publisher import PublishFailed
from worker.handlers import CONTROL_LANES, HANDLERS
from worker.handlers.context import CommandContext, Rejected, Services
from worker.observability.logs import log_context
from worker.observability.tracing import consumer_span
from worker.providers.base import ProviderError
from worker.sessions.mailbox import Preempted

log = logging.getLogger(__name__)

# Puts a command's body, properties and headers into a queue, confirmed.
Forward = Callable[[bytes, Mapping[str, Any], Mapping[str, Any], str], Awaitable[None]]


class _HandedOver(Exception):
    """The command's turn came after the drain grace of its partition ended."""


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


class Dispatcher:
    def __init__(
        self,
        services: Services,
        *,
        max_message_bytes: int,
        dedup_capacity: int,
        before_partition: Callable[[int], Awaitable[bool]] | None = None,
        admit: Callable[[int, datetime, bool], Awaitable[None]] | None = None,
        on_requeue: Callable[[int], None] | None = None,
        home_of: Callable[[str], int | None] | None = None,
        forward: Forward | None = None,
        own_user: str | None = None,
    ) -> None:
        self._on_requeue = on_requeue
        # Where a session not held here lives (the state tail), how a command is put into
        # another partition queue, and this worker's broker user (it vouches for forwards).
        self._home_of = home_of
        self._forward = forward
        self._own_user = own_user
        self._services = services
        self._before_partition = before_partition
        self._admit = admit
        self._max_message_bytes = max_message_bytes
        self._mailboxes = services.mailboxes
        self._finished = RecentIds(dedup_capacity)
        self._in_flight: dict[str, asyncio.Task[object] | None] = {}
        self._in_flight_partition: dict[str, int] = {}
        # Deliveries per partition from the moment they reach us to their disposition,
        # whatever path they take (a duplicate's flush, a takeover, a held command).
        self._handling: Counter[int] = Counter()
        # In flight and in their session's mailbox; of those, the ones whose handler runs.
        self._queued: set[str] = set()
        self._started: set[str] = set()
        # Partitions whose drain grace is over (or all of them): nothing more starts there.
        self._stopping: set[int] = set()
        self._stop_all = False
        self._settled = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_partition_idle(self, partition: int) -> None:
        """Until no delivery of `partition` is being handled."""
        async with self._settled:
            await self._settled.wait_for(lambda: not self._handling[partition])

    async def finish_partition(self, partition: int, grace: float) -> None:
        """Hand `partition` over (its consumer cancelled): its commands get `grace` to finish,
        then the rest are requeued (see `_cut_short`), so none runs here afterwards."""
        if await self._partition_idle(partition, grace):
            return
        try:
            cancelled = self._cut_short(partition)
            log.warning("handing partition %d over: cancelled %d", partition, cancelled)
            await self._partition_idle(partition, 5)
        finally:
            self._stopping.discard(partition)  # it may come back later

    async def _partition_idle(self, partition: int, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.wait_partition_idle(partition)
        except TimeoutError:
            return False
        return True

    def cancel_in_flight(self) -> int:
        """At the end of the drain grace: cancelled commands are requeued, never dropped."""
        return self._cut_short(None)

    def _cut_short(self, partition: int | None) -> int:
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
            for command_id, task in self._in_flight.items()
            if task is not None
            and not task.done()
            and partition in (None, self._in_flight_partition.get(command_id))
            and (command_id in self._started or command_id not in self._queued)
        ]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def handle(self, delivery: Delivery) -> Disposition:
        self._handling[delivery.partition] += 1
        self._idle.clear()
        try:
            disposition = await self._handle(delivery)
            if disposition is REQUEUE and self._on_requeue is not None:
                self._on_requeue(delivery.partition)
            return disposition
        finally:
            self._handling[delivery.partition] -= 1
            if not any(self._handling.values()):
                self._idle.set()
            async with self._settled:
                self._settled.notify_all()

    async def _handle(self, delivery: Delivery) -> Disposition:
        metrics = self._services.metrics
        received = time.monotonic()
        if HANDOVER_HEADER in delivery.headers:
            if self._before_partition is not None and not await self._before_partition(
                delivery.partition
            ):
                return REQUEUE  # for the replica that takes the partition
            return ACK
        try:
            command = decode_command(
                delivery.body,
                content_type=delivery.content_type,
                message_type=delivery.message_type,
                max_bytes=self._max_message_bytes,
            )
        except DecodeError as err:
            return await self._poison(delivery, err)
        kind = command.type
        metrics.child(metrics.commands_received_total, kind).inc()
        delay = (datetime.now(UTC) - command.sent_at).total_seconds()
        metrics.child(metrics.command_queue_delay_seconds, kind).observe(max(0.0, delay))
        if self._before_partition is not None and not await self._before_partition(
            delivery.partition
        ):
            # A partition new to this replica has its sessions taken over first; one this
            # replica is letting go is not taken over again: the command goes back.
            return REQUEUE
        home = self._home(command, delivery)
        if home is not None:
            return await self._send_home(command, delivery, home)
        if self._was_cut_short(command):
            return await self._report_cut_short(command)
        if self._seen(command):
            session = self._services.registry.get(_session_id(command) or "")
            if session is not None:
                try:
                    # Its answer may be the event whose publish was not confirmed.
                    await self._services.emitter.flush(session)
                except PublishFailed:
                    return REQUEUE
            metrics.child(metrics.commands_total, kind, "duplicate").inc()
            return ACK
        self._in_flight[command.command_id] = asyncio.current_task()
        self._in_flight_partition[command.command_id] = delivery.partition
        metrics.commands_in_flight.inc()
        try:
            # Counted in flight while held, so a drain waits for it instead of releasing.
            if not await self._admitted(delivery, command):
                metrics.child(metrics.commands_total, kind, "requeued").inc()
                return REQUEUE
            with (
                log_context(session_id=_session_id(command), command_id=command.command_id),
                consumer_span(kind, delivery.headers, command.command_id, _session_id(command)),
            ):
                outcome, disposition = await self._execute(command, delivery)
                log.log(
                    logging.DEBUG if outcome == "ok" else logging.INFO,
                    "%s %s in %.1f ms (partition %d%s)",
                    kind,
                    outcome,
                    (time.monotonic() - received) * 1000,
                    delivery.partition,
                    ", redelivered" if delivery.redelivered else "",
                )
        finally:
            del self._in_flight[command.command_id]
            del self._in_flight_partition[command.command_id]
            self._started.discard(command.command_id)
            self._queued.discard(command.command_id)
            metrics.commands_in_flight.dec()
        if disposition is not REQUEUE:
            self._finished.add(command.command_id)
        metrics.child(metrics.commands_total, kind, outcome).inc()
        metrics.child(metrics.command_duration_seconds, kind).observe(time.monotonic() - received)
        return disposition

    def _home(self, command: Command, delivery: Delivery) -> int | None:
        """The partition the command's session lives in, when it is not the one it came on.

        RabbitMQ rebuilds the consistent-hash ring when it restarts, in the order it recovers
        the bindings: a session's commands can then arrive on another partition than the one
        its create landed on, whose owner does not know the session.
        """
        session_id = _session_id(command)
        if session_id is None or self._forward is None or FORWARDED_HEADER in delivery.headers:
            return None  # forwarded once already: handled wherever it landed
        session = self._services.registry.get(session_id)
        if session is not None:
            home: int | None = session.partition
        else:
            home = self._home_of(session_id) if self._home_of is not None else None
        return home if home is not None and home != delivery.partition else None

    async def _send_home(self, command: Command, delivery: Delivery, home: int) -> Disposition:
        """Into the home partition's queue, in the order the session's commands came."""
        log.info(
            "forwarding %s %s for session %s from partition %d to its home partition %d",
            command.type,
            command.command_id,
            _session_id(command),
            delivery.partition,
            home,
        )
        properties = {**delivery.republished(), "user_id": self._own_user}
        headers = {
            **delivery.headers,
            FORWARDED_HEADER: delivery.partition,
            FORWARDED_USER_HEADER: delivery.user_id or "",
        }

        forward = self._forward
        assert forward is not None

        async def job() -> None:
            await forward(delivery.body, properties, headers, partition_queue(home))

        try:
            await self._mailboxes.run(_session_id(command) or "", "forward", job)
        except PublishFailed:
            return REQUEUE
        metrics = self._services.metrics
        metrics.child(metrics.commands_total, command.type, "forwarded").inc()
        return ACK

    def _principal(self, delivery: Delivery) -> str | None:
        """The sender: for a command forwarded by a replica, the one who sent it first."""
        if FORWARDED_HEADER in delivery.headers and delivery.user_id == self._own_user:
            sender = delivery.headers.get(FORWARDED_USER_HEADER)
            if isinstance(sender, bytes):
                sender = sender.decode()
            return str(sender) if sender else None
        return delivery.user_id

    async def _admitted(self, delivery: Delivery, command: Command) -> bool:
        """Held while its partition settles after a takeover; False: cut short, requeue it."""
        if self._admit is None:
            return True
        try:
            await self._admit(delivery.partition, command.sent_at, delivery.redelivered)
            return True
        except asyncio.CancelledError:
            return False  # the drain grace ended while it was held: it never ran

    def _seen(self, command: Command) -> bool:
        """Finished or running here, or run for its session by a previous owner."""
        command_id = command.command_id
        if command_id in self._finished or command_id in self._in_flight:
            return True
        session_id = _session_id(command)
        session = self._services.registry.get(session_id) if session_id else None
        return session is not None and command_id in session.recent_commands

    def _was_cut_short(self, command: Command) -> bool:
        """A previous owner started it (HeyGen may have acted) but died before any event."""
        session_id = _session_id(command)
        session = self._services.registry.get(session_id) if session_id else None
        return (
            session is not None
            and session.pending_command == command.command_id
            and command.command_id not in self._in_flight
        )

    async def _report_cut_short(self, command: Command) -> Disposition:
        session = self._services.registry.get(_session_id(command) or "")
        assert session is not None
        try:
            await self._report(
                command,
                CommandFailed,
                code="interrupted",
                message="the replica running it stopped mid-call; not repeated, as HeyGen may "
                "already have acted on it",
                retryable=False,
            )
        except PublishFailed:
            return REQUEUE
        metrics = self._services.metrics
        metrics.child(metrics.commands_total, command.type, "failed").inc()
        self._finished.add(command.command_id)
        return ACK

    async def _execute(self, command: Command, delivery: Delivery) -> tuple[str, Disposition]:
        ctx = CommandContext(
            command=command,
            principal=self._principal(delivery),
            partition=delivery.partition,
            deadline=_monotonic(command.deadline),
            services=self._services,
        )
        try:
            await self._run_in_mailbox(command, ctx)
        except Rejected as exc:
            await self._report(command, CommandRejected, code=exc.code, message=exc.message)
            return "rejected", ACK
        except Preempted as exc:
            await self._report(
                command, CommandRejected, code=RejectCode.CANCELLED, message=exc.reason
            )
            return "rejected", ACK
        except ProviderError as exc:
            await self._report(
                command,
                CommandFailed,
                code=exc.kind,
                message=exc.message,
                retryable=exc.retryable,
                heygen_code=exc.code,
            )
            return "failed", ACK
        except _HandedOver:
            return "requeued", REQUEUE
        except (PublishFailed, asyncio.CancelledError) as exc:
            # Events not confirmed, or shutdown cut the work short: the broker redelivers it.
            log.warning("requeueing %s: %r", command.type, exc)
            return "requeued", REQUEUE
        except Exception as exc:
            log.exception("handler for %s crashed", command.type)
            await self._report(
                command, CommandFailed, code="internal", message=repr(exc)[:500], retryable=False
            )
            return "failed", dead_letter("handler_error", repr(exc))
        return "ok", ACK

    async def _run_in_mailbox(self, command: Command, ctx: CommandContext) -> None:
        handler = HANDLERS[command.type]

        async def job() -> None:
            if self._stop_all or ctx.partition in self._stopping:
                raise _HandedOver
            self._started.add(command.command_id)
            if ctx.principal is None and self._services.policy.require_user_id:
                raise Rejected(RejectCode.FORBIDDEN, "commands must carry an AMQP user_id")
            # Checked when the command's turn comes: late real-time speech is worse than none.
            if command.deadline is not None and command.deadline <= datetime.now(UTC):
                raise Rejected(
                    RejectCode.EXPIRED, f"deadline {command.deadline.isoformat()} passed"
                )
            await handler(command, ctx)

        key = _session_id(command)
        self._queued.add(command.command_id)
        if key is None:
            await job()
        elif command.type in CONTROL_LANES:
            preempts, overtakes = CONTROL_LANES[command.type]
            reason = f"dropped by {command.type} {command.command_id}"
            await self._mailboxes.run_control(
                key, command.type, job, preempts=preempts, overtakes=overtakes, reason=reason
            )
        else:
            await self._mailboxes.run(key, command.type, job)

    async def _report(
        self, command: Command, cls: type[CommandRejected | CommandFailed], **fields: object
    ) -> None:
        session_id = _session_id(command)
        session = self._services.registry.get(session_id) if session_id else None
        await self._services.emitter.emit(
            cls,
            session=session,
            cause=command,
            session_id=session_id,
            command_type=command.type,
            **fields,
        )

    async def _poison(self, delivery: Delivery, err: DecodeError) -> Disposition:
        """Undecodable or invalid: dead-letter at once, and tell whoever we can."""
        metrics = self._services.metrics
        kind = err.command_type if err.command_type in COMMAND_TYPES else "invalid"
        metrics.child(metrics.commands_received_total, kind).inc()
        metrics.child(metrics.commands_total, kind, "dead_lettered").inc()
        log.warning("dead-lettering a %s command: %s", err.reason.value, err)
        reply_to = err.reply_to or delivery.reply_to
        if err.session_id is not None or reply_to:
            try:
                event = await self._services.emitter.emit(
                    CommandRejected,
                    session=self._services.registry.get(err.session_id or ""),
                    cause=None,
                    session_id=err.session_id,
                    code=RejectCode.VALIDATION,
                    message=str(err),
                    command_type=err.command_type,
                    causation_id=err.command_id or delivery.message_id,
                    correlation_id=delivery.correlation_id,
                )
                if reply_to:
                    await self._services.emitter.reply(event, reply_to)
            except PublishFailed:
                return REQUEUE
        return dead_letter(err.reason.value, str(err))


def _session_id(command: Command) -> str | None:
    return getattr(command, "session_id", None)


def _monotonic(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    return time.monotonic() + (deadline - datetime.now(UTC)).total_seconds()
