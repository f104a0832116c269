"""aio-pika helpers for other services: publish a command, subscribe to events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueueIterator

from contracts.codec import DecodeError, decode_event, encode_command
from contracts.commands import CommandBase
from contracts.events import Event
from contracts.topology import (
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    command_routing_key,
    event_binding_keys,
)

log = logging.getLogger(__name__)


class CommandNotRoutedError(RuntimeError):
    """The broker had no queue for the command: the worker's topology is not declared."""


async def publish_command(
    channel: AbstractChannel,
    command: CommandBase,
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a bounded publish is the safe default for callers
    user_id: str | None = None,
) -> None:
    """Publish a command to `avatar.commands` and wait for the broker's confirm.

    Needs a channel opened with publisher confirms (aio-pika's default). Raises TimeoutError
    when the confirm does not come within `timeout` seconds (e.g. while reconnecting),
    CommandNotRoutedError when no partition queue is bound, and aio-pika's errors otherwise.
    A timed-out publish may still have reached the broker: resend the same command object
    (same command_id, the idempotency key) rather than a new one. `user_id`, when given, must
    be the connection's user name (RabbitMQ validates it); the worker makes it the owner of
    the sessions it creates and refuses other principals' commands on them.
    """
    if not channel.publisher_confirms:
        raise ValueError("publish_command needs a channel opened with publisher_confirms=True")
    envelope = encode_command(command)
    if user_id is not None:
        # The broker checks it equals the connection's user: the worker's notion of "owner".
        envelope.properties["user_id"] = user_id
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
    async with asyncio.timeout(timeout):
        result = await exchange.publish(
            aio_pika.Message(envelope.body, **envelope.properties),
            routing_key=command_routing_key(command),
            mandatory=True,
        )
    if not isinstance(result, aiormq.spec.Basic.Ack):
        raise CommandNotRoutedError(
            f"{command.type} {command.command_id} was not routed by {COMMANDS_EXCHANGE}: "
            "is the worker's topology declared?"
        )


@contextlib.asynccontextmanager
async def subscribe_events(
    channel: AbstractChannel,
    *,
    session_id: str | None = None,
    types: Sequence[str] | None = None,
    queue_name: str | None = None,
) -> AsyncIterator[AsyncIterator[Event]]:
    """Receive events of one session and/or of some types (all by default).

    The queue is bound before the context is entered, so events published after that are
    not missed: enter it before sending the commands whose events you wait for. The queue
    is exclusive and deleted on exit. Messages that are not valid events are logged and
    dropped. Usage: `async with subscribe_events(ch, session_id="s1") as events:
    async for event in events: ...`
    """
    keys = event_binding_keys(session_id=session_id, types=types)
    # Passive: a producer needs no configure permission on the worker's exchange, only that
    # the worker has declared its topology once (it does at every start).
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=True)
    queue = await channel.declare_queue(queue_name or "", exclusive=True, auto_delete=True)
    try:
        for key in keys:
            await queue.bind(exchange, routing_key=key)
        async with queue.iterator() as messages:
            yield _decoded(messages)
    finally:
        if not channel.is_closed:
            await queue.delete(if_unused=False, if_empty=False)


async def _decoded(messages: AbstractQueueIterator) -> AsyncIterator[Event]:
    async for message in messages:
        event = _decode(message)
        if event is None:
            await message.reject(requeue=False)
            continue
        yield event
        # Acknowledged once the consumer asks for the next event, i.e. has handled this one.
        await message.ack()


def _decode(message: AbstractIncomingMessage) -> Event | None:
    try:
        return decode_event(
            message.body, content_type=message.content_type, message_type=message.type
        )
    except DecodeError as exc:
        log.warning("dropping an invalid event (message_id %s): %s", message.message_id, exc)
        return None
