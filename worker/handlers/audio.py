"""session.speak_audio: the parts of a LITE utterance, in order, each sent in full before it is
answered `command.completed`.

At most once: an utterance belongs to the provider session and the replica that began it. When
either changed under it (a crash or takeover, a replaced session, a failed send), its remaining
parts are answered `command.failed` (`interrupted`): the avatar may already have spoken some of
it, and what was sent is never sent again. After an interrupt they are refused (`cancelled`).
"""

from __future__ import annotations

import math
import time

from contracts.commands import SessionSpeakAudio, decode_audio
from contracts.common import RejectCode, SessionState, TaskMode, TaskType
from contracts.events import CommandCompleted, SpeechStarted
from worker.handlers.context import CommandContext, Rejected, Services
from worker.handlers.reconnect import reconnect
from worker.handlers.speech import SPEAKABLE, forget, really_closed, speaking
from worker.providers.base import Provider, ProviderError, SessionClosedError
from worker.sessions.session import Session, SpeechWait


class UtteranceCut(ProviderError):
    """A part of an utterance cut by a crash, a takeover or a replaced session."""

    kind = "interrupted"


async def speak_audio(cmd: SessionSpeakAudio, ctx: CommandContext) -> None:
    session = ctx.session(cmd.session_id)
    if session.mode != "LITE":
        raise Rejected(
            RejectCode.VALIDATION,
            f"session {cmd.session_id} is not a liveavatar LITE session: it speaks text "
            "(session.speak)",
        )
    with speaking(session):
        await _speak_audio(cmd, ctx, session)


async def _speak_audio(cmd: SessionSpeakAudio, ctx: CommandContext, session: Session) -> None:
    if session.state not in SPEAKABLE:
        raise Rejected(RejectCode.WRONG_STATE, f"session {cmd.session_id} is {session.state}")
    pid = session.heygen_session_id
    assert pid is not None
    provider = ctx.services.provider(session)
    utterance = cmd.utterance_id
    if utterance == session.interrupted_utterance:
        if cmd.final:
            session.interrupted_utterance = None
        raise Rejected(RejectCode.CANCELLED, f"utterance {utterance} was interrupted")
    await _close_inherited(provider, session, ctx.deadline)
    if utterance == session.utterance_id and session.utterance_link != pid:
        if cmd.final:
            session.utterance_id = session.utterance_link = None
        raise UtteranceCut(
            f"utterance {utterance} was cut when its session changed hands (a crash, a "
            "takeover, a replaced session or a failed send); its rest is not sent, as the "
            "avatar may already have spoken part of it",
            endpoint="speak_audio",
        )
    fresh = utterance != session.utterance_id
    if fresh:
        session.utterance_id, session.utterance_link = utterance, pid
    # If this replica dies during the call, the next owner must not send it a second time.
    session.pending_command = cmd.command_id
    await ctx.services.checkpoint(session)
    if session.state not in SPEAKABLE:  # a stop overtook us during the checkpoint
        session.pending_command = None
        raise Rejected(RejectCode.CANCELLED, f"session {cmd.session_id} is {session.state}")
    if fresh:
        session.transition(SessionState.SPEAKING)
        session.speaking_until = math.inf  # until the observed end
        # Registered before the call: the start may be observed before the call returns.
        session.speech_waits[utterance] = SpeechWait(cmd, task_id=utterance, audio=True)
    try:
        sent = await provider.speak_audio(
            pid,
            decode_audio(cmd.audio),
            utterance_id=utterance,
            final=cmd.final,
            deadline=ctx.deadline,
        )
    except SessionClosedError as exc:
        _broken(session, utterance)
        if really_closed(ctx, session, exc):
            await reconnect(ctx.services, session, f"speak_audio: {exc.message}", cmd)
        raise
    except BaseException:
        _broken(session, utterance)
        raise
    now = time.monotonic()
    session.touch(now)
    session.last_speech = now
    if sent.cut:
        raise Rejected(RejectCode.CANCELLED, f"utterance {utterance} was interrupted")
    if cmd.final and session.utterance_id == utterance:
        session.utterance_id = session.utterance_link = None
    await ctx.emit(CommandCompleted, session, command_type=cmd.type)


async def _close_inherited(provider: Provider, session: Session, deadline: float | None) -> None:
    """An utterance this replica inherited open (a crash or takeover mid-utterance) is ended
    at the avatar with no more audio, so it leaves its speaking state and speaks the next one."""
    if session.utterance_id is None or session.utterance_link is not None:
        return
    assert session.heygen_session_id is not None
    await provider.speak_audio(
        session.heygen_session_id,
        b"",
        utterance_id=session.utterance_id,
        final=True,
        deadline=deadline,
    )
    session.utterance_link = ""


def _broken(session: Session, utterance: str) -> None:
    """A part failed: what was sent may be spoken, the rest of the utterance is not sent."""
    forget(session, utterance, failed=True)
    if session.utterance_id == utterance:
        session.utterance_link = ""


async def report_audio_started(services: Services, session: Session, wait: SpeechWait) -> None:
    """The avatar started an audio utterance: `speech.started` for it (its parts do not wait)."""
    if session.speech_waits.get(wait.task_id) is not wait or wait.announced.is_set():
        return
    await services.emitter.emit(
        SpeechStarted,
        session=session,
        cause=wait.cause,
        task_id=wait.task_id,
        duration_ms=None,
        task_type=TaskType.REPEAT,
        task_mode=TaskMode.ASYNC,
        characters=0,
    )
    wait.announced.set()
