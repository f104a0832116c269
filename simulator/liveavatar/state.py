"""Sessions and credit balances of the simulated LiveAvatar accounts. No HTTP here.

A session is created by /v1/sessions/token, goes live at /v1/sessions/start (one billed minute
held) and ends with one of LiveAvatar's end reasons. Each live session is charged its rate once
a billing period; a session whose account cannot pay ends with NO_CREDITS. Deadlines are checked
when a session is touched and by the sweeper, so nothing needs a task per session.
"""

from __future__ import annotations

import math
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from simulator.errors import ApiError
from simulator.liveavatar.settings import LiveAvatarSettings
from simulator.liveavatar.validation import EndReason, TokenRequest
from simulator.state import Clock

CREDITS_PER_MINUTE = {"FULL": 2.0, "LITE": 1.0, "CUSTOM": 1.0}


class Status(StrEnum):
    CREATED = "created"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(slots=True, eq=False)
class Session:
    session_id: str
    api_key: str = field(repr=False)
    request: TokenRequest
    session_token: str = field(repr=False)
    created_wall: float
    rate: float  # credits a billing period; 0 in the sandbox
    status: Status = Status.CREATED
    started_mono: float = 0.0
    started_wall: float | None = None
    last_activity: float = 0.0
    max_duration_s: float = math.inf
    charged_periods: int = 0
    keep_alives: int = 0
    commands: int = 0  # packets on agent-control the avatar acted on
    agent_token: str = field(default="", repr=False)
    client_token: str = field(default="", repr=False)
    ended_wall: float | None = None
    end_reason: EndReason | None = None

    @property
    def credits_consumed(self) -> float:
        return self.charged_periods * self.rate


def _iso(wall: float | None) -> str | None:
    return None if wall is None else datetime.fromtimestamp(wall, UTC).isoformat()


def _token() -> str:
    return secrets.token_urlsafe(32)


def not_found(what: str) -> ApiError:
    return ApiError(404, 404, f"{what} not found")


def not_active(session_id: str) -> ApiError:
    # LiveAvatar's answer for a call on an ended session is not documented: the simulator's.
    return ApiError(400, 400, f"Session {session_id} is not active")


class SessionStore:
    def __init__(
        self,
        settings: Callable[[], LiveAvatarSettings],
        *,
        on_end: Callable[[Session], None],
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self.default_credits = settings().credits
        self._on_end = on_end
        self._clock = clock
        self._wall_clock = wall_clock
        self._sessions: dict[str, Session] = {}
        self._live: dict[str, Session] = {}  # active ones, in the order they started
        self._live_per_key: Counter[str] = Counter()
        self._by_token: dict[str, Session] = {}
        self._by_agent_token: dict[str, Session] = {}
        self._balances: dict[str, float] = {}

    # Accounts

    def balance(self, api_key: str) -> float:
        return self._balances.setdefault(api_key, self.default_credits)

    def set_balance(self, api_key: str | None, credits: float) -> None:
        """One account's balance, or every known account's and the default (api_key None)."""
        if api_key is not None:
            self._balances[api_key] = credits
            return
        self.default_credits = credits
        for key in self._balances:
            self._balances[key] = credits

    # Queries

    def get(self, api_key: str, session_id: str) -> Session:
        """The key's session (deadlines checked); 404 for an unknown or foreign one."""
        session = self.find(session_id)
        if session is None or session.api_key != api_key:
            raise not_found("Session")
        return session

    def find(self, session_id: str) -> Session | None:
        """Any key's session, for the admin API."""
        return self._checked(self._sessions.get(session_id))

    def by_session_token(self, token: str) -> Session | None:
        return self._checked(self._by_token.get(token))

    def by_agent_token(self, token: str) -> Session | None:
        return self._checked(self._by_agent_token.get(token))

    def _checked(self, session: Session | None) -> Session | None:
        """`session` with its deadlines checked first (it may have just ended)."""
        if session is not None:
            self.check(session)
        return session

    def listed(self, api_key: str, status: Status) -> list[Session]:
        """The key's sessions in `status`, newest first."""
        self.sweep()
        pool = self._live if status is Status.ACTIVE else self._sessions
        return [s for s in reversed(pool.values()) if s.api_key == api_key and s.status is status]

    def all(self) -> list[Session]:
        self.sweep()
        return list(self._sessions.values())

    def balances(self) -> dict[str, float]:
        return dict(self._balances)

    def live(self) -> list[Session]:
        return list(self._live.values())

    def row(self, session: Session) -> dict[str, Any]:
        """The session as GET /v1/sessions lists it."""
        updated = session.ended_wall or session.started_wall or session.created_wall
        started = session.started_wall
        end = session.ended_wall or (self._wall_clock() if started is not None else None)
        row: dict[str, Any] = {
            "id": session.session_id,
            "created_at": _iso(session.created_wall),
            "updated_at": _iso(updated),
            "duration": 0 if started is None or end is None else round(end - started),
            "source": "API",
            "mode": session.request.mode,
            "is_sandbox": session.request.is_sandbox,
            "credits_consumed": f"{session.credits_consumed:.2f}",
        }
        if session.status is Status.ENDED:
            row["end_at"] = _iso(session.ended_wall)
            row["end_reason"] = session.end_reason
        return row

    # Changes

    def create(self, api_key: str, request: TokenRequest) -> Session:
        session = Session(
            session_id=str(uuid.uuid4()),
            api_key=api_key,
            request=request,
            session_token=_token(),
            created_wall=self._wall_clock(),
            rate=0.0 if request.is_sandbox else CREDITS_PER_MINUTE[request.mode],
        )
        self._sessions[session.session_id] = session
        self._by_token[session.session_token] = session
        return session

    def start(self, session: Session) -> None:
        """Go live, holding one period's credits; 402 when the account cannot pay it."""
        if session.status is not Status.CREATED:
            raise ApiError(400, 400, "Session already started")
        settings = self._settings()
        if self._live_per_key[session.api_key] >= settings.concurrency_limit:
            raise ApiError(429, 429, "Concurrent session limit reached")
        if self.balance(session.api_key) < session.rate:
            raise ApiError(402, 402, "Insufficient credits")
        now = self._clock()
        requested = session.request.max_session_duration or math.inf
        cap = settings.sandbox_duration_s if session.request.is_sandbox else math.inf
        session.max_duration_s = min(requested, settings.max_session_duration_s, cap)
        session.status = Status.ACTIVE
        session.started_mono = session.last_activity = now
        session.started_wall = self._wall_clock()
        session.agent_token = _token()
        session.client_token = _token()
        self._by_agent_token[session.agent_token] = session
        self._live[session.session_id] = session
        self._live_per_key[session.api_key] += 1
        self._charge(session)

    def touch(self, session: Session) -> None:
        """Activity that resets the idle timer (keep-alive, a command packet, the user's voice)."""
        self.check(session)
        if session.status is not Status.ACTIVE:
            raise not_active(session.session_id)
        session.last_activity = self._clock()

    def end(self, session: Session, reason: EndReason) -> None:
        if session.status is Status.ENDED:
            raise not_active(session.session_id)
        if self._live.pop(session.session_id, None) is not None:
            self._live_per_key[session.api_key] -= 1
        session.status = Status.ENDED
        session.end_reason = reason
        session.ended_wall = self._wall_clock()
        self._by_agent_token.pop(session.agent_token, None)
        self._on_end(session)

    def check(self, session: Session) -> None:
        """Bill the periods begun and end the session whose time is up."""
        if session.status is not Status.ACTIVE:
            return
        now = self._clock()
        elapsed = now - session.started_mono
        due = int(elapsed // self._settings().billing_period_s) + 1
        while session.charged_periods < due:
            if not self._charge(session):
                self.end(session, "NO_CREDITS")
                return
        if now - session.last_activity >= self._settings().idle_timeout_s:
            self.end(session, "IDLE_TIMEOUT")
        elif elapsed >= session.max_duration_s:
            self.end(session, "MAX_DURATION_REACHED")

    def sweep(self) -> None:
        for session in self.live():
            self.check(session)

    def reset(self) -> None:
        for session in self.live():
            self.end(session, "SERVER_ERROR")
        self._sessions.clear()
        self._by_token.clear()
        self._by_agent_token.clear()
        self._live_per_key.clear()
        self._balances.clear()
        self.default_credits = self._settings().credits

    def _charge(self, session: Session) -> bool:
        balance = self.balance(session.api_key)
        if balance < session.rate:
            return False
        self._balances[session.api_key] = balance - session.rate
        session.charged_periods += 1
        return True
