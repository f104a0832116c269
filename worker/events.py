"""Builds events with their common fields and publishes them: to `avatar.events` and to reply_to."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from contracts.codec import AmqpEnvelope, decode_event, encode_event
from contracts.commands import Command
from contracts.events import Event
from contracts.topology import event_routing_key
from worker.bus.publisher import PublishFailed
from worker.sessions.session import Session

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)


class EventPublisher(Protocol):
    async def publish_event(self, envelope: AmqpEnvelope, routing_key: str) -> None: ...
    async def publish_reply(self, envelope: AmqpEnvelope, reply_to: str) -> None: ...


class EventEmitter:
    def __init__(
        self,
        publisher: EventPublisher,
        worker_id: str,
        *,
        decorate_headers: Callable[[dict[str, Any]], None] | None = None,
        on_published: Callable[[Event], None] | None = None,
    ) -> None:
        self._publisher = publisher
        self.worker_id = worker_id
        self._decorate_headers = decorate_headers
        self._on_published = on_published
        # Awaited after each event of a session, under its lock (the handover snapshot).
        self.after_session_event: Callable[[Session], Awaitable[None]] | None = None

    async def emit(
        self,
        cls: type[E],
        *,
        session: Session | None,
        cause: Command | None,
        session_id: str | None = None,
        **fields: Any,
    ) -> E:
        """Publish one event; its `seq` is the session's next, with no gap if publishing fails."""
        if session is None:
            event = self._build(cls, None, session_id, cause, fields)
            await self._publish(event)
        else:
            async with session.emit_lock:
                event = self._build(cls, session.seq + 1, session.session_id, cause, fields)
                await self._publish_from_outbox(session, event, cause)
        if cause is not None and cause.reply_to:
            await self._copy_to_reply(event, cause.reply_to)
        return event

    async def _publish_from_outbox(
        self, session: Session, event: Event, cause: Command | None
    ) -> None:
        """Snapshot the session with the event in its outbox, then publish the event.

        The snapshot is the commit: a replica that dies after it is replaced by one that
        re-publishes the event (at-least-once; consumers dedupe by event_id). If the snapshot
        fails, everything is rolled back and the command is requeued. If the event's publish
        fails, it may still have gone out (a blocked connection sends it late): the event stays
        in the outbox and is published again, same id and seq, before anything else.
        """
        await self._flush(session)
        previous = (session.seq, list(session.recent_commands), session.pending_command)
        envelope = self._envelope(event)
        session.seq += 1
        if cause is not None:
            _record_answered(session, cause.command_id)
        session.outbox = envelope.body
        try:
            if self.after_session_event is not None:
                await self.after_session_event(session)
        except BaseException:
            session.seq, recent, session.pending_command = previous
            session.recent_commands.clear()
            session.recent_commands.extend(recent)
            session.outbox = None
            raise
        # The event and its envelope are at hand: no decoding back from the outbox bytes.
        await self._flush(session, (event, envelope))

    async def flush(self, session: Session) -> None:
        """Publish the session's unconfirmed event, if it has one (a redelivered command's)."""
        async with session.emit_lock:
            await self._flush(session)

    async def _flush(
        self, session: Session, encoded: tuple[Event, AmqpEnvelope] | None = None
    ) -> None:
        """Publish the outbox; `encoded` is its event and envelope when the caller has them."""
        if session.outbox is None:
            return
        if encoded is None:
            event = decode_event(session.outbox)
            envelope = self._envelope(event)
        else:
            event, envelope = encoded
        await self._publisher.publish_event(envelope, event_routing_key(event))
        session.outbox = None
        if self._on_published is not None:
            self._on_published(event)

    async def reply(self, event: Event, reply_to: str) -> None:
        await self._publisher.publish_reply(self._envelope(event), reply_to)

    def _build(
        self,
        cls: type[E],
        seq: int | None,
        session_id: str | None,
        cause: Command | None,
        fields: dict[str, Any],
    ) -> E:
        # Without a decoded command (poison input) the caller passes the ids it could salvage.
        fields.setdefault("causation_id", cause.command_id if cause else None)
        fields.setdefault("correlation_id", cause.correlation_id if cause else None)
        return cls(session_id=session_id, seq=seq, worker_id=self.worker_id, **fields)

    def _envelope(self, event: Event) -> AmqpEnvelope:
        envelope = encode_event(event)
        if self._decorate_headers is not None:
            self._decorate_headers(envelope.properties.setdefault("headers", {}))
        return envelope

    async def _publish(self, event: Event) -> None:
        await self._publisher.publish_event(self._envelope(event), event_routing_key(event))
        if self._on_published is not None:
            self._on_published(event)

    async def _copy_to_reply(self, event: Event, reply_to: str) -> None:
        # The events exchange is the record; the reply copy is a convenience, never a reason
        # to redo a command whose effects already happened.
        try:
            await self.reply(event, reply_to)
        except PublishFailed as exc:
            log.warning("copy of %s to reply_to %s failed: %s", event.type, reply_to, exc)


def _record_answered(session: Session, command_id: str) -> None:
    """The command has published an event: a redelivery of it is a duplicate, not a retry."""
    if command_id not in session.recent_commands:
        session.recent_commands.append(command_id)
    if session.pending_command == command_id:
        session.pending_command = None
