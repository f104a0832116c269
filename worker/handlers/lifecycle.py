"""session.create, session.start, session.ice, session.stop, session.keepalive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from contracts.commands import (
    Command,
    SessionCreate,
    SessionIce,
    SessionKeepalive,
    SessionStart,
    SessionStop,
)
from contracts.common import RejectCode, SessionState, StopReason, StreamingVersion
from contracts.events import CommandCompleted, SessionCreated, SessionReady, SessionStopped, Usage
from worker.handlers.context import CommandContext, Rejected, Services
from worker.handlers.profile import connection_fields, profile_of
from worker.providers.base import (
    CapacityError,
    ProviderError,
    SessionClosedError,
    Stopped,
    may_have_acted,
)
from worker.sessions.registry import CapacityExceeded
from worker.sessions.session import Session

log = logging.getLogger(__name__)


async def create_session(cmd: SessionCreate, ctx: CommandContext) -> None:
    try:
        cmd = cmd.for_provider(ctx.services.policy.default_provider)
    except ValueError as exc:
        raise Rejected(RejectCode.VALIDATION, str(exc)) from exc
    assert cmd.provider is not None
    if cmd.provider.value not in ctx.services.providers:
        raise Rejected(
            RejectCode.VALIDATION, f"provider {cmd.provider} is not configured on this worker"
        )
    registry = ctx.services.registry
    existing = registry.get(cmd.session_id)
    if existing is not None and existing.profile.command_id == cmd.command_id and existing.live:
        # This very create again (its answer was lost): answer it again, create nothing.
        await _answer_again(ctx, existing)
        return
    if existing is not None and existing.state is not SessionState.STOPPED:
        raise Rejected(RejectCode.SESSION_EXISTS, f"session {cmd.session_id} already exists")
    if existing is not None:
        registry.remove(cmd.session_id)
    policy = ctx.services.policy
    session = Session(
        session_id=cmd.session_id,
        partition=ctx.partition,
        owner=ctx.principal,
        profile=cmd,
        provider=cmd.provider.value,
        # A producer may tighten the credit-saving limits, never loosen them.
        idle_timeout_s=min(cmd.idle_timeout_s or policy.idle_timeout_s, policy.idle_timeout_s),
        max_duration_s=min(cmd.max_duration_s or policy.max_duration_s, policy.max_duration_s),
    )
    created = ctx.services.metrics.sessions_created_total
    try:
        registry.add(session)
    except CapacityExceeded as exc:
        created.labels(provider=session.provider, outcome="capacity").inc()
        raise Rejected(RejectCode.CAPACITY, str(exc)) from exc
    # If this replica dies before the answer's snapshot, the next owner knows a provider session
    # may exist that no event names, and stops it (worker/orphans.py).
    session.pending_command = cmd.command_id
    checkpointed = datetime.now(UTC)
    try:
        await ctx.services.checkpoint(session)
        # Never retried blindly by the provider: a create is billed.
        made = await ctx.services.provider(session).create(profile_of(cmd), deadline=ctx.deadline)
    except CapacityError as exc:
        registry.remove(cmd.session_id)
        created.labels(provider=session.provider, outcome="capacity").inc()
        raise Rejected(
            RejectCode.CAPACITY, f"{session.provider} refused a new session: {exc.message}"
        ) from exc
    except BaseException as exc:
        registry.remove(cmd.session_id)
        created.labels(provider=session.provider, outcome="failed").inc()
        if may_have_acted(exc) and ctx.services.orphans is not None:
            ctx.services.orphans.suspect(checkpointed)  # a timeout is no proof of nothing made
        raise
    created.labels(provider=session.provider, outcome="ok").inc()
    session.heygen_session_id = made.provider_session_id
    session.resume = made.resume
    session.billing_started_at = time.monotonic()
    session.connection = connection_fields(made)
    await _announce(ctx, session)
    if cmd.version is StreamingVersion.V1:
        return  # v1 waits for the client's SDP answer in session.start
    await _start(ctx, session, None)
    session.connection = None  # answered and confirmed: ~1 KiB a session, 10 MB at 10,000


async def _announce(ctx: CommandContext, session: Session) -> None:
    await ctx.emit(
        SessionCreated,
        session,
        version=session.profile.version,
        provider=session.provider,
        owner=session.owner,
        idle_timeout_s=int(session.idle_timeout_s),
        max_duration_s=int(session.max_duration_s),
        **(session.connection or {"heygen_session_id": session.heygen_session_id}),
    )


async def _answer_again(ctx: CommandContext, session: Session) -> None:
    await _announce(ctx, session)
    if session.state is SessionState.CREATING and session.profile.version is StreamingVersion.V2:
        await _start(ctx, session, None)  # the answer was lost before the start: finish it
        session.connection = None
    elif session.state in (SessionState.READY, SessionState.SPEAKING):
        await ctx.emit(SessionReady, session, heygen_session_id=session.heygen_session_id)


async def start_session(cmd: SessionStart, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    if (
        session.profile.version is not StreamingVersion.V1
        or session.state is not SessionState.CREATING
    ):
        raise Rejected(
            RejectCode.WRONG_STATE, "session.start is for v1 sessions awaiting an answer"
        )
    await _start(ctx, session, cmd.sdp.sdp)


async def _start(ctx: CommandContext, session: Session, sdp_answer: str | None) -> None:
    assert session.heygen_session_id is not None
    try:
        await ctx.services.provider(session).start(
            session.heygen_session_id,
            resume=session.resume,
            sdp_answer=sdp_answer,
            deadline=ctx.deadline,
        )
    except ProviderError as exc:
        # A session that cannot start still bills: stop it, then report the failure.
        await end_session(ctx.services, session, StopReason.ERROR, ctx.command, detail=str(exc))
        raise
    # The idle limit counts from when the session could first speak, not from the command.
    session.last_speech = time.monotonic()
    session.touch(session.last_speech)
    session.transition(SessionState.READY)
    ctx.services.watch(session)
    await ctx.emit(SessionReady, session, heygen_session_id=session.heygen_session_id)


async def ice(cmd: SessionIce, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    if session.profile.version is not StreamingVersion.V1:
        raise Rejected(RejectCode.WRONG_STATE, "session.ice is for v1 sessions only")
    assert session.heygen_session_id is not None
    await ctx.services.provider(session).ice(
        session.heygen_session_id, cmd.candidate.model_dump(), deadline=ctx.deadline
    )
    await ctx.emit(CommandCompleted, session, command_type=cmd.type)


async def keepalive(cmd: SessionKeepalive, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    assert session.heygen_session_id is not None
    await ctx.services.provider(session).keep_alive(
        session.heygen_session_id, deadline=ctx.deadline
    )
    session.touch()
    await ctx.emit(CommandCompleted, session, command_type=cmd.type)


async def stop_session(cmd: SessionStop, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    # A sync speak it overtook reports itself interrupted, and finishes before the stop does.
    session.interrupt_epoch += 1
    await end_session(
        ctx.services, session, StopReason.REQUESTED, cmd, detail=cmd.reason, speech_grace=5.0
    )


def account_billing(services: Services, session: Session) -> None:
    """Add the session's newly billed time to the usage metrics."""
    seconds = session.unreported_billing()
    services.metrics.billed_session_seconds_total.inc(seconds)
    services.metrics.credits_estimated_total.inc(seconds / 60 * services.credit_rate(session))


async def end_session(
    services: Services,
    session: Session,
    reason: StopReason,
    cause: Command | None,
    *,
    detail: str | None = None,
    call_provider: bool = True,
    speech_grace: float = 0.0,
    provider_end_reason: str | None = None,
) -> None:
    """Stop a session for any reason (request, policy, error, shutdown) and report its usage."""
    session.transition(SessionState.STOPPING)
    session.cancel_speech_timers()
    stopped = Stopped()
    if call_provider and session.heygen_session_id is not None:
        # Already gone on the provider's side means nothing is left to bill.
        with contextlib.suppress(SessionClosedError):
            stopped = await services.provider(session).stop(
                session.heygen_session_id, cause=reason.value
            )
    if session.speaks_running and speech_grace:
        # A pending sync speak is answered once the session stops: let its events go first.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.speaks_done.wait(), speech_grace)
    billed = session.billed_seconds()
    session.transition(SessionState.STOPPED)
    services.registry.remove(session.session_id)
    estimate = round(billed / 60 * services.credit_rate(session), 4)
    consumed = stopped.credits_consumed
    usage = Usage(
        billed_seconds=round(billed, 3),
        credits_estimate=estimate,
        tasks=session.tasks,
        characters=session.characters,
        credits=estimate if consumed is None else consumed,
        credits_source="estimate" if consumed is None else "provider",
    )
    metrics = services.metrics
    metrics.sessions_stopped_total.labels(session.provider, reason.value).inc()
    metrics.session_duration_seconds.labels(reason=reason.value).observe(billed)
    account_billing(services, session)
    await services.emitter.emit(
        SessionStopped,
        session=session,
        cause=cause,
        reason=reason,
        detail=detail,
        usage=usage,
        heygen_session_id=session.heygen_session_id,
        provider_end_reason=provider_end_reason,
    )
