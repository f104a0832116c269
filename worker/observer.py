"""What the providers observe on their own, turned into bus events: one task per provider reads
its `observed()` iterator; each observation becomes work on the session it concerns.

Events of one session keep the order the provider gave them: each one's work waits for the
previous one's (a chain per session), without a task per session when nothing happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from contracts.common import StopReason
from contracts.events import (
    AvatarTranscription,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)
from worker.handlers import CONTROL_LANES, STOP
from worker.handlers.audio import report_audio_started
from worker.handlers.context import Services
from worker.handlers.lifecycle import end_session
from worker.handlers.reconnect import WANTED, reconnect_in_turn
from worker.handlers.speech import report_observed_end
from worker.providers import base
from worker.sessions.session import Session, SpeechWait

log = logging.getLogger(__name__)

# A provider's own end reasons after which a wanted session is not replaced, and the stop
# reason they map onto; any other end (idle close, server error, zombie reap, a user who left)
# is reconnected while the session is wanted.
FINAL_END_REASONS: dict[str, StopReason] = {
    "MAX_DURATION_REACHED": StopReason.MAX_DURATION,
    "NO_CREDITS": StopReason.EXPIRED_REMOTELY,
    "USER_CLOSED": StopReason.EXPIRED_REMOTELY,
    "AVATAR_DELETED": StopReason.ERROR,
}
OBSERVED_KINDS: dict[type[base.Observed], str] = {
    base.SpeechStarted: "speech_started",
    base.SpeechEnded: "speech_ended",
    base.UserSpeechStarted: "user_speech_started",
    base.UserSpeechEnded: "user_speech_ended",
    base.UserTranscription: "user_transcription",
    base.AvatarTranscription: "avatar_transcription",
    base.RemoteStopped: "remote_stopped",
    base.LinkLost: "link_lost",
}


class Observer:
    def __init__(self, services: Services) -> None:
        self._services = services
        self._by_provider_id: dict[str, Session] = {}
        # The latest observation's work per session, which the next one waits for.
        self._tails: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for provider in self._services.providers.values():
                group.create_task(self._pump(provider))

    async def _pump(self, provider: base.Provider) -> None:
        metrics = self._services.metrics
        async for item in provider.observed():
            metrics.child(metrics.observed_total, provider.name, OBSERVED_KINDS[type(item)]).inc()
            try:
                self.on_observed(item)
            except Exception:
                log.exception("observation %r could not be handled", item)

    def session_of(self, provider_session_id: str) -> Session | None:
        session = self._by_provider_id.get(provider_session_id)
        if session is None or session.heygen_session_id != provider_session_id:
            # The index is rebuilt on a miss: ids change at reconnection and takeover.
            self._by_provider_id = {
                s.heygen_session_id: s for s in self._services.registry if s.heygen_session_id
            }
            session = self._by_provider_id.get(provider_session_id)
        return session if session is not None and session.live else None

    def on_observed(self, item: base.Observed) -> None:
        session = self.session_of(item.provider_session_id)
        if session is None:
            log.debug("observation for no live session: %r", type(item).__name__)
            return
        if isinstance(item, base.SpeechStarted):
            wait = session.speech_waits.get(item.command_id or "")
            if wait is not None:
                self._started(session, wait)
            return
        if isinstance(item, base.SpeechEnded):
            wait = session.speech_waits.get(item.command_id or "")
            if wait is not None:
                if wait.audio and not wait.started.is_set():
                    # Its start was said while the link was down (a LITE ws_url reopened).
                    self._started(session, wait)
                self._services.spawn(report_observed_end(self._services, session, wait))
            return
        if isinstance(item, base.RemoteStopped | base.LinkLost):
            # The session is gone from under whatever speech was awaited.
            session.drop_speech_waits("lost")
        self._in_order(session, lambda: self._handle(session, item))

    def _started(self, session: Session, wait: SpeechWait) -> None:
        wait.started.set()  # a text speak's handler publishes speech.started
        if wait.audio:  # no handler waits for an utterance's start
            self._services.spawn(report_audio_started(self._services, session, wait))

    async def _handle(self, session: Session, item: base.Observed) -> None:
        emitter = self._services.emitter
        if isinstance(item, base.UserSpeechStarted):
            await emitter.emit(UserSpeechStarted, session=session, cause=None)
        elif isinstance(item, base.UserSpeechEnded):
            await emitter.emit(UserSpeechEnded, session=session, cause=None)
        elif isinstance(item, base.UserTranscription):
            await emitter.emit(UserTranscription, session=session, cause=None, text=item.text)
        elif isinstance(item, base.AvatarTranscription):
            await emitter.emit(AvatarTranscription, session=session, cause=None, text=item.text)
        elif isinstance(item, base.RemoteStopped):
            await self._remote_stopped(session, item.provider_session_id, item.end_reason)
        elif isinstance(item, base.LinkLost):
            why = f"the link to it dropped: {item.reason}"
            await reconnect_in_turn(self._services, session, why, item.provider_session_id)

    def _in_order(self, session: Session, work: Callable[[], Awaitable[Any]]) -> None:
        previous = self._tails.get(session.session_id)

        async def chained() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            await work()

        task = asyncio.create_task(chained())
        self._tails[session.session_id] = task
        self._services.background.add(task)
        task.add_done_callback(lambda t: self._done(session.session_id, t))

    def _done(self, session_id: str, task: asyncio.Task[None]) -> None:
        self._services.background.discard(task)
        if self._tails.get(session_id) is task:
            del self._tails[session_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("observed event of %s not handled", session_id, exc_info=task.exception())

    async def _remote_stopped(self, session: Session, pid: str, end_reason: str) -> None:
        """The provider ended the session: replaced while wanted, unless the end is final."""
        final = FINAL_END_REASONS.get(end_reason)
        if final is None:
            why = f"the provider ended it ({end_reason})"
            await reconnect_in_turn(self._services, session, why, pid)
            return
        reason = final

        async def stop() -> None:
            if session.heygen_session_id == pid and session.state in WANTED:
                await end_session(
                    self._services,
                    session,
                    reason,
                    None,
                    call_provider=False,
                    detail=f"ended by the provider: {end_reason}",
                    provider_end_reason=end_reason,
                )

        await self._control(session, stop)

    async def _control(
        self, session: Session, job: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        preempts, overtakes = CONTROL_LANES[STOP]
        await self._services.mailboxes.run_control(
            session.session_id,
            STOP,
            job,
            preempts=preempts,
            overtakes=overtakes,
            reason="session ended by the provider",
        )
