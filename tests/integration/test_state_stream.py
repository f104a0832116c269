"""The state stream against the real broker: group-committed snapshots, filed by followers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from worker.bus.publisher import Publisher
from worker.bus.state_stream import BATCH_HEADER, STATE_STREAM, StateStream
from worker.bus.state_tail import StateTail
from worker.bus.topology import TopologySpec, declare_topology

SNAPSHOTS = 50


def snapshot(index: int, state: str = "ready") -> bytes:
    body = {"session_id": f"s{index}", "partition": index % 2, "state": state, "text": "a\nb"}
    return json.dumps(body).encode()


async def records_since(connection: AbstractRobustConnection, since: datetime) -> list[bytes]:
    """The bodies of the batch records appended since `since` (read until the stream idles)."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)  # streams need a prefetch
    queue = await channel.get_queue(STATE_STREAM, ensure=False)
    bodies: list[bytes] = []
    arrived = asyncio.Event()

    async def on_message(message: AbstractIncomingMessage) -> None:
        if BATCH_HEADER in (message.headers or {}):
            bodies.append(message.body)
        arrived.set()
        await message.ack()

    tag = await queue.consume(on_message, arguments={"x-stream-offset": since})
    try:
        while True:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 1)
            except TimeoutError:
                return bodies
    finally:
        await queue.cancel(tag)
        await channel.close()


async def test_snapshots_appended_together_share_records_and_followers_file_them(
    connection: AbstractRobustConnection,
) -> None:
    await declare_topology(connection, TopologySpec(2, 5, state_max_age="1h"))
    publisher = Publisher(connection, timeout=10)
    await publisher.start()
    tail = StateTail(connection, publisher, window=timedelta(minutes=5))
    await tail.start("follower")
    try:
        stream = StateStream(publisher)
        since = datetime.now(UTC) - timedelta(seconds=2)
        bodies = [snapshot(i) for i in range(SNAPSHOTS)]
        await asyncio.gather(
            *(stream.append(body, i % 2, f"s{i}", "ready") for i, body in enumerate(bodies))
        )
        # A stopped session leaves nothing to adopt.
        await stream.append(snapshot(4, "stopped"), 0, "s4", "stopped")
        await tail.sync()
        records = await records_since(connection, since)
        filed = {partition: sorted(tail.snapshots(partition)) for partition in (0, 1)}
    finally:
        await tail.close()
        await publisher.close()
    lines = sorted(line for record in records for line in record.split(b"\n"))
    assert lines == sorted([*bodies, snapshot(4, "stopped")])
    # Appended while earlier ones awaited their confirm: far fewer records than snapshots.
    assert len(records) < SNAPSHOTS / 2, len(records)
    assert filed[0] == sorted(b for i, b in enumerate(bodies) if i % 2 == 0 and i != 4)
    assert filed[1] == sorted(b for i, b in enumerate(bodies) if i % 2 == 1)
    assert tail.names("s49")
    assert not tail.names("s50")
