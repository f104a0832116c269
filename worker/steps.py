"""The steps a delivery goes through, in the order `worker.dispatch.build_dispatcher` chains them.

Each step has one job: it answers the delivery with a disposition, or hands it on to the rest of
the chain (`call_next`) and may look at what comes back. Nothing here calls back into the worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

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
from worker.bus.publisher import Publisher, PublishFailed
from worker.bus.state_tail import StateTail
from worker.handlers import CONTROL_LANES, HANDLERS
from worker.handlers.context import CommandContext, Policy, Rejected, Services
from worker.handover import Handover
from worker.ledger import Ledger
from worker.observability.logs import log_context
from worker.observability.metrics import Metrics
from worker.observability.tracing import consumer_span
from worker.providers.base import ProviderError
from worker.sessions.mailbox import Mailboxes, Preempted
from worker.sessions.session import Session

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Job:
    """One delivery on its way through the chain, with what the steps before learnt of it."""

    delivery: Delivery
    received: float = field(default_factory=time.monotonic)
    decoded: Command | None = None
    # The session as this replica knows it once the partition is its own: looked up once.
    session: Session | None = None
    principal: str | None = None

    @property
    def command(self) -> Command:
        if self.decoded is None:
            raise RuntimeError("a step that needs the command is chained before Decode")
        return self.decoded

    @property
    def session_id(self) -> str | None:
        return getattr(self.command, "session_id", None)


Next = Callable[[Job], Awaitable[Disposition]]


class Step(Protocol):
    async def __call__(self, job: Job, call_next: Next) -> Disposition: ...


class Ownership:
    """A partition new to this replica has its sessions taken over before its first delivery;
    the deliveries of one it is letting go go back to the queue. The handover hears of every
    delivery that goes back: the next owner then settles the partition's order."""

    def __init__(self, handover: Handover) -> None:
        self._handover = handover

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        partition = job.delivery.partition
        if not await self._handover.ensure(partition):
            disposition = REQUEUE
        elif HANDOVER_HEADER in job.delivery.headers:
            disposition = ACK  # a wake-up message: the takeover was all it asked for
        else:
            disposition = await call_next(job)
        if disposition is REQUEUE:
            self._handover.requeued(partition)
        return disposition


class Decode:
    """The command out of the delivery, and its session; undecodable: dead-lettered at once."""

    def __init__(self, services: Services, max_message_bytes: int) -> None:
        self._services = services
        self._max_message_bytes = max_message_bytes

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        delivery = job.delivery
        try:
            command = decode_command(
                delivery.body,
                content_type=delivery.content_type,
                message_type=delivery.message_type,
                max_bytes=self._max_message_bytes,
            )
        except DecodeError as err:
            return await self._poison(delivery, err)
        metrics = self._services.metrics
        metrics.child(metrics.commands_received_total, command.type).inc()
        delay = (datetime.now(UTC) - command.sent_at).total_seconds()
        metrics.child(metrics.command_queue_delay_seconds, command.type).observe(max(0.0, delay))
        job.decoded = command
        job.session = self._services.registry.get(job.session_id or "")
        return await call_next(job)

    async def _poison(self, delivery: Delivery, err: DecodeError) -> Disposition:
        """Tell whoever we can, then dead-letter it."""
        metrics = self._services.metrics
        kind = err.command_type if err.command_type in COMMAND_TYPES else "invalid"
        metrics.child(metrics.commands_received_total, kind).inc()
        metrics.child(metrics.commands_total, kind, "dead_lettered").inc()
        log.warning("dead-lettering a %s command: %s", err.reason.value, err)
        reply_to = err.reply_to or delivery.reply_to
        if err.session_id is not None or reply_to:
            emitter = self._services.emitter
            try:
                event = await emitter.emit(
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
                    await emitter.reply(event, reply_to)
            except PublishFailed:
                return REQUEUE
        return dead_letter(err.reason.value, str(err))


class Home:
    """A command that arrived off its session's home partition goes into the home partition's
    queue, in its session's order. RabbitMQ rebuilds the consistent-hash ring when it restarts,
    in the order it recovers the bindings, so a session's commands can land on another partition
    than its create did, whose owner does not know the session."""

    def __init__(
        self, services: Services, tail: StateTail, publisher: Publisher, own_user: str
    ) -> None:
        self._services = services
        self._tail = tail
        self._publisher = publisher
        # This worker's broker user: it vouches for the sender of what it forwards.
        self._own_user = own_user

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        delivery = job.delivery
        forwarded = FORWARDED_HEADER in delivery.headers
        job.principal = self._principal(delivery) if forwarded else delivery.user_id
        session_id = job.session_id
        if session_id is None or forwarded:
            return await call_next(job)  # forwarded once already: handled wherever it landed
        home = job.session.partition if job.session is not None else self._tail.home(session_id)
        if home is None or home == delivery.partition:
            return await call_next(job)
        log.info(
            "forwarding %s %s for session %s from partition %d to its home partition %d",
            job.command.type,
            job.command.command_id,
            session_id,
            delivery.partition,
            home,
        )
        properties = {**delivery.republished(), "user_id": self._own_user}
        headers = {
            **delivery.headers,
            FORWARDED_HEADER: delivery.partition,
            FORWARDED_USER_HEADER: delivery.user_id or "",
        }

        async def forward() -> None:
            await self._publisher.forward(delivery.body, properties, headers, partition_queue(home))

        try:
            await self._services.mailboxes.run(session_id, "forward", forward)
        except PublishFailed:
            return REQUEUE
        metrics = self._services.metrics
        metrics.child(metrics.commands_total, job.command.type, "forwarded").inc()
        return ACK

    def _principal(self, delivery: Delivery) -> str | None:
        """The sender of a forwarded command: the one who sent it first, if a replica says so."""
        if delivery.user_id != self._own_user:
            return delivery.user_id
        sender = delivery.headers.get(FORWARDED_USER_HEADER)
        if isinstance(sender, bytes):
            sender = sender.decode()
        return str(sender) if sender else None


class Dedupe:
    """A command is run once: a duplicate is answered from what its first run published, and
    one a previous owner started (the provider may have acted) but never answered is reported
    `interrupted`, not repeated."""

    def __init__(self, services: Services, ledger: Ledger) -> None:
        self._services = services
        self._ledger = ledger

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        command_id, session = job.command.command_id, job.session
        ledger, metrics = self._ledger, self._services.metrics
        pending = session is not None and session.pending_command == command_id
        if pending and command_id not in ledger:
            return await self._interrupted(job)
        if (
            command_id in ledger.finished
            or command_id in ledger
            or (session is not None and command_id in session.recent_commands)
        ):
            if session is not None:
                try:
                    # Its answer may be the event whose publish was not confirmed.
                    await self._services.emitter.flush(session)
                except PublishFailed:
                    return REQUEUE
            metrics.child(metrics.commands_total, job.command.type, "duplicate").inc()
            return ACK
        disposition = await call_next(job)
        if disposition is not REQUEUE:
            ledger.finished.add(command_id)
        return disposition

    async def _interrupted(self, job: Job) -> Disposition:
        try:
            await report(
                self._services,
                job.command,
                CommandFailed,
                code="interrupted",
                message="the replica running it stopped mid-call; not repeated, as HeyGen may "
                "already have acted on it",
                retryable=False,
            )
        except PublishFailed:
            return REQUEUE
        metrics = self._services.metrics
        metrics.child(metrics.commands_total, job.command.type, "failed").inc()
        self._ledger.finished.add(job.command.command_id)
        return ACK


class InFlight:
    """Counted in flight from here on, so a drain waits for it instead of releasing it."""

    def __init__(self, ledger: Ledger, metrics: Metrics) -> None:
        self._ledger = ledger
        self._metrics = metrics

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        self._metrics.commands_in_flight.inc()
        try:
            with self._ledger.in_flight(job.command.command_id, job.delivery.partition):
                return await call_next(job)
        finally:
            self._metrics.commands_in_flight.dec()


class Settle:
    """Held while its partition settles after a takeover (see `worker.settle`)."""

    def __init__(self, handover: Handover, metrics: Metrics) -> None:
        self._handover = handover
        self._metrics = metrics

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        command = job.command
        try:
            await self._handover.admit(
                job.delivery.partition, command.sent_at, job.delivery.redelivered
            )
        except asyncio.CancelledError:
            # The drain grace ended while it was held: it never ran, it goes back.
            self._metrics.child(self._metrics.commands_total, command.type, "requeued").inc()
            return REQUEUE
        return await call_next(job)


class Outcome:
    """Every outcome of running the command becomes events and a disposition, in its log
    context and trace span, and is counted."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        command, delivery = job.command, job.delivery
        with (
            log_context(session_id=job.session_id, command_id=command.command_id),
            consumer_span(command.type, delivery.headers, command.command_id, job.session_id),
        ):
            outcome, disposition = await self._run(job, call_next)
            log.log(
                logging.DEBUG if outcome == "ok" else logging.INFO,
                "%s %s in %.1f ms (partition %d%s)",
                command.type,
                outcome,
                (time.monotonic() - job.received) * 1000,
                delivery.partition,
                ", redelivered" if delivery.redelivered else "",
            )
        metrics = self._services.metrics
        metrics.child(metrics.commands_total, command.type, outcome).inc()
        metrics.child(metrics.command_duration_seconds, command.type).observe(
            time.monotonic() - job.received
        )
        return disposition

    async def _run(self, job: Job, call_next: Next) -> tuple[str, Disposition]:
        command, services = job.command, self._services
        try:
            disposition = await call_next(job)
        except Rejected as exc:
            await report(services, command, CommandRejected, code=exc.code, message=exc.message)
            return "rejected", ACK
        except Preempted as exc:
            await report(
                services, command, CommandRejected, code=RejectCode.CANCELLED, message=exc.reason
            )
            return "rejected", ACK
        except ProviderError as exc:
            await report(
                services,
                command,
                CommandFailed,
                code=exc.kind,
                message=exc.message,
                retryable=exc.retryable,
                heygen_code=exc.code,
            )
            return "failed", ACK
        except (PublishFailed, asyncio.CancelledError) as exc:
            # Events not confirmed, or shutdown cut the work short: the broker redelivers it.
            log.warning("requeueing %s: %r", command.type, exc)
            return "requeued", REQUEUE
        except Exception as exc:
            log.exception("handler for %s crashed", command.type)
            await report(
                services,
                command,
                CommandFailed,
                code="internal",
                message=repr(exc)[:500],
                retryable=False,
            )
            return "failed", dead_letter("handler_error", repr(exc))
        return ("requeued" if disposition is REQUEUE else "ok"), disposition


class Mailbox:
    """The rest runs in its session's mailbox: in order, with interrupt and stop overtaking a
    running speak and dropping queued work they make moot."""

    def __init__(self, mailboxes: Mailboxes, ledger: Ledger) -> None:
        self._mailboxes = mailboxes
        self._ledger = ledger

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        command, key = job.command, job.session_id

        async def turn() -> Disposition:
            return await call_next(job)

        self._ledger.queued(command.command_id)
        if key is None:
            return await turn()
        if command.type in CONTROL_LANES:
            preempts, overtakes = CONTROL_LANES[command.type]
            reason = f"dropped by {command.type} {command.command_id}"
            return await self._mailboxes.run_control(
                key, command.type, turn, preempts=preempts, overtakes=overtakes, reason=reason
            )
        return await self._mailboxes.run(key, command.type, turn)


class Turn:
    """Its turn came: it starts, unless the grace of its partition ended while it waited."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        if not self._ledger.start(job.command.command_id, job.delivery.partition):
            return REQUEUE  # after the older commands of its session, which went back first
        return await call_next(job)


class Principal:
    """Refused without a broker-validated user_id where the policy requires one."""

    def __init__(self, policy: Policy) -> None:
        self._required = policy.require_user_id

    async def __call__(self, job: Job, call_next: Next) -> Disposition:
        if job.principal is None and self._required:
            raise Rejected(RejectCode.FORBIDDEN, "commands must carry an AMQP user_id")
        return await call_next(job)


async def deadline(job: Job, call_next: Next) -> Disposition:
    """Checked when the command's turn comes: late real-time speech is worse than none."""
    expires = job.command.deadline
    if expires is not None and expires <= datetime.now(UTC):
        raise Rejected(RejectCode.EXPIRED, f"deadline {expires.isoformat()} passed")
    return await call_next(job)


class Handler:
    """The end of the chain: the command's handler, with its context."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def __call__(self, job: Job) -> Disposition:
        command = job.command
        expires = command.deadline
        ctx = CommandContext(
            command=command,
            principal=job.principal,
            partition=job.delivery.partition,
            deadline=None
            if expires is None
            else time.monotonic() + (expires - datetime.now(UTC)).total_seconds(),
            services=self._services,
        )
        await HANDLERS[command.type](command, ctx)
        return ACK


async def report(
    services: Services,
    command: Command,
    cls: type[CommandRejected | CommandFailed],
    **fields: object,
) -> None:
    """The command's answer when it did not run to its end. The session is read now: the
    handler may have registered or ended it."""
    session_id = getattr(command, "session_id", None)
    await services.emitter.emit(
        cls,
        session=services.registry.get(session_id) if session_id else None,
        cause=command,
        session_id=session_id,
        command_type=command.type,
        **fields,
    )
