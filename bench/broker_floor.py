"""The broker's own latency for each step a speak waits on: `python -m bench.broker_floor`.

A speak reaches `speech.started` after a command delivery from a quorum queue (delivered once
committed), a confirmed append to the state stream (the checkpoint), the HeyGen call, a second
confirmed append (the snapshot with the event in its outbox), and the event's routing. This
measures those broker steps alone, one message at a time at a steady rate, in a vhost of its own,
with the worker's message sizes: what any design with the same two durable writes before the
event cannot go below on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aio_pika

from bench import harness, stats

SNAPSHOT_BYTES = 3_800  # a speaking session's snapshot (64 recent command ids)
COMMAND_BYTES = 300


async def _confirm_latencies(
    channel: aio_pika.abc.AbstractChannel, queue: str, size: int, rate: float, count: int
) -> list[float]:
    """Milliseconds from publish to the broker's confirm, `count` publishes at `rate`/s."""
    body = b"x" * size
    latencies: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await channel.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=2), routing_key=queue
        )
        latencies.append((time.perf_counter() - began) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - began)))
    return latencies


async def _delivery_latencies(
    channel: aio_pika.abc.AbstractChannel,
    queue: aio_pika.abc.AbstractQueue,
    rate: float,
    count: int,
) -> list[float]:
    """Milliseconds from publish to delivery to a consumer on another channel."""
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived.put_nowait(time.perf_counter())
        await message.ack()

    await queue.consume(on_message)
    body = b"x" * COMMAND_BYTES
    latencies: list[float] = []
    for _ in range(count):
        began = time.perf_counter()
        await channel.default_exchange.publish(aio_pika.Message(body), routing_key=queue.name)
        latencies.append((await arrived.get() - began) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - began)))
    return latencies


def _line(name: str, values: list[float]) -> str:
    cuts = (stats.quantile(values, 0.5), stats.quantile(values, 0.99), max(values))
    return f"{name:<52} p50 {cuts[0]:.1f} ms, p99 {cuts[1]:.1f} ms, max {cuts[2]:.1f} ms"


async def measure(rate: float, count: int) -> dict[str, list[float]]:
    """Latencies in ms by step name."""
    async with harness.rabbit_vhost("bench-floor") as url:
        connection = await aio_pika.connect(url)
        async with connection:
            confirming = await connection.channel(publisher_confirms=True)
            stream = await confirming.declare_queue(
                "floor.stream", durable=True, arguments={"x-queue-type": "stream"}
            )
            plain = await connection.channel(publisher_confirms=False)
            consuming = await connection.channel()
            await consuming.set_qos(prefetch_count=64)
            quorum = await consuming.declare_queue(
                "floor.quorum", durable=True, arguments={"x-queue-type": "quorum"}
            )
            appends = await _confirm_latencies(confirming, stream.name, SNAPSHOT_BYTES, rate, count)
            deliveries = await _delivery_latencies(plain, quorum, rate, count)
    return {
        "quorum queue: publish → delivered (a command)": deliveries,
        f"stream: {SNAPSHOT_BYTES:,} B append → confirmed (a snapshot)": appends,
        "two stream appends in sequence (pairs of the above)": [
            a + b for a, b in zip(appends[::2], appends[1::2], strict=False)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=200.0, help="messages per second (200)")
    parser.add_argument("--count", type=int, default=1_000, help="messages per step (1,000)")
    args = parser.parse_args()
    print(f"broker floor: one message at a time at {args.rate:g}/s, {args.count:,} per step")
    for name, latencies in asyncio.run(measure(args.rate, args.count)).items():
        print(_line(name, latencies))


if __name__ == "__main__":
    main()
