"""Sessions of the simulated HeyGen account: states, idle expiry, speech timing. No HTTP here.

Expiry uses one heap of deadlines checked on every access (and by one sweeper), not a task
per session, so 10,000+ sessions cost little.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from simulator.errors import concurrent_limit, session_closed, wrong_state
from simulator.settings import SimulatorSettings
from simulator.validation import NewSessionParams

Clock = Callable[[], float]


class Status(StrEnum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class CloseReason(StrEnum):
    STOPPED = "stopped"
    IDLE = "idle"
    ADMIN = "admin"
    DURATION_LIMIT = "duration_limit"


@dataclass(slots=True, eq=False)
class Session:
    session_id: str
    api_key: str = field(repr=False)
    key_hint: str
    params: NewSessionParams
    created_mono: float
    created_wall: float
    last_activity: float
    started_mono: float | None = None
    # Monotonic time at which the current and queued speech ends.
    speech_end: float = 0.0
    closed_wall: float | None = None
    closed_reason: CloseReason | None = None
    keep_alives: int = 0
    tasks: int = 0
    characters: int = 0
    interrupts: int = 0
    ice_candidates: int = 0
    # Deadline of this session's one authoritative entry in the expiry heap.
    scheduled: float = math.inf


@dataclass(frozen=True, slots=True)
class SpeechTask:
    task_id: str
    duration_ms: int
    ends_at: float


def speech_duration_ms(text: str, words_per_minute: float, rate: float = 1.0) -> int:
    """How long the avatar takes to say text: words at words_per_minute, sped up by rate."""
    words = len(text.split())
    return max(1, round(words * 60_000 / (words_per_minute * rate)))


def key_hint(api_key: str) -> str:
    """A short, non-reversible name for a key, for stats (the key itself is never shown)."""
    return "sha256:" + hashlib.sha256(api_key.encode()).hexdigest()[:8]


class SessionStore:
    """All sessions, live and recently closed, with their per-key concurrency accounting."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        on_speech_cut: Callable[[str], None] = lambda _session_id: None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_speech_cut = on_speech_cut
        self._sessions: dict[str, Session] = {}
        self._live_by_key: dict[str, set[str]] = {}
        self._closed: deque[str] = deque()
        self._heap: list[tuple[float, str]] = []
        self._hints: dict[str, str] = {}

    def configure(self, settings: SimulatorSettings) -> None:
        """Use new settings; deadlines that moved earlier are rescheduled."""
        self._settings = settings
        for ids in self._live_by_key.values():
            for session_id in ids:
                self._schedule(self._sessions[session_id])

    # Queries

    def status(self, session: Session) -> Status:
        if session.closed_reason is not None:
            return Status.CLOSED
        if session.started_mono is None:
            return Status.NEW
        if self._clock() - session.started_mono < self._settings.connect_delay_s:
            return Status.CONNECTING
        return Status.CONNECTED

    def speaking(self, session: Session) -> bool:
        return session.closed_reason is None and session.speech_end > self._clock()

    @property
    def live_count(self) -> int:
        self.expire_due()
        return sum(len(ids) for ids in self._live_by_key.values())

    def live(self, api_key: str, session_id: str) -> Session:
        """The caller's live session; unknown or foreign ones answer "not in correct state",
        closed ones "session state wrong: closed" (both code 400006)."""
        self.expire_due()
        session = self._sessions.get(session_id)
        if session is None or session.api_key != api_key:
            raise wrong_state()
        if session.closed_reason is not None:
            raise session_closed()
        return session

    def live_sessions(self, api_key: str) -> list[Session]:
        self.expire_due()
        return [self._sessions[sid] for sid in self._live_by_key.get(api_key, ())]

    def history(self, api_key: str) -> list[Session]:
        """The key's sessions, live and kept closed ones, newest first."""
        self.expire_due()
        return [s for s in reversed(self._sessions.values()) if s.api_key == api_key]

    def all_sessions(self) -> list[Session]:
        self.expire_due()
        return list(self._sessions.values())

    def wall_time(self, mono: float) -> float:
        """The wall-clock time of a monotonic instant."""
        return self._wall_clock() - (self._clock() - mono)

    def describe(self, session: Session) -> dict[str, Any]:
        """The session as GET /_admin/stats shows it."""
        return {
            "status": self.status(session).value,
            "version": session.params.version,
            "avatar_id": session.params.avatar_id,
            "keep_alives": session.keep_alives,
            "tasks": session.tasks,
            "characters": session.characters,
            "interrupts": session.interrupts,
            "ice_candidates": session.ice_candidates,
            "speaking": self.speaking(session),
            "created_at": session.created_wall,
            "closed_at": session.closed_wall,
            "closed_reason": session.closed_reason.value if session.closed_reason else None,
            "api_key_hint": session.key_hint,
        }

    # Changes

    def create(self, api_key: str, params: NewSessionParams) -> Session:
        self.expire_due()
        live = self._live_by_key.setdefault(api_key, set())
        if len(live) >= self._settings.concurrency_limit:
            raise concurrent_limit()
        now = self._clock()
        hint = self._hints.get(api_key)
        if hint is None:
            hint = self._hints[api_key] = key_hint(api_key)
        session = Session(
            session_id=str(uuid.uuid4()),
            api_key=api_key,
            key_hint=hint,
            params=params,
            created_mono=now,
            created_wall=self._wall_clock(),
            last_activity=now,
        )
        self._sessions[session.session_id] = session
        live.add(session.session_id)
        self._schedule(session)
        return session

    def start(self, session: Session) -> None:
        if session.started_mono is not None:
            raise wrong_state()
        session.started_mono = session.last_activity = self._clock()

    def add_ice(self, session: Session) -> None:
        session.ice_candidates += 1

    def speak(self, session: Session, text: str) -> SpeechTask:
        """Queue text behind any speech in progress; a session not yet connected answers 400006."""
        if self.status(session) is not Status.CONNECTED:
            raise wrong_state()
        now = self._clock()
        duration_ms = speech_duration_ms(
            text, self._settings.words_per_minute, session.params.voice_rate
        )
        session.speech_end = max(now, session.speech_end) + duration_ms / 1000
        session.last_activity = now
        session.tasks += 1
        session.characters += len(text)
        return SpeechTask(uuid.uuid4().hex, duration_ms, session.speech_end)

    def interrupt(self, session: Session) -> None:
        """End current speech and drop queued speech; nothing to cut when silent."""
        now = self._clock()
        session.interrupts += 1
        session.last_activity = now
        if session.speech_end > now:
            session.speech_end = now
            self._on_speech_cut(session.session_id)
            self._schedule(session)

    def keep_alive(self, session: Session) -> None:
        session.keep_alives += 1
        session.last_activity = self._clock()

    def close(self, session: Session, reason: CloseReason, at: float | None = None) -> None:
        """Close a live session (at: monotonic time it ended, default now)."""
        now = self._clock()
        ended = now if at is None else at
        session.closed_reason = reason
        session.closed_wall = self.wall_time(ended)
        session.speech_end = min(session.speech_end, ended)
        session.scheduled = math.inf
        self._live_by_key[session.api_key].discard(session.session_id)
        self._on_speech_cut(session.session_id)
        self._closed.append(session.session_id)
        while len(self._closed) > self._settings.closed_sessions_kept:
            self._sessions.pop(self._closed.popleft(), None)

    def close_by_id(self, session_id: str, reason: CloseReason) -> Session:
        """Close any key's session; unknown ids raise KeyError, closed ones ValueError."""
        self.expire_due()
        session = self._sessions[session_id]
        if session.closed_reason is not None:
            raise ValueError(f"session already closed ({session.closed_reason.value})")
        self.close(session, reason)
        return session

    def expire_due(self) -> int:
        """Close every session whose idle (or duration) deadline has passed; how many closed."""
        now = self._clock()
        heap = self._heap
        closed = 0
        while heap and heap[0][0] <= now:
            deadline, session_id = heapq.heappop(heap)
            session = self._sessions.get(session_id)
            # Entries superseded by an earlier deadline, or of closed sessions, are stale.
            if session is None or session.scheduled != deadline:
                continue
            session.scheduled = math.inf
            actual, reason = self._deadline(session)
            if actual <= now:
                self.close(session, reason, at=actual)
                closed += 1
            else:
                self._schedule(session)
        return closed

    def reset(self) -> None:
        for ids in self._live_by_key.values():
            for session_id in ids:
                self._on_speech_cut(session_id)
        self._sessions.clear()
        self._live_by_key.clear()
        self._closed.clear()
        self._heap.clear()

    # Expiry bookkeeping

    def _deadline(self, session: Session) -> tuple[float, CloseReason]:
        # Speech counts as activity: the idle countdown starts when the avatar falls silent.
        timeout = self._settings.idle_timeout_override_s or session.params.activity_idle_timeout
        idle = max(session.last_activity, session.speech_end) + timeout
        if self._settings.enforce_session_duration_limit:
            limit = session.created_mono + self._settings.session_duration_limit_s
            if limit < idle:
                return limit, CloseReason.DURATION_LIMIT
        return idle, CloseReason.IDLE

    def _schedule(self, session: Session) -> None:
        # Deadlines usually move later (activity): the old entry is then re-pushed when it pops.
        # Only an earlier deadline needs a new entry now.
        deadline, _ = self._deadline(session)
        if deadline < session.scheduled:
            session.scheduled = deadline
            heapq.heappush(self._heap, (deadline, session.session_id))
