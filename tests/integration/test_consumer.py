"""The consumer against the real broker: a cancelled partition leaves nothing on its way."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from contracts.topology import partition_queue
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
