"""Due times of many sessions in one heap served by one task: no asyncio task per session.

Each key has at most one live entry, the earliest asked for; a later request is dropped and
an earlier one supersedes the old entry, which is skipped when popped. The callback looks at
the session as it is then and asks again, so activity never has to find an old entry.

The task wakes at most once a tick and serves everything due by then: 10,000 sessions with
jittered keep-alives would otherwise wake it several hundred times a second, one entry each.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import Callable

# Entries are served up to this late; keep-alives, idle and duration limits are not that tight.
TICK_S = 0.05


class Timers:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, tick_s: float = TICK_S
    ) -> None:
        self._clock = clock
        self._tick_s = tick_s
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
            woke = self._clock()
            while self._heap and self._heap[0][0] <= woke:
                due, key = heapq.heappop(self._heap)
                if self._next.get(key) != due:
                    continue  # superseded by an earlier entry
                del self._next[key]
                on_due(key, due)
            self._changed.clear()
            timeout = self._heap[0][0] - woke if self._heap else None
            if timeout is None or timeout > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait()
            await asyncio.sleep(max(0.0, woke + self._tick_s - self._clock()))
