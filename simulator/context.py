"""The simulator's whole state behind one object: settings, sessions, faults, call counts."""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from typing import Any

from aiohttp import web

from simulator.errors import no_api_access, unauthorized
from simulator.faults import FaultInjector
from simulator.ratelimit import RateLimiter
from simulator.settings import ANY_ENDPOINT, SimulatorSettings
from simulator.speech import SpeechWaiters
from simulator.state import Clock, SessionStore

# endpoint, session_id, HTTP status (0: connection reset), applied (the effect happened), time
RequestRecord = tuple[str, str | None, int, bool, float]


class Simulator:
    """Shared by the HeyGen routes and the admin routes of one application."""

    def __init__(self, settings: SimulatorSettings, *, clock: Clock = time.monotonic) -> None:
        self._initial = settings
        self.clock = clock
        self.waiters = SpeechWaiters(clock)
        self.store = SessionStore(settings, clock=clock, on_speech_cut=self.waiters.cut)
        self.rng = random.Random(settings.fault_seed)
        self.faults = FaultInjector(settings.faults, self.rng)
        self.rate_limiter = RateLimiter(clock)
        self.calls: Counter[str] = Counter()
        self.requests: deque[RequestRecord] = deque(maxlen=settings.request_log_size)
        self.requests_total = 0
        self._use(settings)

    def _use(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._accepted = frozenset(k.get_secret_value() for k in settings.api_keys)
        self._forbidden = frozenset(k.get_secret_value() for k in settings.forbidden_keys)
        self.store.configure(settings)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        """Apply PATCH /_admin/config changes; ValueError (pydantic's included) when invalid."""
        self._use(self.settings.patched(changes))

    def reset(self) -> None:
        """Forget sessions, counts, faults and run-time changes: as freshly started."""
        self.store.reset()
        self.rng.seed(self._initial.fault_seed)
        self.faults = FaultInjector(self._initial.faults, self.rng)
        self.rate_limiter.reset()
        self.calls.clear()
        self.requests.clear()
        self.requests_total = 0
        self._use(self._initial)

    def authenticate(self, api_key: str | None) -> str:
        if not api_key:
            raise unauthorized()
        if api_key in self._forbidden:
            raise no_api_access()
        if self._accepted and api_key not in self._accepted:
            raise unauthorized()
        return api_key

    def latency_s(self, endpoint: str) -> float:
        latency = self.settings.latency
        if not latency:
            return 0.0
        chosen = latency.get(endpoint) or latency.get(ANY_ENDPOINT)
        if chosen is None:
            return 0.0
        return (chosen.fixed_ms + self.rng.random() * chosen.jitter_ms) / 1000

    def record(self, endpoint: str, session_id: str | None, status: int, applied: bool) -> None:
        self.requests.append((endpoint, session_id, status, applied, time.time()))
        self.requests_total += 1

    def stats(self, *, include_requests: bool = True) -> dict[str, Any]:
        sessions = self.store.all_sessions()
        result: dict[str, Any] = {
            "calls": dict(self.calls),
            "live_sessions": self.store.live_count,
            "sessions": {s.session_id: self.store.describe(s) for s in sessions},
            "requests_total": self.requests_total,
        }
        if include_requests:
            names = ("endpoint", "session_id", "status", "applied", "at")
            result["requests"] = [dict(zip(names, r, strict=True)) for r in self.requests]
        return result


SIMULATOR: web.AppKey[Simulator] = web.AppKey("simulator", Simulator)
