"""RabbitMQ names and routing keys shared by producers, the worker and event consumers."""

from __future__ import annotations

import re
from collections.abc import Sequence

from contracts.commands import CommandBase
from contracts.common import SESSION_ID_PATTERN
from contracts.events import EVENT_TYPES, EventBase

COMMANDS_EXCHANGE = "avatar.commands"
COMMANDS_EXCHANGE_TYPE = "x-consistent-hash"
CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
EVENTS_EXCHANGE = "avatar.events"
EVENTS_EXCHANGE_TYPE = "topic"
DEAD_LETTER_EXCHANGE = "avatar.dlx"
DEAD_LETTER_QUEUE = "avatar.commands.dead"
PARTITION_QUEUE_PREFIX = "avatar.commands.p"
DEFAULT_PARTITIONS = 8
NO_SESSION = "_"
"""Routing-key word standing for "no session" in event routing keys."""

_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)


def partition_queue(index: int) -> str:
    """Name of the partition queue `index` (0-based)."""
    if index < 0:
        raise ValueError(f"partition index must be >= 0, got {index}")
    return f"{PARTITION_QUEUE_PREFIX}{index}"


def command_routing_key(command: CommandBase) -> str:
    """The session id, so every command of a session hashes to one partition, in order.

    sessions.list concerns no session: its command_id spreads it over any partition.
    """
    session_id: str | None = getattr(command, "session_id", None)
    return session_id if session_id is not None else command.command_id


def event_routing_key(event: EventBase) -> str:
    """`<event type>.<session_id>`, with "_" when the event concerns no session."""
    return f"{event.type}.{event.session_id or NO_SESSION}"


def event_binding_keys(
    *, session_id: str | None = None, types: Sequence[str] | None = None
) -> list[str]:
    """Topic patterns selecting events of one session and/or of some types (all by default)."""
    if session_id is not None and not _SESSION_ID_RE.fullmatch(session_id):
        raise ValueError(f"invalid session_id {session_id!r}: 1-64 of [A-Za-z0-9_-]")
    if types is not None and not types:
        raise ValueError("types must name at least one event type (or be None for all)")
    unknown = [t for t in types or () if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event types: {', '.join(unknown)}")
    session_word = session_id if session_id is not None else "*"
    if types is None:
        return [f"#.{session_id}"] if session_id is not None else ["#"]
    return [f"{event_type}.{session_word}" for event_type in dict.fromkeys(types)]
