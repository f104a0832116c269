"""The state stream against the real broker: group-committed snapshots, read back whole."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from aio_pika.abc import AbstractRobustConnection

from worker.bus.publisher import Publisher
from worker.bus.state_stream import StateStream
from worker.bus.topology import TopologySpec, declare_topology


async def test_snapshots_appended_together_share_records(
    connection: AbstractRobustConnection,
) -> None:
    await declare_topology(connection, TopologySpec(2, 5, state_max_age="1h"))
    publisher = Publisher(connection, timeout=10)
    await publisher.start()
    try:
        stream = StateStream(connection, publisher)
        since = datetime.now(UTC) - timedelta(seconds=2)
        bodies = [
            json.dumps({"session_id": f"s{i}", "partition": i % 2, "text": "a\nb"}).encode()
            for i in range(50)
        ]
        await asyncio.gather(*(stream.append(body) for body in bodies))
        records = [record for record in await stream.read(since) if record]
    finally:
        await publisher.close()
    assert sorted(line for record in records for line in record.split(b"\n")) == sorted(bodies)
    # Appended while earlier ones awaited their confirm: far fewer records than snapshots.
    assert len(records) < len(bodies) / 2, len(records)
