"""The design's floor: a speak's message pattern with nothing else (`python -m bench.skeleton`).

Per speak command, what the worker sends and waits for, in the same order, through the worker's
own bus layer (`Publisher`, the group-committed `StateStream`) and a bare aiohttp client:

1. a snapshot appended to the state stream, confirmed (the checkpoint before HeyGen is called);
2. `streaming.task` POSTed to the simulator;
3. a snapshot, confirmed, then a speech.started of the worker's size to `avatar.events`,
   confirmed; then the ack;
4. meanwhile, the estimated speech.finished's pair: a snapshot, then the event.

Bodies are prebuilt and nothing is decoded, validated, ordered per session or counted: its rate
over the relay's (ceiling a) is what the design's five confirmed messages and one HTTP call per
speak allow; the worker's rate over it is what everything else costs.
Settings from the environment: those of `bench.peer`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aiohttp
from aio_pika.abc import AbstractIncomingMessage

from bench.broker_floor import SNAPSHOT_BYTES
from bench.load import ANSWER_TYPE, TEXT, answer_body
from contracts.codec import AmqpEnvelope
from contracts.topology import partition_queue
from worker.bus.publisher import Publisher
from worker.bus.state_stream import StateStream
from worker.loop import run

HTTP_CONCURRENCY = 64  # as the peer and the worker (WORKER_HTTP_CONCURRENCY)
FINISHED_TYPE = "speech.finished"


async def skeleton(
    url: str, partitions: int, prefetch: int, heygen_url: str, heygen_key: str
) -> None:
    consuming = await aio_pika.connect(url)
    publisher = Publisher(await aio_pika.connect(url), timeout=30)
    await publisher.start()
    stream = StateStream(publisher)
    http = aiohttp.ClientSession(
        heygen_url,
        headers={"X-Api-Key": heygen_key},
        connector=aiohttp.TCPConnector(limit=HTTP_CONCURRENCY),
    )
    snapshot = b"x" * SNAPSHOT_BYTES
    answer = answer_body()
    background: set[asyncio.Task[None]] = set()

    def event(correlation_id: str | None) -> AmqpEnvelope:
        return AmqpEnvelope(
            body=answer,
            properties={
                "content_type": "application/json",
                "message_id": uuid.uuid4().hex,
                "correlation_id": correlation_id,
                "delivery_mode": 2,
            },
        )

    async def finished(partition: int, session_id: str) -> None:
        await stream.append(snapshot, partition, session_id, "ready")
        await publisher.publish_event(event(None), f"{FINISHED_TYPE}.{session_id}")

    def on_message_of(partition: int) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            session_id = message.routing_key or ""
            await stream.append(snapshot, partition, session_id, "speaking")
            task = {
                "session_id": session_id,
                "text": TEXT,
                "task_type": "repeat",
                "task_mode": "async",
            }
            async with http.post("/v1/streaming.task", json=task) as response:
                await response.read()
            await stream.append(snapshot, partition, session_id, "speaking")
            routing_key = f"{ANSWER_TYPE}.{session_id}"
            await publisher.publish_event(event(message.correlation_id), routing_key)
            await message.ack()
            spawned = asyncio.create_task(finished(partition, session_id))
            background.add(spawned)
            spawned.add_done_callback(background.discard)

        return on_message

    for index in range(partitions):
        channel = await consuming.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(partition_queue(index), passive=True)
        await queue.consume(on_message_of(index))
    print("skeleton consuming", flush=True)
    await asyncio.Future()  # until killed


def main() -> None:
    env = os.environ
    run(
        skeleton(
            env["BENCH_AMQP_URL"],
            int(env["BENCH_PARTITIONS"]),
            int(env["BENCH_PREFETCH"]),
            env["BENCH_HEYGEN_URL"],
            env["BENCH_HEYGEN_KEY"],
        )
    )


if __name__ == "__main__":
    main()
