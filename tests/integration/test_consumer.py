"""The consumer against the real broker: a cancelled partition leaves nothing on its way."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from contracts.topology import DEAD_LETTER_QUEUE, partition_queue
from worker.bus.consumer import Consumer
from worker.bus.delivery import ACK, Delivery, Disposition
from worker.bus.publisher import Publisher
from worker.bus.topology import TopologySpec, declare_topology

MESSAGES = 3000


async def test_pause_returns_once_every_delivery_before_the_cancel_reached_the_handler(
    connection: AbstractRobustConnection,
) -> None:
    # A delivery still between aiormq and the handler when the partition is released would be
    # requeued behind newer commands, and the next owner could run those first (issue 8).
    await declare_topology(connection, TopologySpec(1, delivery_limit=20))
    channel = await connection.channel(publisher_confirms=True)
    for index in range(MESSAGES):
        await channel.default_exchange.publish(
            aio_pika.Message(body=str(index).encode()), partition_queue(0)
        )
    publisher = Publisher(connection, timeout=5)
    await publisher.start()
    handled: list[bytes] = []
    enough = asyncio.Event()

    async def handler(delivery: Delivery) -> Disposition:
        handled.append(delivery.body)
        if len(handled) >= 200:
            enough.set()
        return ACK

    # A large prefetch keeps deliveries streaming in while the cancel goes out.
    consumer = Consumer(connection, publisher, handler, partitions=1, prefetch=1000, worker_id="w")
    await consumer.start()
    try:
        await asyncio.wait_for(enough.wait(), 30)
        await consumer.pause(0)
        at_return = len(handled)
        await asyncio.sleep(0.5)
        assert len(handled) == at_return, "deliveries reached the handler after pause()"
        queue = await channel.declare_queue(partition_queue(0), passive=True)
        # Nothing stuck unacknowledged: what was not handled is back to ready.
        assert queue.declaration_result.message_count == MESSAGES - at_return
        assert handled == [str(i).encode() for i in range(at_return)]
    finally:
        await consumer.close()
        await publisher.close()
        await channel.close()


async def test_a_delivery_whose_handling_keeps_failing_is_dead_lettered_at_the_limit(
    connection: AbstractRobustConnection,
) -> None:
    # Requeued with basic.reject, which RabbitMQ counts toward x-delivery-limit on every
    # version (4.3 stopped counting basic.nack): without it the message would loop forever.
    limit = 3
    await declare_topology(connection, TopologySpec(1, delivery_limit=limit))
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(body=b"boom", message_id="m1"), partition_queue(0)
    )
    publisher = Publisher(connection, timeout=5)
    await publisher.start()
    counts: list[object] = []

    async def handler(delivery: Delivery) -> Disposition:
        counts.append(delivery.headers.get("x-delivery-count"))
        raise RuntimeError("a bug in the handler")

    consumer = Consumer(connection, publisher, handler, partitions=1, prefetch=10, worker_id="w")
    await consumer.start()
    try:
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        message = None
        for _ in range(100):
            message = await dead.get(fail=False)
            if message is not None:
                break
            await asyncio.sleep(0.1)
        assert message is not None, f"not dead-lettered after {len(counts)} deliveries"
        assert message.body == b"boom"
        assert message.headers["x-first-death-reason"] == "delivery_limit"
        assert len(counts) == limit + 1, counts  # the first delivery, then `limit` more
        await message.ack()
    finally:
        await consumer.close()
        await publisher.close()
        await channel.close()
