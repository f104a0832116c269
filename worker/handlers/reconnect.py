"""Replace the provider session behind a wanted logical session that the provider closed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from contracts.commands import Command
from contracts.common import SessionState, StopReason, StreamingVersion
from contracts.events import SessionReconnected, SessionReconnecting
from worker.handlers.context import Services
from worker.handlers.lifecycle import end_session
from worker.handlers.profile import connection_fields, profile_of
from worker.providers.base import Created, ProviderError
from worker.sessions.session import Session

log = logging.getLogger(__name__)

# States a replacement may be made from: a session being created or stopped is not replaced.
WANTED = frozenset({SessionState.READY, SessionState.SPEAKING})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 10.0


async def reconnect(
    services: Services, session: Session, reason: str, cause: Command | None
) -> bool:
    """Create and start a replacement with the same profile; True when usable again.

    Sessions ended on purpose (stopping, stopped) are never revived. After the configured
    number of failed attempts the session is stopped with reason `error`.
    """
    if not session.live or session.state is SessionState.RECONNECTING:
        return False
    metrics = services.metrics
    previous = session.heygen_session_id or ""
    session.transition(SessionState.RECONNECTING)
    session.cancel_speech_timers()
    session.speaking_until = 0.0
    session.bank_billing()
    # "Wrong state" may mean the old session is still up and billing: stop it to be sure.
    with contextlib.suppress(ProviderError):
        await services.provider(session).stop(previous, cause="error")
    if session.profile.version is StreamingVersion.V1:
        await _give_up(
            services, session, cause, "v1 sessions need a new SDP answer: not reconnected"
        )
        return False
    attempts = services.policy.reconnect_attempts
    for attempt in range(1, attempts + 1):
        await services.emitter.emit(
            SessionReconnecting,
            session=session,
            cause=cause,
            attempt=attempt,
            reason=reason,
            previous_heygen_session_id=previous,
        )
        new = await _replace(services, session)
        if new is not None:
            session.connection = connection_fields(new)
            session.touch()
            session.went_live()  # sessions often reconnect together, after a provider outage
            session.transition(SessionState.READY)
            metrics.reconnects_total.labels(provider=session.provider, outcome="ok").inc()
            await services.emitter.emit(
                SessionReconnected,
                session=session,
                cause=cause,
                attempt=attempt,
                previous_heygen_session_id=previous,
                **session.connection,
            )
            services.watch(session)
            return True
        metrics.reconnects_total.labels(provider=session.provider, outcome="attempt_failed").inc()
        if attempt < attempts:
            await asyncio.sleep(random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt)))
    metrics.reconnects_total.labels(provider=session.provider, outcome="gave_up").inc()
    await _give_up(
        services, session, cause, f"reconnection failed after {attempts} attempts ({reason})"
    )
    return False


async def reconnect_in_turn(
    services: Services, session: Session, reason: str, failed: str | None = None
) -> None:
    """Reconnect the worker-initiated way: in the session's mailbox, after the command it runs,
    and only if the provider session that failed (`failed`, the current one by default) is still
    the current one: a speak or another observer of the same failure may have replaced it."""
    failed = failed or session.heygen_session_id

    async def job() -> None:
        if session.heygen_session_id == failed and session.state in WANTED:
            await reconnect(services, session, reason, None)

    await services.mailboxes.run(session.session_id, "reconnect", job)


async def _give_up(
    services: Services, session: Session, cause: Command | None, detail: str
) -> None:
    """Stop with reason error; the provider's side is already gone or stopped."""
    await end_session(
        services, session, StopReason.ERROR, cause, call_provider=False, detail=detail
    )


async def _replace(services: Services, session: Session) -> Created | None:
    provider = services.provider(session)
    try:
        made = await provider.create(profile_of(session.profile))
    except ProviderError as exc:
        log.warning("reconnect of %s: create failed: %s", session.session_id, exc)
        return None
    session.heygen_session_id = made.provider_session_id
    session.resume = made.resume
    session.billing_started_at = time.monotonic()
    try:
        await provider.start(made.provider_session_id, resume=made.resume)
    except ProviderError as exc:
        log.warning("reconnect of %s: start failed: %s", session.session_id, exc)
        session.bank_billing()
        with contextlib.suppress(ProviderError):
            await provider.stop(made.provider_session_id, cause="error")
        return None
    return made
