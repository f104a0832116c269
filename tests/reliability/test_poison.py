"""Poison of every kind mixed into normal traffic, plus a burst of fuzzed bodies through the
worker: each is dead-lettered with a reason, the good commands are all answered, the worker
stays ready."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import aio_pika
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.codec import DecodeErrorReason
from contracts.topology import DEAD_LETTER_QUEUE
from simulator.server import RunningSimulator
from tests.reliability.checker import Checker
from tests.reliability.conftest import finish, node_worker
from tests.reliability.rabbit_node import RabbitNode
from tests.reliability.schema_strategy import command_documents
from tests.reliability.traffic import ResilientProducer, Traffic

JSON = "application/json"
REASONS = {r.value for r in DecodeErrorReason} | {"handler_error"}
SPEAK = {"type": "session.speak", "session_id": "poison-0"}
# (body, properties, expected x-dead-letter-reason)
POISON: list[tuple[bytes, dict[str, object], str]] = [
    (b"\xff\xfe not json", {"content_type": JSON}, "undecodable"),
    (b"{", {"content_type": JSON}, "undecodable"),
    (b'{"type": "session.speak"}', {"content_type": "text/plain"}, "content_type"),
    (json.dumps({**SPEAK, "type": "session.fly"}).encode(), {"content_type": JSON}, "unknown_type"),
    (
        json.dumps({**SPEAK, "text": "hi"}).encode(),
        {"content_type": JSON, "type": "session.stop"},
        "type_mismatch",
    ),
    (json.dumps({**SPEAK, "text": ""}).encode(), {"content_type": JSON}, "schema"),
    (json.dumps({**SPEAK, "text": "x" * 5000}).encode(), {"content_type": JSON}, "schema"),
    (json.dumps({**SPEAK, "text": "hi", "bogus": 1}).encode(), {"content_type": JSON}, "schema"),
    (json.dumps({**SPEAK, "text": "y" * 70_000}).encode(), {"content_type": JSON}, "oversized"),
]


async def dead_letters(producer: ResilientProducer, n: int, timeout: float = 20) -> dict[str, str]:  # noqa: ASYNC109
    """message_id -> x-dead-letter-reason of `n` messages taken from the dead-letter queue."""
    assert producer.connection is not None
    channel = await producer.connection.channel()
    found: dict[str, str] = {}
    try:
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        async with asyncio.timeout(timeout):
            while len(found) < n:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                reason = (message.headers or {}).get("x-dead-letter-reason")
                found[str(message.message_id)] = str(reason)
    finally:
        await channel.close()
    return found


async def test_poison_mixed_into_traffic(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    names = [f"poison-{i}" for i in range(4)]
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w.log") as w:
        await producer.start()
        traffic = Traffic(producer, names, rate_hz=40)
        await traffic.open_sessions()
        traffic.start()
        expected: dict[str, str] = {}
        for body, properties, reason in POISON:
            message_id = uuid.uuid4().hex
            expected[message_id] = reason
            await producer.send_raw(body, names[0], message_id=message_id, **properties)
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        await traffic.stop()
        await traffic.close_sessions()
        report = await finish(checker, simulator)
        assert await dead_letters(producer, len(expected)) == expected
        assert await w.readyz() == 200
    assert not report.lost, report.line()
    assert not report.unexpected, report.unexpected[:10]


@st.composite
def fuzzed_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    return json.dumps(draw(command_documents()), default=str).encode()


def draw_burst(n: int) -> list[bytes]:
    """`n` fuzzed bodies drawn once by hypothesis (one example of a list strategy)."""
    drawn: list[bytes] = []

    @settings(max_examples=1, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(fuzzed_bodies(), min_size=n, max_size=n))
    def draw(bodies: list[bytes]) -> None:
        drawn[:] = bodies

    draw()
    return drawn


async def test_fuzz_burst_through_the_worker(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    """60 fuzzed bodies: each is acked (valid, run) or dead-lettered with a known reason, and
    the worker stays ready."""
    rng = random.Random(3)
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w.log") as w:
        await producer.start()
        ids: list[str] = []
        await asyncio.sleep(2)  # the partitions show up in the statistics
        for body in draw_burst(60):
            message_id = uuid.uuid4().hex
            ids.append(message_id)
            await producer.send_raw(
                body,
                f"fuzz-{rng.randrange(8)}",
                message_id=message_id,
                content_type=JSON,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
        await wait_partitions_empty(rabbit_node, node_url)
        assert producer.connection is not None
        channel = await producer.connection.channel()
        dead = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        dead_count = dead.declaration_result.message_count or 0
        await channel.close()
        letters = await dead_letters(producer, dead_count)
        assert await w.readyz() == 200
        assert w.process.returncode is None
    print(f"fuzz burst: {len(ids)} bodies, {len(letters)} dead-lettered, rest acked")
    assert set(letters) <= set(ids)
    assert all(reason in REASONS for reason in letters.values()), letters


async def wait_partitions_empty(rabbit_node: RabbitNode, amqp_url: str) -> None:
    """Until every partition queue has nothing ready or unacked: each input was settled."""
    vhost = quote(urlsplit(amqp_url).path[1:], safe="")
    async with (
        httpx.AsyncClient(base_url=rabbit_node.mgmt_url, auth=("guest", "guest")) as mgmt,
        asyncio.timeout(30),
    ):
        while True:
            await asyncio.sleep(1.5)  # past the statistics interval
            queues = (await mgmt.get(f"/api/queues/{vhost}")).json()
            partitions = [q for q in queues if q["name"].startswith("avatar.commands.p")]
            if partitions and all(q.get("messages", 1) == 0 for q in partitions):
                return
