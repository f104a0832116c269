"""The publisher against the real broker: a channel left closed is replaced, not fatal."""

from __future__ import annotations

from aio_pika.abc import AbstractRobustConnection

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher
from worker.bus.topology import TopologySpec, declare_topology


async def test_a_channel_left_closed_is_reopened_by_the_next_publish(
    connection: AbstractRobustConnection,
) -> None:
    await declare_topology(connection, TopologySpec(2, 5, state_max_age="1h"))
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    publisher = Publisher(connection, timeout=5)
    await publisher.start()
    try:
        # What a robust channel whose restore was cut short looks like: closed for good on a
        # connection that is up (the bug seen in the soak after a broker kill -9).
        assert publisher._channel is not None
        await publisher._channel.close()
        await publisher.publish_reply(AmqpEnvelope(body=b"after", properties={}), queue.name)
        message = await queue.get(timeout=5)
        assert message.body == b"after"
    finally:
        await publisher.close()
