"""Publishes envelopes with publisher confirms on its own connection, each bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from contracts.codec import AmqpEnvelope
from contracts.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE
from worker.bus.delivery import HANDOVER_HEADER

log = logging.getLogger(__name__)


class PublishFailed(RuntimeError):
    """The broker did not confirm a publish in time (connection down, alarm, nack)."""


class Publisher:
    """Owns one confirming channel on the publishing connection.

    Publishing on a separate connection matters: a memory alarm blocks publishing
    connections, and acks on the consuming connection must keep flowing.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        *,
        timeout: float,
        on_failure: Callable[[], object] | None = None,
        on_confirmed: Callable[[str, float], object] | None = None,
    ) -> None:
        """`on_confirmed(kind, seconds)` follows each confirmed publish: what it carried
        ("event", "state", "reply", "forward", "handover", "dead_letter") and how long the
        broker took to confirm it."""
        self._connection = connection
        self._timeout = timeout
        self._on_failure = on_failure
        self._on_confirmed = on_confirmed
        self._channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._dlx: AbstractExchange | None = None
        self._healing = asyncio.Lock()

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._events = await self._channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        self._dlx = await self._channel.get_exchange(DEAD_LETTER_EXCHANGE, ensure=False)

    async def _heal(self) -> None:
        """A fresh channel if ours stayed closed once the connection was back: a robust
        channel whose restore was cut by a failed reconnection attempt is never restored."""
        if self._needs_healing():
            async with self._healing:
                if self._needs_healing():  # not healed meanwhile by another publish
                    stale = self._channel
                    log.warning("publishing channel stayed closed after a reconnection: reopening")
                    await self.start()
                    if stale is not None:
                        with contextlib.suppress(Exception):
                            await stale.close()  # or the connection restores it one day too

    def _needs_healing(self) -> bool:
        channel = self._channel
        return channel is not None and channel.is_closed and self._connection.connected.is_set()

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def publish_event(self, envelope: AmqpEnvelope, routing_key: str) -> None:
        await self._heal()
        assert self._events is not None, "Publisher.start() first"
        await self._publish(self._events, envelope, routing_key, "event")

    async def publish_reply(self, envelope: AmqpEnvelope, reply_to: str) -> None:
        await self._to_queue(envelope, reply_to, "reply")

    async def append(self, envelope: AmqpEnvelope, stream: str) -> None:
        """Append a record to a stream (the state stream)."""
        await self._to_queue(envelope, stream, "state")

    async def forward(
        self, body: bytes, properties: Mapping[str, Any], headers: Mapping[str, Any], queue: str
    ) -> None:
        """Put a command straight into another partition queue."""
        envelope = AmqpEnvelope(body=body, properties={**properties, "headers": dict(headers)})
        await self._to_queue(envelope, queue, "forward")

    async def wake_partition(self, queue: str, worker_id: str) -> None:
        """Leave a handover message in a released partition queue for its next owner."""
        envelope = AmqpEnvelope(
            body=b"", properties={"delivery_mode": 2, "headers": {HANDOVER_HEADER: worker_id}}
        )
        await self._to_queue(envelope, queue, "handover")

    async def dead_letter(
        self, body: bytes, properties: Mapping[str, Any], headers: Mapping[str, Any]
    ) -> None:
        await self._heal()
        assert self._dlx is not None, "Publisher.start() first"
        envelope = AmqpEnvelope(body=body, properties={**properties, "headers": dict(headers)})
        await self._publish(self._dlx, envelope, "", "dead_letter")

    async def _to_queue(self, envelope: AmqpEnvelope, queue: str, kind: str) -> None:
        """Through the default exchange, which routes by queue name."""
        await self._heal()
        assert self._channel is not None, "Publisher.start() first"
        await self._publish(self._channel.default_exchange, envelope, queue, kind)

    async def _publish(
        self, exchange: AbstractExchange, envelope: AmqpEnvelope, routing_key: str, kind: str
    ) -> None:
        assert self._channel is not None
        started = time.perf_counter()
        try:
            # A robust connection that is recovering makes publish wait: bound it. A timeout
            # scope rather than wait_for: no extra task per publish on the hot path.
            async with asyncio.timeout(self._timeout):
                if self._channel.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError("publishing channel closed")
                # Straight to aiormq: aio_pika.Message and Exchange.publish only rebuild these
                # properties, at a few percent of the worker's CPU per speak.
                channel = await self._channel.get_underlay_channel()
                await channel.basic_publish(
                    envelope.body,
                    exchange=exchange.name,
                    routing_key=routing_key,
                    properties=_properties(envelope.properties),
                    mandatory=False,
                )
        except Exception as exc:  # timeout, nack, closed channel: all mean "not confirmed"
            if self._on_failure is not None:
                self._on_failure()
            target = f"{exchange.name or '(default)'}/{routing_key}"
            raise PublishFailed(f"publish to {target} not confirmed: {exc!r}") from exc
        if self._on_confirmed is not None:
            self._on_confirmed(kind, time.perf_counter() - started)


_PROPERTIES = frozenset(
    {
        "content_type",
        "content_encoding",
        "headers",
        "delivery_mode",
        "correlation_id",
        "reply_to",
        "message_id",
        "timestamp",
        "type",
        "user_id",
        "app_id",
    }
)


def _properties(properties: Mapping[str, Any]) -> aiormq.spec.Basic.Properties:
    """AMQP properties from an envelope's (`aio_pika.Message` keyword names)."""
    if unknown := properties.keys() - _PROPERTIES:
        raise ValueError(f"unsupported AMQP properties: {sorted(unknown)}")
    return aiormq.spec.Basic.Properties(
        content_type=properties.get("content_type"),
        content_encoding=properties.get("content_encoding"),
        headers=properties.get("headers") or None,
        delivery_mode=int(properties.get("delivery_mode") or 1),
        correlation_id=properties.get("correlation_id"),
        reply_to=properties.get("reply_to"),
        message_id=properties.get("message_id"),
        timestamp=properties.get("timestamp"),
        message_type=properties.get("type"),
        user_id=properties.get("user_id"),
        app_id=properties.get("app_id"),
    )
