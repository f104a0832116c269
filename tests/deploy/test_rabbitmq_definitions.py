"""The users and permissions of deploy/rabbitmq/definitions.json work on a real broker.

Each test copies the definition's permission regexes onto throwaway users in a fresh vhost, then
runs the worker's real topology declaration and a producer's publish/consume against them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelAccessRefused

from contracts.client import publish_command, subscribe_events
from contracts.commands import SessionKeepalive
from contracts.topology import EVENTS_EXCHANGE, partition_queue
from tests.conftest import RABBIT_HOST, RABBIT_MGMT, RABBIT_PASSWORD, RABBIT_PORT, RABBIT_USER
from worker.bus.ownership import OwnershipProbe
from worker.bus.topology import TopologySpec, declare_topology

DEFINITIONS = Path(__file__).parents[2] / "deploy" / "rabbitmq" / "definitions.json"
WORKER_USER = "heygen-worker"
PRODUCER_USER = "heygen-producer"


@dataclass(frozen=True)
class Broker:
    """A vhost holding the definition's users, renamed to be unique, with their AMQP URLs."""

    worker_url: str
    producer_url: str
    management_url: str


def _definition(section: str, key: str, name: str) -> dict[str, Any]:
    definitions: dict[str, list[dict[str, Any]]] = json.loads(DEFINITIONS.read_text())
    (entry,) = (item for item in definitions[section] if item[key] == name)
    return entry


def _permissions(user: str) -> dict[str, str]:
    entry = _definition("permissions", "user", user)
    return {key: entry[key] for key in ("configure", "write", "read")}


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    suffix = uuid.uuid4().hex[:10]
    vhost = f"deploy-{suffix}"
    users = {name: f"{name}-{suffix}" for name in (WORKER_USER, PRODUCER_USER)}
    async with httpx.AsyncClient(
        base_url=RABBIT_MGMT, auth=(RABBIT_USER, RABBIT_PASSWORD), timeout=30
    ) as mgmt:
        (await mgmt.put(f"/api/vhosts/{vhost}")).raise_for_status()
        try:
            for name, login in users.items():
                tags = ",".join(_definition("users", "name", name)["tags"])
                user = {"password": suffix, "tags": tags}
                (await mgmt.put(f"/api/users/{login}", json=user)).raise_for_status()
                perms = _permissions(name)
                (await mgmt.put(f"/api/permissions/{vhost}/{login}", json=perms)).raise_for_status()
            base = f"@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"
            yield Broker(
                worker_url=f"amqp://{users[WORKER_USER]}:{suffix}{base}",
                producer_url=f"amqp://{users[PRODUCER_USER]}:{suffix}{base}",
                management_url=RABBIT_MGMT,
            )
        finally:
            for login in users.values():
                await mgmt.delete(f"/api/users/{login}")
            await mgmt.delete(f"/api/vhosts/{vhost}")


@pytest.fixture
async def connections(
    broker: Broker,
) -> AsyncIterator[tuple[AbstractRobustConnection, AbstractRobustConnection]]:
    worker = await aio_pika.connect_robust(broker.worker_url)
    producer = await aio_pika.connect_robust(broker.producer_url)
    try:
        await declare_topology(worker, TopologySpec(partitions=2, delivery_limit=5))
        yield worker, producer
    finally:
        await producer.close()
        await worker.close()


async def _consume(channel: AbstractChannel, *queue_names: str, count: int = 1) -> list[bytes]:
    """The first `count` bodies consumed from the queues (SAC quorum queues refuse basic.get)."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        await received.put(message.body)

    for name in queue_names:
        queue = await channel.get_queue(name, ensure=False)
        await queue.consume(on_message)
    return [await asyncio.wait_for(received.get(), timeout=5) for _ in range(count)]


async def test_producer_command_reaches_a_partition_the_worker_reads(
    connections: tuple[AbstractRobustConnection, AbstractRobustConnection],
) -> None:
    worker, producer = connections
    command = SessionKeepalive(session_id="session-1")
    await publish_command(await producer.channel(publisher_confirms=True), command)

    worker_channel = await worker.channel()
    (body,) = await _consume(worker_channel, partition_queue(0), partition_queue(1))
    assert json.loads(body)["command_id"] == command.command_id


async def test_worker_events_and_replies_reach_the_producers_own_queue(
    connections: tuple[AbstractRobustConnection, AbstractRobustConnection],
) -> None:
    worker, producer = connections
    producer_channel = await producer.channel()
    # aio-pika names it amq_<hex>; other clients get server-named amq.gen-*.
    inbox = await producer_channel.declare_queue(exclusive=True)
    await inbox.bind(EVENTS_EXCHANGE, routing_key="#.session-1")

    worker_channel = await worker.channel(publisher_confirms=True)
    events = await worker_channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    await events.publish(aio_pika.Message(b"event"), routing_key="session.ready.session-1")
    # sessions.list replies go through the default exchange to the producer's reply_to queue.
    await worker_channel.default_exchange.publish(aio_pika.Message(b"reply"), inbox.name)

    assert await _consume(producer_channel, inbox.name, count=2) == [b"event", b"reply"]


async def test_producer_subscribes_to_events_with_the_contracts_client(
    connections: tuple[AbstractRobustConnection, AbstractRobustConnection],
) -> None:
    _, producer = connections
    async with subscribe_events(await producer.channel(), session_id="session-1"):
        pass


async def test_producer_cannot_touch_the_workers_resources(
    connections: tuple[AbstractRobustConnection, AbstractRobustConnection],
) -> None:
    _, producer = connections
    channel = await producer.channel()
    with pytest.raises(ChannelAccessRefused):
        await channel.declare_queue(partition_queue(0), passive=False, durable=True)
    channel = await producer.channel(publisher_confirms=True)
    events = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    with pytest.raises(ChannelAccessRefused):
        await events.publish(aio_pika.Message(b"forged event"), routing_key="session.ready.x")


async def test_worker_is_confined_to_avatar_names(
    connections: tuple[AbstractRobustConnection, AbstractRobustConnection],
) -> None:
    worker, _ = connections
    channel = await worker.channel()
    with pytest.raises(ChannelAccessRefused):
        await channel.declare_queue("unrelated.queue", durable=True)


async def test_worker_sees_which_partitions_it_owns(
    broker: Broker, connections: tuple[AbstractRobustConnection, AbstractRobustConnection]
) -> None:
    """The worker's ownership probe reads the management API with the worker's own login."""
    worker, _ = connections
    channel = await worker.channel()
    queue = await channel.get_queue(partition_queue(1), ensure=False)
    tag = await queue.consume(_ack)
    probe = OwnershipProbe(
        lambda: broker.worker_url, lambda: {1: tag}, management_url=broker.management_url
    )
    try:
        # The management API learns of new consumers with its stats, a few seconds late.
        owned = await probe.owned()
        for _ in range(40):
            if owned:
                break
            await asyncio.sleep(0.25)
            owned = await probe.owned()
        assert owned == {1}
    finally:
        await probe.aclose()


async def _ack(message: AbstractIncomingMessage) -> None:
    await message.ack()
