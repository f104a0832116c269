"""The session pool: keep-alives, idle and max-duration limits, and reconciliation with HeyGen.

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
from worker.handlers.reconnect import reconnect
from worker.heygen.errors import HeyGenError, SessionClosedError
from worker.sessions.session import Session

log = logging.getLogger(__name__)

HEYGEN_DEFAULT_IDLE_S = 120
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
        self._unknown_since: dict[str, float] = {}

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
        """Well inside HeyGen's idle timeout (a third of it at most), jittered per session."""
        heygen_idle = session.profile.activity_idle_timeout or HEYGEN_DEFAULT_IDLE_S
        base = min(self._settings.keepalive_interval_s, heygen_idle / 3)
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
                await self._services.heygen.keep_alive(session.heygen_session_id)
            except SessionClosedError as exc:
                metrics.child(metrics.keepalives_total, "closed").inc()
                await self._reconnect(session, f"keep-alive: {exc.message}")
                return
            except HeyGenError as exc:
                metrics.child(metrics.keepalives_total, "failed").inc()
                await self._keepalive_failed(session, exc)
                return
        metrics.child(metrics.keepalives_total, "ok").inc()
        session.keepalive_failures = 0
        session.kept_alive()
        self._services.watch(session)

    async def _keepalive_failed(self, session: Session, exc: HeyGenError) -> None:
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

        async def job() -> None:
            await reconnect(self._services, session, reason, None)

        await self._services.mailboxes.run(session.session_id, "reconnect", job)

    # -- reconciliation -------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.reconcile_interval_s)
            with contextlib.suppress(HeyGenError):
                await self.reconcile()

    async def reconcile(self) -> None:
        """Compare the registry with HeyGen's list: revive what vanished, reap what leaked."""
        services = self._services
        remote = {r.session_id for r in await services.heygen.list_sessions()}
        now = time.monotonic()
        known: set[str] = set()
        for session in services.registry:
            if session.heygen_session_id is None:
                continue
            known.add(session.heygen_session_id)
            vanished = session.heygen_session_id not in remote
            if vanished and session.state in KEEPALIVE_STATES:
                services.spawn(self._reconnect(session, "missing from streaming.list"))
        if self._settings.reap_unknown_sessions:
            await self._reap(remote - known, now)

    async def _reap(self, unknown: set[str], now: float) -> None:
        """Stop HeyGen sessions nobody owns (leaked by a crash) once the grace has passed."""
        self._unknown_since = {sid: self._unknown_since.get(sid, now) for sid in unknown}
        for heygen_id, since in list(self._unknown_since.items()):
            if now - since < self._settings.leak_grace_s:
                continue
            log.warning("stopping leaked HeyGen session %s", heygen_id)
            with contextlib.suppress(HeyGenError):
                await self._services.heygen.stop(heygen_id)
                self._services.metrics.leaked_sessions_stopped_total.inc()
            del self._unknown_since[heygen_id]
