"""publish_command and subscribe_events against the real RabbitMQ (a private vhost per test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from contracts import (
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    CommandRejected,
    RejectCode,
    SessionReady,
    SessionsList,
    SessionSpeak,
    SpeechStarted,
    TaskMode,
    TaskType,
    decode_command,
    encode_event,
    event_routing_key,
)
from contracts.client import CommandNotRoutedError, publish_command, subscribe_events
from contracts.events import EventBase


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def channel(connection: AbstractRobustConnection) -> AbstractChannel:
    channel = await connection.channel()
    # What the worker declares at start: subscribers only look the exchange up.
    await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    return channel


async def _partition(channel: AbstractChannel) -> aio_pika.abc.AbstractQueue:
    """The worker's command topology in miniature: a consistent-hash exchange, one partition."""
    exchange = await channel.declare_exchange(COMMANDS_EXCHANGE, "x-consistent-hash", durable=True)
    queue = await channel.declare_queue("avatar.commands.p0", durable=True)
    await queue.bind(exchange, routing_key="1")  # the binding key is the partition's weight
    return queue


async def _publish_event(channel: AbstractChannel, event: EventBase) -> None:
    exchange = await channel.get_exchange(EVENTS_EXCHANGE)
    envelope = encode_event(event)
    await exchange.publish(
        aio_pika.Message(envelope.body, **envelope.properties), routing_key=event_routing_key(event)
    )


async def test_publish_command_lands_in_the_partition_persistent(channel: AbstractChannel) -> None:
    queue = await _partition(channel)
    speak = SessionSpeak(session_id="s1", text="Hello", correlation_id="corr-1", reply_to="r")
    listing = SessionsList()

    await publish_command(channel, speak)
    await publish_command(channel, listing)

    received = []
    for _ in range(2):
        message = await queue.get(timeout=5, fail=True)
        assert message is not None
        received.append(message)
        await message.ack()
    first, second = received
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert (first.type, first.message_id) == ("session.speak", speak.command_id)
    assert (first.correlation_id, first.reply_to) == ("corr-1", "r")
    assert first.content_type == "application/json"
    decoded = decode_command(first.body, content_type=first.content_type, message_type=first.type)
    assert decoded == speak
    assert first.routing_key == "s1"
    assert decode_command(second.body) == listing
    assert second.routing_key == listing.command_id


async def test_publish_command_fails_when_nothing_is_bound(channel: AbstractChannel) -> None:
    await channel.declare_exchange(COMMANDS_EXCHANGE, "x-consistent-hash", durable=True)
    with pytest.raises(CommandNotRoutedError, match="not routed"):
        await publish_command(channel, SessionSpeak(session_id="s1", text="Hello"))


async def test_publish_command_needs_publisher_confirms(
    connection: AbstractRobustConnection,
) -> None:
    unconfirmed = await connection.channel(publisher_confirms=False)
    with pytest.raises(ValueError, match="publisher_confirms"):
        await publish_command(unconfirmed, SessionSpeak(session_id="s1", text="Hello"))


async def test_publish_command_times_out(
    channel: AbstractChannel, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _partition(channel)
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)

    async def stuck_publish(*args: object, **kwargs: object) -> None:
        await asyncio.sleep(10)  # like a publish waiting for a robust connection to recover

    monkeypatch.setattr(type(exchange), "publish", stuck_publish)
    with pytest.raises(TimeoutError):
        await publish_command(channel, SessionSpeak(session_id="s1", text="Hi"), timeout=0.2)


async def test_subscribe_events_filters_by_session(
    connection: AbstractRobustConnection, channel: AbstractChannel
) -> None:
    publisher = await connection.channel()
    ready = SessionReady(session_id="mine", worker_id="w0", heygen_session_id="h1", seq=1)
    other = SessionReady(session_id="other", worker_id="w0", heygen_session_id="h2", seq=1)
    started = SpeechStarted(
        session_id="mine",
        worker_id="w0",
        seq=2,
        task_id="t1",
        task_type=TaskType.REPEAT,
        task_mode=TaskMode.ASYNC,
        characters=5,
    )
    async with subscribe_events(channel, session_id="mine") as events:
        for event in (other, ready, started):
            await _publish_event(publisher, event)
        got = [await asyncio.wait_for(anext(events), 5) for _ in range(2)]
    assert got == [ready, started]


async def test_subscribe_events_filters_by_type_and_skips_invalid_messages(
    connection: AbstractRobustConnection, channel: AbstractChannel
) -> None:
    publisher = await connection.channel()
    rejected = CommandRejected(worker_id="w0", code=RejectCode.CAPACITY, message="full")
    ready = SessionReady(session_id="s1", worker_id="w0", heygen_session_id="h1")
    async with subscribe_events(channel, types=["command.rejected"], queue_name="mine") as events:
        exchange = await publisher.get_exchange(EVENTS_EXCHANGE)
        await exchange.publish(aio_pika.Message(b"not json"), routing_key="command.rejected._")
        await _publish_event(publisher, ready)
        await _publish_event(publisher, rejected)
        assert await asyncio.wait_for(anext(events), 5) == rejected
    # The queue is gone with the subscription.
    check = await connection.channel()
    with pytest.raises(aio_pika.exceptions.ChannelClosed):
        await check.declare_queue("mine", passive=True)
