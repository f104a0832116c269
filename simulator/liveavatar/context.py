"""The LiveAvatar simulator's whole state behind one object: settings, sessions, rooms, faults."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict
from typing import Any

from aiohttp import web

from simulator.errors import ApiError
from simulator.faults import FaultInjector
from simulator.liveavatar.lite import LiteAvatars
from simulator.liveavatar.room import Rooms
from simulator.liveavatar.settings import LiveAvatarSettings
from simulator.liveavatar.state import Session, SessionStore, Status
from simulator.state import key_hint


def unauthorized(message: str = "Invalid API key") -> ApiError:
    return ApiError(401, 401, message)


class LiveAvatarSimulator:
    def __init__(self, settings: LiveAvatarSettings) -> None:
        self._initial = settings
        self.settings = settings
        self.rooms = Rooms(lambda: self.settings)
        self.lite = LiteAvatars(lambda: self.settings)
        self.store = SessionStore(lambda: self.settings, on_end=self._ended)
        self.rng = random.Random(settings.fault_seed)
        self.faults = FaultInjector(settings.faults, self.rng)
        self.calls: Counter[str] = Counter()

    def _ended(self, session: Session) -> None:
        self.rooms.end(session.session_id, session.end_reason or "UNKNOWN")
        self.lite.end(session.session_id)

    def authenticate(self, api_key: str | None) -> str:
        if not api_key:
            raise unauthorized("Missing X-API-KEY")
        accepted = self.settings.api_keys
        if accepted and api_key not in {k.get_secret_value() for k in accepted}:
            raise unauthorized()
        return api_key

    def started(self, session: Session) -> None:
        if session.request.full:
            self.rooms.open(session.session_id)
        else:
            self.lite.open(session.session_id, lambda: self.store.touch(session))

    def reconfigure(self, changes: dict[str, Any]) -> None:
        self.settings = self.settings.patched(changes)

    def reset(self) -> None:
        """Forget sessions, balances, counts, faults and run-time changes."""
        self.settings = self._initial
        self.store.reset()
        self.rng.seed(self._initial.fault_seed)
        self.faults = FaultInjector(self._initial.faults, self.rng)
        self.calls.clear()

    def stats(self) -> dict[str, Any]:
        sessions = self.store.all()
        return {
            "calls": dict(self.calls),
            "live_sessions": sum(1 for s in sessions if s.status is Status.ACTIVE),
            "sessions": {s.session_id: self._describe(s) for s in sessions},
            "balances": {key_hint(k): v for k, v in self.store.balances().items()},
        }

    def _describe(self, session: Session) -> dict[str, Any]:
        room = self.rooms.get(session.session_id)
        lite = self.lite.stats(session.session_id)
        return {
            "status": session.status.value,
            "mode": session.request.mode,
            "is_sandbox": session.request.is_sandbox,
            "end_reason": session.end_reason,
            "credits_consumed": session.credits_consumed,
            "keep_alives": session.keep_alives,
            "commands": session.commands,
            "room_sockets": room.joined if room else 0,
            "api_key_hint": key_hint(session.api_key),
            "lite": None if lite is None else asdict(lite),
        }


LIVEAVATAR: web.AppKey[LiveAvatarSimulator] = web.AppKey("liveavatar", LiveAvatarSimulator)
