"""The publisher against the real broker: a channel left closed is replaced, not fatal; each
confirm is timed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from contracts.codec import AmqpEnvelope
from worker.bus.publisher import Publisher, PublishFailed
from worker.bus.state_stream import STATE_STREAM
from worker.bus.topology import TopologySpec, declare_topology


@contextlib.asynccontextmanager
async def started(
    connection: AbstractRobustConnection, **options: Any
) -> AsyncIterator[tuple[Publisher, AbstractQueue]]:
    """A started publisher over the worker's topology, and a queue to publish replies to."""
    await declare_topology(connection, TopologySpec(2, 5, state_max_age="1h"))
    channel = await connection.channel()
    queue = await channel.declare_queue("", exclusive=True)
    publisher = Publisher(connection, timeout=5, **options)
    await publisher.start()
    try:
        yield publisher, queue
    finally:
        await publisher.close()


async def test_a_channel_left_closed_is_reopened_by_the_next_publish(
    connection: AbstractRobustConnection,
) -> None:
    async with started(connection) as (publisher, queue):
        # What a robust channel whose restore was cut short looks like: closed for good on a
        # connection that is up (the bug seen in the soak after a broker kill -9).
        assert publisher._channel is not None
        await publisher._channel.close()
        await publisher.publish_reply(AmqpEnvelope(body=b"after", properties={}), queue.name)
        message = await queue.get(timeout=5)
        assert message.body == b"after"


async def test_each_confirmed_publish_is_reported_with_what_it_carried(
    connection: AbstractRobustConnection,
) -> None:
    confirmed: list[tuple[str, float]] = []
    envelope = AmqpEnvelope(body=b"{}", properties={"delivery_mode": 2})
    async with started(connection, on_confirmed=lambda *c: confirmed.append(c)) as (
        publisher,
        queue,
    ):
        await publisher.publish_event(envelope, "session.ready.v1")
        await publisher.append(envelope, STATE_STREAM)
        await publisher.publish_reply(envelope, queue.name)
        await publisher.forward(b"{}", {}, {}, queue.name)
        await publisher.wake_partition(queue.name, "w1")
        await publisher.dead_letter(b"{}", {}, {})
        kinds = [kind for kind, _ in confirmed]
        assert kinds == ["event", "state", "reply", "forward", "handover", "dead_letter"]
        assert all(0 < seconds < 5 for _, seconds in confirmed)
        # A publish that fails (here never sent: AMQP caps names at 255 bytes) has no confirm time.
        with pytest.raises(PublishFailed):
            await publisher.publish_reply(envelope, "x" * 300)
        assert len(confirmed) == 6
