"""The ceiling: a bare aio-pika relay over the worker's own topology (`python -m bench.relay`).

Consumes every partition queue (one channel each, the worker's prefetch), publishes an answer
of the worker's speech.started size to `avatar.events` with publisher confirms on a separate
connection, then acks: what the worker does per speak command minus everything but the
broker. Messages are handled concurrently (a task per delivery, as the worker and FastStream
do), so confirms of different messages are pipelined on one channel.
Settings from the environment: BENCH_AMQP_URL, BENCH_PARTITIONS, BENCH_PREFETCH.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.load import ANSWER_TYPE, answer_body
from contracts.topology import EVENTS_EXCHANGE, partition_queue
from worker.loop import run


async def relay(url: str, partitions: int, prefetch: int) -> None:
    consuming = await aio_pika.connect(url)
    publishing = await aio_pika.connect(url)
    channel = await publishing.channel(publisher_confirms=True)
    events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    body = answer_body()

    async def on_message(message: AbstractIncomingMessage) -> None:
        answer = aio_pika.Message(
            body,
            content_type="application/json",
            type=ANSWER_TYPE,
            message_id=uuid.uuid4().hex,
            correlation_id=message.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await events.publish(answer, routing_key=f"{ANSWER_TYPE}.{message.routing_key}")
        await message.ack()

    for index in range(partitions):
        partition = await consuming.channel(publisher_confirms=False)
        await partition.set_qos(prefetch_count=prefetch)
        queue = await partition.declare_queue(partition_queue(index), passive=True)
        await queue.consume(on_message)
    print("relay consuming", flush=True)
    await asyncio.Future()  # until killed


def main() -> None:
    env = os.environ
    run(relay(env["BENCH_AMQP_URL"], int(env["BENCH_PARTITIONS"]), int(env["BENCH_PREFETCH"])))


if __name__ == "__main__":
    main()
