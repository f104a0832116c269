"""Consumes every partition queue (one channel each) and carries out the worker's dispositions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial

from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from contracts.topology import partition_queue
from worker.bus.delivery import Action, Delivery, Disposition
from worker.bus.publisher import Publisher, PublishFailed

log = logging.getLogger(__name__)

# Loop turns between aiormq reading a delivery and our callback starting, with a margin.
DELIVERY_HOPS = 4

DeliveryHandler = Callable[[Delivery], Awaitable[Disposition]]


class Consumer:
    """Registers a consumer on each partition and settles each message explicitly.

    aio-pika's ``message.process()`` rejects without requeue on any exception, shutdown
    cancellation included; here every path picks ack, requeue or dead-letter on purpose.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        publisher: Publisher,
        handler: DeliveryHandler,
        *,
        partitions: int,
        prefetch: int,
        worker_id: str,
        on_dead_letter: Callable[[str], None] | None = None,
        on_partition_lost: Callable[[int], None] | None = None,
    ) -> None:
        self._connection = connection
        self._publisher = publisher
        self._handler = handler
        self._partitions = partitions
        self._prefetch = prefetch
        self._worker_id = worker_id
        self._on_dead_letter = on_dead_letter
        self._on_partition_lost = on_partition_lost
        self._channels: dict[int, AbstractRobustChannel] = {}
        self._consumers: dict[int, tuple[AbstractQueue, str]] = {}
        # Partitions whose channel is open with its consumer registered. A robust channel is
        # reopened before its consumer is restored, so "not closed" is not enough.
        self._restored: set[int] = set()

    async def start(self) -> None:
        for index in range(self._partitions):
            channel = await self._connection.channel(publisher_confirms=False)
            # Prefetch per partition bounds the commands in flight.
            await channel.set_qos(prefetch_count=self._prefetch)
            # A (passive) declare registers the queue with the robust channel, which then
            # restores the consumer after a reconnection; get_queue() would not.
            queue = await channel.declare_queue(partition_queue(index), passive=True)
            tag = await queue.consume(partial(self._on_message, index))
            channel.close_callbacks.add(partial(self._lost, index))
            # Called once the reopened channel has restored its queue and consumer.
            channel.reopen_callbacks.add(partial(self._back, index))
            self._channels[index] = channel
            self._consumers[index] = (queue, tag)
            self._restored.add(index)

    def _back(self, partition: int, *_: object) -> None:
        self._restored.add(partition)

    def _lost(self, partition: int, *_: object) -> None:
        self._restored.discard(partition)
        if self._on_partition_lost is not None:
            # A closed channel drops our place: the broker may make another replica active.
            self._on_partition_lost(partition)

    async def pause(self, partition: int) -> None:
        """Cancel one partition's consumer: the broker activates the next replica's.

        Returns once every delivery the broker sent before its cancel-ok has reached the
        handler: each is two task hops away (aiormq's, then aio-pika's), and one still on its
        way when the partition is released would be requeued behind newer commands, which
        the next owner may then run first.
        """
        queue, tag = self._consumers.pop(partition)
        await queue.cancel(tag)
        await _deliveries_arrived()

    async def resume(self, partition: int) -> None:
        """Register again on the same channel, at the back of the single-active-consumer line."""
        queue = await self._channels[partition].declare_queue(
            partition_queue(partition), passive=True
        )
        self._consumers[partition] = (
            queue,
            await queue.consume(partial(self._on_message, partition)),
        )

    async def stop_consuming(self) -> None:
        """Cancel the consumers so partitions go to another replica; channels stay open for acks."""
        consumers, self._consumers = self._consumers, {}
        for queue, tag in consumers.values():
            try:
                await queue.cancel(tag)
            except Exception as exc:  # a dead channel has no consumer left to cancel
                log.warning("cancelling consumer on %s failed: %r", queue.name, exc)
        await _deliveries_arrived()

    async def close(self) -> None:
        await self.stop_consuming()
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            if not channel.is_closed:
                await channel.close()

    def consumer_tags(self) -> dict[int, str]:
        return {partition: tag for partition, (_, tag) in self._consumers.items()}

    @property
    def consuming(self) -> bool:
        """Every partition has a registered consumer on an open channel."""
        return len(self._consumers) == len(self._restored) == self._partitions

    async def _on_message(self, partition: int, message: AbstractIncomingMessage) -> None:
        delivery = Delivery(
            partition=partition,
            body=message.body,
            content_type=message.content_type,
            message_type=message.type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            user_id=message.user_id,
            timestamp=message.timestamp,
            redelivered=bool(message.redelivered),
            headers=dict(message.headers or {}),
        )
        try:
            disposition = await self._handler(delivery)
        except Exception:
            log.exception("unexpected error handling a delivery; requeueing it")
            disposition = Disposition(Action.RETRY)
        await self._settle(message, delivery, disposition)

    async def _settle(
        self, message: AbstractIncomingMessage, delivery: Delivery, disposition: Disposition
    ) -> None:
        try:
            if disposition.action is Action.DEAD_LETTER:
                await self._dead_letter(message, delivery, disposition)
            elif disposition.action is Action.REQUEUE:
                await message.nack(requeue=True)
            elif disposition.action is Action.RETRY:
                await message.reject(requeue=True)
            else:
                await message.ack()
        except Exception as exc:
            # The channel died: the broker requeues the message and redelivers it.
            log.warning("could not settle message %s: %r", delivery.message_id, exc)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, delivery: Delivery, disposition: Disposition
    ) -> None:
        reason = disposition.reason or "unknown"
        headers = {
            **delivery.headers,
            "x-dead-letter-reason": reason,
            "x-dead-letter-detail": (disposition.detail or "")[:1000],
            "x-original-queue": partition_queue(delivery.partition),
            "x-original-routing-key": message.routing_key or "",
            "x-dead-lettered-by": self._worker_id,
        }
        try:
            await self._publisher.dead_letter(delivery.body, delivery.republished(), headers)
        except PublishFailed as exc:
            # Not confirmed: requeue, counted; the delivery limit dead-letters it if this
            # keeps failing.
            log.warning("dead-lettering %s failed, requeueing: %s", delivery.message_id, exc)
            await message.reject(requeue=True)
            return
        await message.ack()
        if self._on_dead_letter is not None:
            self._on_dead_letter(reason)


async def _deliveries_arrived() -> None:
    """Once a cancel is confirmed: until the deliveries sent before it reach the handler."""
    for _ in range(DELIVERY_HOPS):
        await asyncio.sleep(0)
