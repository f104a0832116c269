"""Due times of many sessions in one heap served by one task: no asyncio task per session.

Each key has at most one live entry, the earliest asked for; a later request is dropped and
an earlier one supersedes the old entry, which is skipped when popped. The callback looks at
the session as it is then and asks again, so activity never has to find an old entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable


class Timers:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[tuple[float, str]] = []
        self._next: dict[str, float] = {}
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._next)

    def schedule(self, key: str, due: float) -> None:
        """Have `run`'s callback called with (key, due) at `due` (a clock value), unless an
        earlier call for `key` is already pending."""
        pending = self._next.get(key)
        if pending is not None and pending <= due:
            return
        self._next[key] = due
        earliest = not self._heap or due < self._heap[0][0]
        heapq.heappush(self._heap, (due, key))
        if earliest:
            self._changed.set()  # wake the loop so it sleeps until the new earliest entry

    async def run(self, on_due: Callable[[str, float], None]) -> None:
        while True:
            now = self._clock()
            while self._heap and self._heap[0][0] <= now:
                due, key = heapq.heappop(self._heap)
                if self._next.get(key) != due:
                    continue  # superseded by an earlier entry
                del self._next[key]
                on_due(key, due)
            self._changed.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
