"""One logical session: our stable id, the current HeyGen session behind it, and its counters."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr

from contracts.commands import SessionCreate, SessionSpeak, SessionSpeakAudio
from contracts.common import LiveAvatarMode, SessionState

# Which state may follow which; anything else is a bug worth failing loudly on.
_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.CREATING: frozenset(
        {SessionState.READY, SessionState.STOPPING, SessionState.STOPPED}
    ),
    SessionState.READY: frozenset(
        {SessionState.SPEAKING, SessionState.STOPPING, SessionState.RECONNECTING}
    ),
    SessionState.SPEAKING: frozenset(
        {SessionState.READY, SessionState.STOPPING, SessionState.RECONNECTING}
    ),
    SessionState.RECONNECTING: frozenset(
        {SessionState.READY, SessionState.STOPPING, SessionState.STOPPED}
    ),
    SessionState.STOPPING: frozenset({SessionState.STOPPED}),
    SessionState.STOPPED: frozenset(),
}

RECENT_COMMANDS = 64
# Each session's keep-alive interval is jittered. The first one after the session goes live here
# (created, reconnected or taken over) is drawn from almost the whole interval: sessions that went
# live together (a burst of creates, a failover) are then due at about sessions / interval per
# second, not at the rate they went live. Later ones stay close to the interval: few are sent.
FIRST_KEEPALIVE_JITTER = (0.1, 1.0)
KEEPALIVE_JITTER = (0.85, 1.0)

LIVE_STATES = frozenset(
    {SessionState.CREATING, SessionState.READY, SessionState.SPEAKING, SessionState.RECONNECTING}
)


class IllegalTransition(RuntimeError):
    pass


@dataclass(eq=False, slots=True)
class SpeechWait:
    """A speak sent to a provider that observes speech, until its observed end.

    `started`: the provider said the avatar started it. `announced`: `speech.started` is
    confirmed (so `speech.finished` may follow). `ended`: `speech.finished` is out, or an
    interrupt dropped it.
    """

    # The speak, or the first part of an audio utterance (whose observed start the observer
    # announces: its parts do not wait for it).
    cause: SessionSpeak | SessionSpeakAudio
    task_id: str = ""
    started: asyncio.Event = field(default_factory=asyncio.Event)
    announced: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    # Why it will never be observed: "cut" (interrupt, stop) or "lost" (the session dropped).
    dropped: str | None = None
    audio: bool = False  # an audio utterance (keyed by its utterance id)

    def drop(self, why: str) -> None:
        self.dropped = self.dropped or why
        self.started.set()  # wakes a speak still waiting for the start; it reads `dropped`
        self.ended.set()


@dataclass(eq=False, slots=True)
class Session:
    session_id: str
    partition: int
    owner: str | None
    profile: SessionCreate
    idle_timeout_s: float
    max_duration_s: float
    state: SessionState = SessionState.CREATING
    # The provider it runs on ("heygen", "liveavatar") and that provider's current session id.
    provider: str = "heygen"
    heygen_session_id: str | None = None
    # Provider-private secret to re-attach the worker's link after a takeover (Created.resume).
    resume: SecretStr | None = None
    # What session.created / session.reconnected carried, to answer a redelivered create.
    connection: dict[str, Any] | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: float = field(default_factory=time.monotonic)
    # HeyGen counts tasks, keep-alives and interrupts as activity; our idle policy counts speech.
    last_activity: float = field(default_factory=time.monotonic)
    last_speech: float = field(default_factory=time.monotonic)
    billing_started_at: float | None = None
    # Seconds billed by HeyGen sessions this one had before a reconnection.
    billed_before: float = 0.0
    # Billed seconds already added to the metrics (they accrue while the session runs).
    billed_reported: float = 0.0
    keepalive_jitter: float = field(default_factory=lambda: random.uniform(*FIRST_KEEPALIVE_JITTER))
    keepalive_failures: int = 0
    keepalive_in_flight: bool = False
    # Ids of the latest commands run for this session: survives handover in the snapshot,
    # so a command redelivered to the next owner is not executed twice.
    recent_commands: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_COMMANDS))
    # A command whose HeyGen side effect may have happened without any event saying so yet.
    pending_command: str | None = None
    # Dropped by this replica because another one owns its partition now: it must not emit.
    handed_over: bool = False
    # The event being published: snapshotted first, so a new owner can re-publish it
    # (same event_id and seq) if this replica died before the broker confirmed it.
    outbox: bytes | None = None
    # When its latest confirmed snapshot was taken (the refresh re-saves the oldest first).
    saved_at: float = 0.0
    seq: int = 0
    tasks: int = 0
    characters: int = 0
    # Bumped by every interrupt, so a sync speak can tell it was cut short.
    interrupt_epoch: int = 0
    # Speak handlers running now; a stop waits for them so session.stopped comes last.
    speaks_running: int = 0
    speaks_done: asyncio.Event = field(default_factory=asyncio.Event)
    speaking_until: float = 0.0
    speech_timers: list[asyncio.TimerHandle] = field(default_factory=list)
    # Speaks whose observed end is awaited, by command id (utterance id for audio).
    speech_waits: dict[str, SpeechWait] = field(default_factory=dict)
    # LITE: the audio utterance whose parts are being sent (snapshotted), the provider session
    # this replica sends it on (None: not this replica; "": cut and closed at the avatar), and
    # the one an interrupt cut (snapshotted: its remaining parts are refused).
    utterance_id: str | None = None
    utterance_link: str | None = None
    interrupted_utterance: str | None = None
    # Serialises (assign seq, publish) so consumers see seq in publish order.
    emit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def mode(self) -> Literal["FULL", "LITE"]:
        """LiveAvatar's mode (FULL for every other provider's session)."""
        return "LITE" if self.profile.mode is LiveAvatarMode.LITE else "FULL"

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def transition(self, to: SessionState) -> None:
        if to is self.state:
            return
        if to not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"session {self.session_id}: {self.state} -> {to}")
        self.state = to

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def touch(self, now: float | None = None) -> None:
        self.last_activity = time.monotonic() if now is None else now

    def went_live(self) -> None:
        """Its next keep-alive interval is drawn widely again (see FIRST_KEEPALIVE_JITTER)."""
        self.keepalive_jitter = random.uniform(*FIRST_KEEPALIVE_JITTER)

    def kept_alive(self) -> None:
        """A keep-alive went through. The takeover's at-once keep-alive (no activity known,
        sent to all taken-over sessions together) keeps the wide draw for the interval after it.
        """
        if self.last_activity:
            self.keepalive_jitter = random.uniform(*KEEPALIVE_JITTER)
        self.touch()

    def billed_seconds(self, now: float | None = None) -> float:
        if self.billing_started_at is None:
            return self.billed_before
        current = (time.monotonic() if now is None else now) - self.billing_started_at
        return self.billed_before + max(0.0, current)

    def unreported_billing(self) -> float:
        """Billed seconds not yet counted in the metrics; marks them counted."""
        billed = self.billed_seconds()
        delta, self.billed_reported = billed - self.billed_reported, billed
        return max(0.0, delta)

    def bank_billing(self) -> None:
        """The current HeyGen session is gone: keep what it billed, stop counting."""
        self.billed_before = self.billed_seconds()
        self.billing_started_at = None

    def cancel_speech_timers(self) -> None:
        """No finish of the current or queued speech will be reported (interrupt, stop)."""
        for timer in self.speech_timers:
            timer.cancel()
        self.speech_timers.clear()
        self.drop_speech_waits("cut")

    def drop_speech_waits(self, why: str) -> None:
        for wait in self.speech_waits.values():
            wait.drop(why)
        self.speech_waits.clear()
