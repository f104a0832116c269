"""A session as another replica needs it to take over: wall-clock times, counters, profile.

Monotonic clocks do not travel between processes, so times are stored as wall-clock and
turned back into this process's monotonic clock on load.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, SecretStr

from contracts.commands import SessionCreate
from contracts.common import SessionState
from worker.sessions.session import Session

SNAPSHOT_VERSION = 1


class SessionSnapshot(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = SNAPSHOT_VERSION
    session_id: str
    partition: int
    owner: str | None
    profile: SessionCreate
    state: SessionState
    heygen_session_id: str | None
    provider: str = "heygen"
    # Created.resume: a provider secret, kept in the worker's private state stream only.
    resume: str | None = None
    seq: int
    created_at: datetime
    started_at: datetime
    last_activity_at: datetime
    last_speech_at: datetime
    idle_timeout_s: float
    max_duration_s: float
    billed_seconds: float
    billing: bool
    tasks: int
    characters: int
    recent_commands: list[str]
    pending_command: str | None = None
    # LITE: an utterance open when this was written is cut for the next owner (at most once).
    utterance_id: str | None = None
    interrupted_utterance: str | None = None  # its remaining parts stay refused
    outbox: str | None = None
    writer: str
    written_at: datetime

    @classmethod
    def of(cls, session: Session, writer: str) -> SessionSnapshot:
        now_wall, now_mono = datetime.now(UTC), time.monotonic()

        def wall(mono: float) -> datetime:
            return now_wall - timedelta(seconds=now_mono - mono)

        # Not validated: every value comes typed from the session, and a snapshot is taken
        # before each event (validation was most of its cost).
        return cls.model_construct(
            version=SNAPSHOT_VERSION,
            session_id=session.session_id,
            partition=session.partition,
            owner=session.owner,
            profile=session.profile,
            state=session.state,
            heygen_session_id=session.heygen_session_id,
            provider=session.provider,
            resume=session.resume.get_secret_value() if session.resume else None,
            seq=session.seq,
            created_at=session.created_at,
            started_at=wall(session.started_at),
            last_activity_at=wall(session.last_activity),
            last_speech_at=wall(session.last_speech),
            idle_timeout_s=session.idle_timeout_s,
            max_duration_s=session.max_duration_s,
            billed_seconds=session.billed_seconds(now_mono),
            billing=session.billing_started_at is not None,
            tasks=session.tasks,
            characters=session.characters,
            recent_commands=list(session.recent_commands),
            pending_command=session.pending_command,
            utterance_id=session.utterance_id,
            interrupted_utterance=session.interrupted_utterance,
            outbox=session.outbox.decode() if session.outbox else None,
            writer=writer,
            written_at=now_wall,
        )

    def restore(self) -> Session:
        """The session as of this snapshot, in this process's clocks."""
        now_wall, now_mono = datetime.now(UTC), time.monotonic()

        def mono(at: datetime) -> float:
            return now_mono - (now_wall - at).total_seconds()

        # Time since the snapshot was billed too, if HeyGen was billing then.
        since = max(0.0, (now_wall - self.written_at).total_seconds()) if self.billing else 0.0
        session = Session(
            session_id=self.session_id,
            partition=self.partition,
            owner=self.owner,
            profile=self.profile,
            idle_timeout_s=self.idle_timeout_s,
            max_duration_s=self.max_duration_s,
            state=SessionState.READY if self.state is SessionState.SPEAKING else self.state,
            heygen_session_id=self.heygen_session_id,
            provider=self.provider,
            resume=SecretStr(self.resume) if self.resume else None,
            created_at=self.created_at,
            started_at=mono(self.started_at),
            last_activity=mono(self.last_activity_at),
            last_speech=mono(self.last_speech_at),
            saved_at=mono(self.written_at),
            billed_before=self.billed_seconds + since,
            billing_started_at=now_mono if self.billing else None,
            seq=self.seq,
            tasks=self.tasks,
            characters=self.characters,
        )
        session.billed_reported = session.billed_before
        session.recent_commands.extend(self.recent_commands)
        session.pending_command = self.pending_command
        session.utterance_id = self.utterance_id
        session.interrupted_utterance = self.interrupted_utterance
        session.outbox = self.outbox.encode() if self.outbox else None
        return session
