"""The dispatcher's account of what it is handling, which a handover and a drain wait on."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.codec import AmqpEnvelope
from worker.bus.delivery import ACK, HANDOVER_HEADER, Delivery
from worker.dispatch import Dispatcher
from worker.events import EventEmitter
from worker.handlers.context import Policy, Services
from worker.observability.metrics import Metrics
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.provider import HeyGenProvider
from worker.sessions.registry import Registry


class NoPublisher:
    async def publish_event(self, envelope: AmqpEnvelope, routing_key: str) -> None:
        raise AssertionError("nothing is published here")

    async def publish_reply(self, envelope: AmqpEnvelope, reply_to: str) -> None:
        raise AssertionError("nothing is published here")


def services() -> Services:
    heygen = HeyGenClient(
        SecretStr("k"), transport=httpx.MockTransport(lambda _: httpx.Response(500))
    )
    return Services(
        providers={"heygen": HeyGenProvider(heygen)},
        registry=Registry(10),
        emitter=EventEmitter(NoPublisher(), "w"),
        policy=Policy(idle_timeout_s=60, max_duration_s=600, credits_per_minute=0.2),
        metrics=Metrics(CollectorRegistry()),
    )


def wake_up(partition: int) -> Delivery:
    return Delivery(
        partition=partition,
        body=b"",
        content_type=None,
        message_type=None,
        message_id=None,
        correlation_id=None,
        reply_to=None,
        user_id=None,
        timestamp=None,
        redelivered=False,
        headers={HANDOVER_HEADER: "other"},
    )


async def test_a_delivery_counts_from_its_arrival_not_from_its_command_starting() -> None:
    # A delivery still waiting for its partition's takeover is not running a command yet, but
    # a handover that went ahead without it would have it requeued behind newer commands.
    gate = asyncio.Event()

    async def before_partition(partition: int) -> bool:
        await gate.wait()
        return True

    dispatcher = Dispatcher(
        services(), max_message_bytes=1000, dedup_capacity=10, before_partition=before_partition
    )
    handled = asyncio.create_task(dispatcher.handle(wake_up(3)))
    await asyncio.sleep(0)
    partition_idle = asyncio.create_task(dispatcher.wait_partition_idle(3))
    all_idle = asyncio.create_task(dispatcher.wait_idle())
    async with asyncio.timeout(1):
        await dispatcher.wait_partition_idle(4)  # another partition is not held up
    await asyncio.sleep(0.05)
    assert not partition_idle.done()
    assert not all_idle.done()

    gate.set()
    assert await handled is ACK
    async with asyncio.timeout(1):
        await partition_idle
        await all_idle
