"""From a delivery to a disposition: every delivery goes down one chain of steps (`worker.steps`),
built once here, and the dispatcher keeps the account that a drain and a handover wait on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Sequence
from functools import partial

from worker.bus.delivery import Delivery, Disposition
from worker.bus.publisher import Publisher
from worker.bus.state_tail import StateTail
from worker.handlers.context import Services
from worker.handover import Handover
from worker.ledger import Ledger
from worker.steps import (
    Decode,
    Dedupe,
    Handler,
    Home,
    InFlight,
    Job,
    Mailbox,
    Next,
    Outcome,
    Ownership,
    Principal,
    Settle,
    Step,
    Turn,
    deadline,
)

log = logging.getLogger(__name__)


def build_dispatcher(
    services: Services,
    *,
    handover: Handover,
    tail: StateTail,
    publisher: Publisher,
    own_user: str,
    max_message_bytes: int,
    dedup_capacity: int,
) -> Dispatcher:
    """The worker's one path for a command. The order is the design: the partition is this
    replica's before anything reads its sessions; a command goes home, or is known already,
    before it counts as in flight; a held command has not entered its mailbox; and what runs in
    the mailbox (handed over? allowed? expired?) is checked when the command's turn comes."""
    ledger = Ledger(dedup_capacity)
    steps: list[Step] = [
        Ownership(handover),
        Decode(services, max_message_bytes),
        Home(services, tail, publisher, own_user),
        Dedupe(services, ledger),
        InFlight(ledger, services.metrics),
        Settle(handover, services.metrics),
        Outcome(services),
        Mailbox(services.mailboxes, ledger),
        Turn(ledger),
        Principal(services.policy),
        deadline,
    ]
    return Dispatcher(chain(steps, Handler(services)), ledger)


def chain(steps: Sequence[Step], last: Next) -> Next:
    """`steps[0]`, whose `call_next` is `steps[1]`, and so on down to `last`."""
    call = last
    for step in reversed(steps):
        call = partial(step, call_next=call)
    return call


class Dispatcher:
    def __init__(self, chain: Next, ledger: Ledger) -> None:
        self._chain = chain
        self.ledger = ledger
        # Deliveries per partition from the moment they reach us to their disposition,
        # whatever path they take (a duplicate's flush, a takeover, a held command).
        self._handling: Counter[int] = Counter()
        self._settled = asyncio.Condition()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self.ledger)

    async def handle(self, delivery: Delivery) -> Disposition:
        self._handling[delivery.partition] += 1
        self._idle.clear()
        try:
            return await self._chain(Job(delivery))
        finally:
            self._handling[delivery.partition] -= 1
            if not any(self._handling.values()):
                self._idle.set()
            async with self._settled:
                self._settled.notify_all()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_partition_idle(self, partition: int) -> None:
        """Until no delivery of `partition` is being handled."""
        async with self._settled:
            await self._settled.wait_for(lambda: not self._handling[partition])

    async def finish_partition(self, partition: int, grace: float) -> None:
        """Hand `partition` over (its consumer cancelled): its commands get `grace` to finish,
        then the rest are requeued (see `Ledger.cut_short`), so none runs here afterwards."""
        if await self._partition_idle(partition, grace):
            return
        try:
            cancelled = self.ledger.cut_short(partition)
            log.warning("handing partition %d over: cancelled %d", partition, cancelled)
            await self._partition_idle(partition, 5)
        finally:
            self.ledger.resume(partition)

    async def _partition_idle(self, partition: int, within: float) -> bool:
        try:
            async with asyncio.timeout(within):
                await self.wait_partition_idle(partition)
        except TimeoutError:
            return False
        return True

    async def drain(self, grace: float) -> None:
        """Shutting down: in-flight commands get `grace` to finish, the rest are requeued."""
        try:
            await asyncio.wait_for(self.wait_idle(), grace)
        except TimeoutError:
            cancelled = self.ledger.cut_short(None)
            log.warning("drain grace over: requeueing %d unfinished commands", cancelled)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_idle(), 5)
