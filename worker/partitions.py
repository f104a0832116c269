"""Which partitions this replica runs: it takes over the ones the broker made its own while no
command came, and hands one over when it runs more than its share."""

from __future__ import annotations

import asyncio
import logging
import time

from contracts.topology import DEAD_LETTER_QUEUE
from worker.bus.consumer import Consumer
from worker.bus.ownership import OwnershipProbe
from worker.bus.publisher import Publisher
from worker.dispatch import Dispatcher
from worker.handover import Handover
from worker.observability.metrics import Metrics

log = logging.getLogger(__name__)


class PartitionWatch:
    def __init__(
        self,
        probe: OwnershipProbe,
        handover: Handover,
        consumer: Consumer,
        dispatcher: Dispatcher,
        publisher: Publisher,
        metrics: Metrics,
        *,
        partitions: int,
        poll_s: float,
        rebalance_grace_s: float,
    ) -> None:
        self._probe = probe
        self._handover = handover
        self._consumer = consumer
        self._dispatcher = dispatcher
        self._publisher = publisher
        self._metrics = metrics
        self._partitions = partitions
        self._poll_s = poll_s
        self._rebalance_grace_s = rebalance_grace_s
        self._stopped = False
        # As the management API last said.
        self.owned: set[int] = set()

    def stop(self) -> None:
        """Shutting down: no partition is handed over, or taken up again, from now on."""
        self._stopped = True

    async def run(self) -> None:
        """Adopt partitions the broker made ours while idle, and read the dead-letter depth.

        Releasing is left to channel and connection loss: the management API's consumer
        state lags by its statistics interval, so "not active" may just be stale.
        """
        while True:
            try:
                await self._poll()
            except Exception:  # one bad poll must not end them: rebalancing depends on it
                log.exception("ownership poll failed")
            await asyncio.sleep(self._poll_s)

    async def _poll(self) -> None:
        owned = await self._probe.owned()
        self._metrics.broker_api_up.set(owned is not None)
        if owned is not None:
            self.owned = owned
            self._metrics.partitions_owned.set(len(owned))
            for partition in owned:
                await self._handover.ensure(partition)
            await self._rebalance(self._probe.replicas)
        depth = await self._probe.queue_depth(DEAD_LETTER_QUEUE)
        if depth is not None:
            self._metrics.dead_letter_queue_messages.set(depth)

    async def _rebalance(self, replicas: int) -> None:
        """Hand one partition to another replica when this one owns more than its share.

        RabbitMQ 3.10 ignores consumer priorities with single-active-consumer, so the first
        replica started would otherwise keep every partition. Our own count is exact (it is
        what we adopted); the replica count comes from the management API.
        """
        if self._stopped or replicas < 2:
            return
        fair = -(-self._partitions // replicas)
        mine = sorted(self._handover.adopted)
        if len(mine) <= fair:
            return
        partition = mine[-1]
        log.info("handing partition %d over (own %d, fair share %d)", partition, len(mine), fair)
        began = time.monotonic()
        await self._handover.announce_draining([partition])
        await self._consumer.pause(partition)
        # Nothing forces a rebalance to hurry, unlike a SIGTERM: what it holds is finished
        # rather than requeued behind newer commands, which the next owner could run first.
        await self._dispatcher.finish_partition(partition, self._rebalance_grace_s)
        await self._handover.seal([partition])
        self._handover.release(partition)
        await self._handover.announce_released([partition], self._publisher)
        log.info("handed partition %d over in %.2f s", partition, time.monotonic() - began)
        if not self._stopped:  # a shutdown began meanwhile: its consumers are cancelled
            await self._consumer.resume(partition)
