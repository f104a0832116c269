"""What the bus hands to the worker and what the worker answers: no AMQP types leak past here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Marks the wake-up message a replica leaves in a partition queue it releases, so the next
# owner hears about the handover from a delivery instead of polling for it.
HANDOVER_HEADER = "x-handover-from"
# A command a replica put into its session's home partition queue, having received it on
# another one (the consistent-hash ring can change when the broker restarts): the partition it
# arrived on, and its sender's AMQP user_id, trusted only from the worker's own broker user.
FORWARDED_HEADER = "x-forwarded-from"
FORWARDED_USER_HEADER = "x-forwarded-user-id"


@dataclass(frozen=True)
class Delivery:
    """One command message as received, with the AMQP properties the worker looks at."""

    partition: int
    body: bytes
    content_type: str | None
    message_type: str | None
    message_id: str | None
    correlation_id: str | None
    reply_to: str | None
    user_id: str | None
    timestamp: datetime | None
    redelivered: bool
    headers: dict[str, Any] = field(default_factory=dict)

    def republished(self) -> dict[str, Any]:
        """The properties to publish this message again with (persistent; headers apart)."""
        return {
            "content_type": self.content_type,
            "type": self.message_type,
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "reply_to": self.reply_to,
            "timestamp": self.timestamp,
            "delivery_mode": 2,
        }


class Action(StrEnum):
    ACK = "ack"
    # Back to the queue through no fault of the message (a handover, a shutdown, a publish
    # not confirmed): basic.nack, which RabbitMQ 4.3 no longer counts toward the delivery limit.
    REQUEUE = "requeue"
    # Back to the queue because handling it failed: basic.reject, which every RabbitMQ version
    # counts, so a message that keeps failing is dead-lettered at the limit.
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class Disposition:
    """The worker's verdict on a delivery; the bus carries it out."""

    action: Action
    reason: str | None = None
    detail: str | None = None


ACK = Disposition(Action.ACK)
REQUEUE = Disposition(Action.REQUEUE)


def dead_letter(reason: str, detail: str) -> Disposition:
    return Disposition(Action.DEAD_LETTER, reason, detail)
