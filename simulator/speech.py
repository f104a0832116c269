"""Sync task answers waiting for the end of their speech; an interrupt or close releases them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Waiting:
    released: asyncio.Future[None]
    waiters: int = 0


class SpeechWaiters:
    """One shared future per session with waiters, not one task per session."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_session: dict[str, _Waiting] = {}

    async def wait(self, session_id: str, until: float) -> bool:
        """Wait for the speech to end at monotonic time until; True when it was cut short."""
        timeout = until - self._clock()
        if timeout <= 0:
            return False
        waiting = self._by_session.get(session_id)
        if waiting is None:
            future = asyncio.get_running_loop().create_future()
            waiting = self._by_session[session_id] = _Waiting(future)
        waiting.waiters += 1
        try:
            done, _ = await asyncio.wait((waiting.released,), timeout=timeout)
            return bool(done)
        finally:
            waiting.waiters -= 1
            if waiting.waiters == 0 and self._by_session.get(session_id) is waiting:
                del self._by_session[session_id]

    def cut(self, session_id: str) -> None:
        """Release every waiter of the session (interrupt, stop, close)."""
        waiting = self._by_session.pop(session_id, None)
        if waiting is not None and not waiting.released.done():
            waiting.released.set_result(None)
