"""One heap of due times served by one task, at most once a tick."""

from __future__ import annotations

import asyncio
import time

from worker.sessions.timers import Timers


async def serve(timers: Timers, seconds: float) -> list[tuple[str, float, float]]:
    """Run `timers` for `seconds`: (key, due, served at) of each entry served."""
    served: list[tuple[str, float, float]] = []
    task = asyncio.create_task(timers.run(lambda k, d: served.append((k, d, time.monotonic()))))
    await asyncio.sleep(seconds)
    task.cancel()
    return served


async def test_entries_due_within_a_tick_are_served_together_and_not_early() -> None:
    timers = Timers(tick_s=0.1)
    now = time.monotonic()
    for i in range(50):
        timers.schedule(f"s{i}", now + 0.2 + i * 0.002)  # spread over 0.1 s
    served = await serve(timers, 0.6)
    assert sorted(k for k, _, _ in served) == sorted(f"s{i}" for i in range(50))
    assert all(at >= due for _, due, at in served)
    assert all(at - due < 0.1 + 0.05 for _, due, at in served)  # a tick late at most
    wakes = {round(at, 3) for _, _, at in served}
    assert len(wakes) <= 3, wakes  # not one wake-up per entry


async def test_an_earlier_entry_supersedes_and_a_later_one_is_dropped() -> None:
    timers = Timers(tick_s=0.01)
    now = time.monotonic()
    timers.schedule("a", now + 0.3)
    timers.schedule("a", now + 0.05)  # earlier: replaces
    timers.schedule("a", now + 0.2)  # later: dropped
    served = await serve(timers, 0.5)
    assert [(k, round(d - now, 2)) for k, d, _ in served] == [("a", 0.05)]


async def test_a_new_earliest_entry_wakes_a_sleeping_loop() -> None:
    timers = Timers(tick_s=0.01)
    timers.schedule("late", time.monotonic() + 60)
    served: list[str] = []
    task = asyncio.create_task(timers.run(lambda k, d: served.append(k)))
    await asyncio.sleep(0.05)
    timers.schedule("now", time.monotonic())
    await asyncio.sleep(0.05)
    task.cancel()
    assert served == ["now"]
