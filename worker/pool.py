"""The session pool: keep-alives, idle and max-duration limits, reconciliation with the providers.

One heap of due times (sessions/timers.py) drives everything per session; work is spawned only
when something is due, never one task per session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from contracts.common import SessionState, StopReason
from contracts.events import SessionKeepaliveFailed
from worker.handlers import CONTROL_LANES, STOP
from worker.handlers.context import Services
from worker.handlers.lifecycle import account_billing, end_session
from worker.handlers.reconnect import reconnect_in_turn
from worker.providers.base import Provider, ProviderError, SessionClosedError
from worker.sessions.session import Session

log = logging.getLogger(__name__)

KEEPALIVE_FAILURES_BEFORE_RECONNECT = 3
KEEPALIVE_RETRY_S = 5.0
BILLING_ACCRUAL_S = 15.0
KEEPALIVE_STATES = frozenset({SessionState.READY, SessionState.SPEAKING})


@dataclass(frozen=True)
class PoolSettings:
    keepalive_interval_s: float
    keepalive_concurrency: int
    reconcile_interval_s: float
    leak_grace_s: float
    reap_unknown_sessions: bool


class SessionPool:
    def __init__(self, services: Services, settings: PoolSettings) -> None:
        self._services = services
        self._settings = settings
        self._keepalive_slots = asyncio.Semaphore(settings.keepalive_concurrency)
        # provider -> its session ids live but unknown here -> since when.
        self._unknown_since: dict[str, dict[str, float]] = {}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._services.timers.run(self._on_due))
            group.create_task(self._reconcile_forever())
            group.create_task(self._accrue_billing_forever())

    async def _accrue_billing_forever(self) -> None:
        """Count billed time as it passes, so credit burn shows before sessions end."""
        while True:
            await asyncio.sleep(BILLING_ACCRUAL_S)
            for session in self._services.registry:
                account_billing(self._services, session)

    # -- per-session policies -------------------------------------------------------------

    def keepalive_interval(self, session: Session) -> float:
        """Well inside the provider's idle close (a third of it at most), jittered per session."""
        remote_idle = (
            session.profile.activity_idle_timeout or self._services.provider(session).idle_close_s
        )
        base = min(self._settings.keepalive_interval_s, remote_idle / 3)
        return base * session.keepalive_jitter

    def _on_due(self, session_id: str, due: float) -> None:
        session = self._services.registry.get(session_id)
        if session is None or not session.live:
            return  # stopped sessions simply fall out of the heap
        now = time.monotonic()
        if now - session.started_at >= session.max_duration_s:
            self._stop(session, StopReason.MAX_DURATION)
            return
        if now - session.last_speech >= session.idle_timeout_s:
            self._stop(session, StopReason.IDLE)
            return
        keepalive_due = session.last_activity + self.keepalive_interval(session)
        if session.keepalive_in_flight:
            keepalive_due = now + KEEPALIVE_RETRY_S  # look again; the answer reschedules it
        elif now >= keepalive_due and session.state in KEEPALIVE_STATES:
            session.keepalive_in_flight = True
            self._services.spawn(self._keepalive(session, keepalive_due))
            keepalive_due = now + KEEPALIVE_RETRY_S
        next_due = min(
            keepalive_due,
            session.started_at + session.max_duration_s,
            session.last_speech + session.idle_timeout_s,
        )
        self._services.timers.schedule(session_id, max(next_due, now + 0.05))

    def _stop(self, session: Session, reason: StopReason) -> None:
        log.info("stopping session %s: %s", session.session_id, reason)

        async def stop() -> None:
            if session.live:
                await end_session(self._services, session, reason, None)

        preempts, overtakes = CONTROL_LANES[STOP]
        self._services.spawn(
            self._services.mailboxes.run_control(
                session.session_id,
                STOP,
                stop,
                preempts=preempts,
                overtakes=overtakes,
                reason=f"session stopped: {reason}",
            )
        )

    async def _keepalive(self, session: Session, due: float) -> None:
        try:
            await self._keepalive_once(session, due)
        finally:
            session.keepalive_in_flight = False

    async def _keepalive_once(self, session: Session, due: float) -> None:
        metrics = self._services.metrics
        async with self._keepalive_slots:
            if session.state not in KEEPALIVE_STATES or session.heygen_session_id is None:
                return
            # Measured as it is sent, after any wait for a slot: a backlog shows up here.
            metrics.keepalive_lateness_seconds.observe(time.monotonic() - due)
            try:
                await self._services.provider(session).keep_alive(session.heygen_session_id)
            except SessionClosedError as exc:
                metrics.child(metrics.keepalives_total, session.provider, "closed").inc()
                await self._reconnect(session, f"keep-alive: {exc.message}")
                return
            except ProviderError as exc:
                metrics.child(metrics.keepalives_total, session.provider, "failed").inc()
                await self._keepalive_failed(session, exc)
                return
        metrics.child(metrics.keepalives_total, session.provider, "ok").inc()
        session.keepalive_failures = 0
        session.kept_alive()
        self._services.watch(session)

    async def _keepalive_failed(self, session: Session, exc: ProviderError) -> None:
        session.keepalive_failures += 1
        give_up = session.keepalive_failures >= KEEPALIVE_FAILURES_BEFORE_RECONNECT
        await self._services.emitter.emit(
            SessionKeepaliveFailed,
            session=session,
            cause=None,
            code=exc.kind,
            message=exc.message,
            will_reconnect=give_up,
        )
        if give_up:
            await self._reconnect(session, f"{session.keepalive_failures} keep-alives failed")
        else:
            # Retried sooner than the regular interval.
            self._services.timers.schedule(session.session_id, time.monotonic() + KEEPALIVE_RETRY_S)

    async def _reconnect(self, session: Session, reason: str) -> None:
        session.keepalive_failures = 0
        await reconnect_in_turn(self._services, session, reason)

    # -- reconciliation -------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_interval_s)
            with contextlib.suppress(ProviderError):
                await self.reconcile()

    async def reconcile(self) -> None:
        """Compare the registry with each provider's list: revive what vanished, reap what
        leaked."""
        services = self._services
        now = time.monotonic()
        for name, provider in services.providers.items():
            remote = {r.provider_session_id for r in await provider.list_live()}
            known: set[str] = set()
            for session in services.registry:
                if session.heygen_session_id is None or session.provider != name:
                    continue
                known.add(session.heygen_session_id)
                vanished = session.heygen_session_id not in remote
                if vanished and session.state in KEEPALIVE_STATES:
                    services.spawn(self._reconnect(session, f"missing from {name}'s live list"))
            if self._settings.reap_unknown_sessions:
                await self._reap(provider, remote - known, now)

    async def _reap(self, provider: Provider, unknown: set[str], now: float) -> None:
        """Stop provider sessions nobody owns (leaked by a crash) once the grace has passed."""
        seen = self._unknown_since.get(provider.name, {})
        self._unknown_since[provider.name] = seen = {sid: seen.get(sid, now) for sid in unknown}
        for sid, since in list(seen.items()):
            if now - since < self._settings.leak_grace_s:
                continue
            log.warning("stopping leaked %s session %s", provider.name, sid)
            with contextlib.suppress(ProviderError):
                await provider.stop(sid, cause="error")
                self._services.metrics.leaked_sessions_stopped_total.inc()
            del seen[sid]
