"""Declares the exchanges and queues of docs/design.md, idempotently, with actionable errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractQueue
from aio_pika.exceptions import ChannelClosed
from pamqp.common import FieldTable

from contracts.topology import (
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENTS_EXCHANGE,
    partition_queue,
)
from worker.bus.state_stream import STATE_STREAM, stream_arguments


class TopologyError(RuntimeError):
    """The broker refused the topology; the message says what to do about it."""


@dataclass(frozen=True)
class TopologySpec:
    partitions: int
    delivery_limit: int
    # Retention of the session-state stream (RabbitMQ duration syntax, e.g. "2h").
    state_max_age: str = "2h"

    def partition_arguments(self) -> FieldTable:
        return {
            "x-queue-type": "quorum",
            # One replica at a time owns a partition, so a session's commands stay in order.
            "x-single-active-consumer": True,
            # Quorum queues on 3.10 have no default limit: a poison message would loop forever.
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            # at-least-once dead-lettering needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


async def declare_topology(connection: AbstractConnection, spec: TopologySpec) -> None:
    """Declare everything the worker needs. Safe to call on every start."""
    async with _channel(connection) as channel:
        await _declare_exchange(
            channel,
            COMMANDS_EXCHANGE,
            aio_pika.ExchangeType.X_CONSISTENT_HASH,
            hint=(
                "the consistent-hash exchange plugin is not enabled on the broker: run "
                "`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`"
            ),
        )
    async with _channel(connection) as channel:
        await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(
            DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead = await channel.declare_queue(
            DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx, routing_key="")
    async with _channel(connection) as channel:
        await _declare_queue(channel, STATE_STREAM, stream_arguments(spec.state_max_age))
    for index in range(spec.partitions):
        name = partition_queue(index)
        async with _channel(connection) as channel:
            queue = await _declare_queue(channel, name, spec.partition_arguments())
            # Binding key of a consistent-hash exchange is the weight: equal shares.
            await queue.bind(COMMANDS_EXCHANGE, routing_key="1")


async def _declare_queue(
    channel: AbstractChannel, name: str, arguments: FieldTable
) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelClosed as exc:
        if "inequivalent arg" in str(exc) or "PRECONDITION_FAILED" in str(exc):
            raise TopologyError(
                f"queue {name} exists with different arguments than this worker needs "
                f"({_reason(exc)}). Either set WORKER_DELIVERY_LIMIT (or the state stream's "
                "retention) to match the existing queues, or drain and delete them "
                f"(`rabbitmqctl delete_queue {name}`) so the worker can declare them again."
            ) from exc
        raise


async def _declare_exchange(
    channel: AbstractChannel, name: str, kind: aio_pika.ExchangeType, *, hint: str
) -> None:
    try:
        await channel.declare_exchange(name, kind, durable=True)
    except ChannelClosed as exc:
        text = str(exc)
        if "invalid exchange type" in text or "COMMAND_INVALID" in text:
            raise TopologyError(f"cannot declare exchange {name}: {hint}") from exc
        if "inequivalent arg" in text or "PRECONDITION_FAILED" in text:
            raise TopologyError(
                f"exchange {name} exists with another type or arguments ({_reason(exc)}); "
                f"delete it (`rabbitmqctl eval` or the management UI) so the worker can declare it"
            ) from exc
        raise


def _reason(exc: ChannelClosed) -> str:
    return str(exc.args[1]) if len(exc.args) > 1 else str(exc)


@asynccontextmanager
async def _channel(connection: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    """A short-lived channel: a refused declaration closes it, so each step gets its own."""
    channel = await connection.channel(publisher_confirms=False)
    try:
        yield channel
    finally:
        if not channel.is_closed:
            await channel.close()
