"""What every handler is given: the command, who sent it, and the collaborators it may use."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from contracts.commands import Command
from contracts.common import Provider as ProviderName
from contracts.common import RejectCode, SessionState
from contracts.events import Event
from worker.events import EventEmitter
from worker.observability.metrics import Metrics
from worker.providers.base import Provider
from worker.sessions.mailbox import Mailboxes
from worker.sessions.registry import Registry
from worker.sessions.session import Session
from worker.sessions.timers import Timers

E = TypeVar("E", bound=Event)
log = logging.getLogger(__name__)


class Rejected(Exception):
    """The command is refused without calling the provider; becomes `command.rejected`."""

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Policy:
    idle_timeout_s: float
    max_duration_s: float
    credits_per_minute: float
    reconnect_attempts: int = 3
    # The provider of a session.create that names none (WORKER_DEFAULT_PROVIDER).
    default_provider: ProviderName = ProviderName.HEYGEN
    # A speak sent to a provider that observes speech fails (command.failed, not repeated) when
    # its start is not observed this long after the speech queued ahead of it could have ended.
    speech_start_timeout_s: float = 15.0
    # A task refused as "not in correct state" this soon after start means the viewer has not
    # joined yet, not that the session closed: no reconnection.
    fresh_session_s: float = 30.0
    # Principals allowed to act on any session (ownership is checked against the AMQP user_id).
    admins: frozenset[str] = frozenset()
    # Refuse commands without a broker-validated user_id instead of treating them as anonymous.
    require_user_id: bool = False


class OrphanSuspects(Protocol):
    def suspect(self, since: datetime) -> None:
        """A create since then may have made a provider session nobody knows."""


@dataclass
class Services:
    # By provider name ("heygen", "liveavatar"): the ones this worker runs.
    providers: dict[str, Provider]
    registry: Registry
    emitter: EventEmitter
    policy: Policy
    metrics: Metrics
    mailboxes: Mailboxes = field(default_factory=Mailboxes)
    timers: Timers = field(default_factory=Timers)
    background: set[asyncio.Task[Any]] = field(default_factory=set)
    orphans: OrphanSuspects | None = None

    def provider(self, session: Session) -> Provider:
        """The provider the session runs on."""
        return self.providers[session.provider]

    def credit_rate(self, session: Session) -> float:
        """Credits a minute the session is estimated to burn: its provider's published rate,
        else the configured estimate (HeyGen's legacy billing)."""
        rate = self.provider(session).credit_rate(session.mode)
        return self.policy.credits_per_minute if rate is None else rate

    async def checkpoint(self, session: Session) -> None:
        """Persist the session now (before a side effect that must not be repeated)."""
        if self.emitter.after_session_event is not None:
            async with session.emit_lock:
                await self.emitter.after_session_event(session)

    def watch(self, session: Session) -> None:
        """Have the session pool look at this session now (it then keeps it scheduled)."""
        self.timers.schedule(session.session_id, time.monotonic())

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run worker-initiated work (timers, policies) without losing the task or its errors."""
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())


@dataclass
class CommandContext:
    command: Command
    principal: str | None
    partition: int
    # time.monotonic() value past which provider calls are not retried.
    deadline: float | None
    services: Services

    def session(self, session_id: str) -> Session:
        """The live session the command addresses, if the sender may act on it."""
        session = self.services.registry.get(session_id)
        if session is None or session.state is SessionState.STOPPED:
            raise Rejected(RejectCode.UNKNOWN_SESSION, f"no live session {session_id}")
        if not self.may_see(session):
            raise Rejected(
                RejectCode.FORBIDDEN, f"session {session_id} belongs to another principal"
            )
        return session

    def may_see(self, session: Session) -> bool:
        return (
            session.owner is None
            or self.principal == session.owner
            or self.principal in self.services.policy.admins
        )

    async def emit(self, cls: type[E], session: Session | None, **fields: Any) -> E:
        return await self.services.emitter.emit(cls, session=session, cause=self.command, **fields)
