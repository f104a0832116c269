"""session.speak and session.interrupt."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator

from contracts.commands import SessionInterrupt, SessionSpeak
from contracts.common import RejectCode, SessionState, SpeechFinishSource, TaskMode
from contracts.events import SpeechFinished, SpeechInterrupted, SpeechStarted
from worker.handlers.context import CommandContext, Rejected, Services
from worker.handlers.reconnect import reconnect
from worker.providers.base import ProviderError, SessionClosedError
from worker.sessions.session import Session, SpeechWait

SPEAKABLE = frozenset({SessionState.READY, SessionState.SPEAKING})
# About 150 words a minute is 12 characters a second; 4 leaves room for slow voices.
SLOWEST_CHARS_PER_S = 4.0


class SpeechNotStarted(ProviderError):
    """A speak the provider accepted was not observed starting in time: `command.failed`."""

    kind = "speech_not_started"


@contextlib.contextmanager
def speaking(session: Session) -> Iterator[None]:
    """A speak handler runs: a stop waits for it, so session.stopped comes last."""
    session.speaks_running += 1
    session.speaks_done.clear()
    try:
        yield
    finally:
        session.speaks_running -= 1
        if not session.speaks_running:
            session.speaks_done.set()


async def speak(cmd: SessionSpeak, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    with speaking(session):
        await _speak(cmd, ctx, session)


async def _speak(cmd: SessionSpeak, ctx: CommandContext, session: Session) -> None:
    if session.state not in SPEAKABLE:
        raise Rejected(RejectCode.WRONG_STATE, f"session {cmd.session_id} is {session.state}")
    if session.mode == "LITE":
        raise Rejected(
            RejectCode.VALIDATION,
            f"session {cmd.session_id} is a liveavatar LITE session: it speaks your own audio "
            "(session.speak_audio), not text",
        )
    assert session.heygen_session_id is not None
    provider = ctx.services.provider(session)
    epoch = session.interrupt_epoch
    session.last_speech = time.monotonic()
    # If this replica dies during the call, the next owner must not speak it a second time.
    session.pending_command = cmd.command_id
    await ctx.services.checkpoint(session)
    if session.state not in SPEAKABLE:  # a stop overtook us during the checkpoint
        session.pending_command = None
        raise Rejected(RejectCode.CANCELLED, f"session {cmd.session_id} is {session.state}")
    session.transition(SessionState.SPEAKING)
    wait = None
    if provider.observes_speech:
        # Registered before the call: the start may be observed before the call returns.
        wait = session.speech_waits[cmd.command_id] = SpeechWait(cmd)
    try:
        spoken = await provider.speak(
            session.heygen_session_id,
            cmd.text,
            command_id=cmd.command_id,
            task_type=cmd.task_type.value,
            task_mode=cmd.task_mode.value,
            deadline=ctx.deadline,
        )
        if wait is not None:
            wait.task_id = spoken.task_id
            session.speaking_until = math.inf  # until the observed end
            await _started(ctx, session, wait)
    except SessionClosedError as exc:
        forget(session, cmd.command_id, failed=True)
        if really_closed(ctx, session, exc):
            # The failed speech is reported (command.failed), not replayed on the new session.
            await reconnect(ctx.services, session, f"speak: {exc.message}", cmd)
        raise
    except BaseException:
        forget(session, cmd.command_id, failed=True)
        raise
    settle_state(session)
    now = time.monotonic()
    session.touch(now)
    session.last_speech = now
    session.tasks += 1
    session.characters += len(cmd.text)
    metrics = ctx.services.metrics
    metrics.child(
        metrics.speech_tasks_total, session.provider, cmd.task_type.value, cmd.task_mode.value
    ).inc()
    metrics.speech_characters_total.inc(len(cmd.text))
    await ctx.emit(
        SpeechStarted,
        session,
        task_id=spoken.task_id,
        duration_ms=spoken.duration_ms,
        task_type=cmd.task_type,
        task_mode=cmd.task_mode,
        characters=len(cmd.text),
    )
    if wait is not None:
        wait.announced.set()
        if cmd.task_mode is TaskMode.SYNC:
            # Acknowledged once speech.finished is out (or an interrupt or a drop cut it); a
            # missing end does not hold the session's mailbox for ever.
            patience = ctx.services.policy.speech_start_timeout_s + _longest(cmd.text)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    await wait.ended.wait()
        return
    if spoken.ended:
        # The provider answered when the speech ended (or was cut short by an interrupt).
        await ctx.emit(
            SpeechFinished,
            session,
            task_id=spoken.task_id,
            duration_ms=spoken.duration_ms,
            source=SpeechFinishSource.OBSERVED,
            interrupted=session.interrupt_epoch != epoch,
        )
        return
    _schedule_estimated_finish(
        ctx.services, cmd, session, spoken.task_id, spoken.duration_ms or 0.0
    )


async def _started(ctx: CommandContext, session: Session, wait: SpeechWait) -> None:
    """Wait for the observed start. Speech queued ahead of this one delays it, so the patience
    is the configured wait plus the longest those texts may take to say."""
    ahead = sum(
        len(w.cause.text)
        for w in session.speech_waits.values()
        if w is not wait and isinstance(w.cause, SessionSpeak)
    )
    patience = ctx.services.policy.speech_start_timeout_s + ahead / SLOWEST_CHARS_PER_S
    try:
        async with asyncio.timeout(patience):
            await wait.started.wait()
    except TimeoutError:
        raise SpeechNotStarted(
            f"the avatar did not start speaking within {patience:.0f} s; not repeated (it may "
            "still speak it, without a speech.started)",
            endpoint="speak",
        ) from None
    if wait.dropped == "lost":
        raise SessionClosedError(
            "the session dropped before the avatar started speaking", endpoint="speak", closed=True
        )
    if wait.dropped is not None:
        raise Rejected(RejectCode.CANCELLED, "cut by an interrupt or stop before it started")


def really_closed(ctx: CommandContext, session: Session, exc: SessionClosedError) -> bool:
    """400006 right after start means the viewer has not joined yet: not a closed session."""
    if exc.closed:
        return True
    return time.monotonic() - session.started_at > ctx.services.policy.fresh_session_s


def _schedule_estimated_finish(
    services: Services, cause: SessionSpeak, session: Session, task_id: str, duration_ms: float
) -> None:
    """The provider queues async speech: this one ends `duration_ms` after the previous one."""
    now = time.monotonic()
    session.speaking_until = max(now, session.speaking_until) + duration_ms / 1000
    if session.state not in SPEAKABLE:
        return  # stopped meanwhile: nothing left to finish
    session.transition(SessionState.SPEAKING)

    def finished() -> None:
        session.speech_timers.remove(timer)
        services.spawn(_report_finished(services, session, cause, task_id, duration_ms))

    loop = asyncio.get_running_loop()
    timer = loop.call_at(loop.time() + session.speaking_until - now, finished)
    session.speech_timers.append(timer)


async def _report_finished(
    services: Services, session: Session, cause: SessionSpeak, task_id: str, duration_ms: float
) -> None:
    settle_state(session)
    if session.state is SessionState.STOPPED:
        return
    await services.emitter.emit(
        SpeechFinished,
        session=session,
        cause=cause,
        task_id=task_id,
        duration_ms=duration_ms,
        source=SpeechFinishSource.ESTIMATED,
        interrupted=False,
    )


def _longest(text: str) -> float:
    """The longest `text` may take to say, in seconds."""
    return len(text) / SLOWEST_CHARS_PER_S


def forget(session: Session, command_id: str, *, failed: bool = False) -> None:
    """No observed end is awaited for this speak any more; `failed`: none will be reported."""
    wait = session.speech_waits.pop(command_id, None)
    if wait is not None and failed:
        wait.drop("failed")
    if not session.speech_waits and session.speaking_until == math.inf:
        session.speaking_until = 0.0
    settle_state(session)


async def report_observed_end(services: Services, session: Session, wait: SpeechWait) -> None:
    """The provider saw the speech end: `speech.finished` (observed), after its start."""
    if not wait.announced.is_set():
        # Until speech.started is out, or the speak failed (then nothing is reported).
        announced = asyncio.ensure_future(wait.announced.wait())
        dropped = asyncio.ensure_future(wait.ended.wait())
        await asyncio.wait({announced, dropped}, return_when=asyncio.FIRST_COMPLETED)
        announced.cancel()
        dropped.cancel()
    if wait not in session.speech_waits.values():
        return  # interrupted or stopped meanwhile: no finish to report
    forget(session, wait.task_id if wait.audio else wait.cause.command_id)
    await services.emitter.emit(
        SpeechFinished,
        session=session,
        cause=wait.cause,
        task_id=wait.task_id,
        duration_ms=None,
        source=SpeechFinishSource.OBSERVED,
        interrupted=False,
    )
    wait.ended.set()


def settle_state(session: Session) -> None:
    """Back to ready once no speech is running or queued at the provider."""
    if session.state is SessionState.SPEAKING and session.speaking_until <= time.monotonic():
        session.transition(SessionState.READY)


async def interrupt(cmd: SessionInterrupt, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    if session.state not in SPEAKABLE:
        raise Rejected(RejectCode.WRONG_STATE, f"session {cmd.session_id} is {session.state}")
    assert session.heygen_session_id is not None
    # Bumped before the call: a sync speak it cuts may get the provider's answer before ours.
    session.interrupt_epoch += 1
    if session.utterance_id is not None:  # its remaining parts are refused, not spoken
        session.interrupted_utterance = session.utterance_id
        session.utterance_id = session.utterance_link = None
    await ctx.services.provider(session).interrupt(session.heygen_session_id, deadline=ctx.deadline)
    session.touch()
    # Interrupt ends the current speech and drops the provider's queue: no finishes follow.
    session.cancel_speech_timers()
    session.speaking_until = 0.0
    settle_state(session)
    await ctx.emit(SpeechInterrupted, session, task_id=None)
