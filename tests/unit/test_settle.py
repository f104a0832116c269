"""Commands of a partition just taken over: held, then let go in sent_at order, or requeued."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker import settle
from worker.settle import Settling

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "SETTLE_S", 0.05)
    monkeypatch.setattr(settle, "MAX_SETTLE_S", 0.5)


def settling(prefetch: int | None = None) -> tuple[Settling, list[asyncio.Task[Any]]]:
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Coroutine[Any, Any, Any]) -> None:
        tasks.append(asyncio.create_task(coro))

    return Settling(prefetch=prefetch, spawn=spawn), tasks


async def let_go_order(s: Settling, arrivals: list[tuple[int, bool]]) -> list[int]:
    """Admit (seconds after T0, redelivered) in arrival order; the order they were let go."""
    let_go: list[int] = []

    async def one(at: int, redelivered: bool) -> None:
        await s.admit(0, T0 + timedelta(seconds=at), redelivered)
        let_go.append(at)

    await asyncio.gather(*(one(at, r) for at, r in arrivals))
    return let_go


async def test_no_window_means_go_at_once() -> None:
    s, _ = settling()
    async with asyncio.timeout(0.01):
        await s.admit(0, T0, False)


async def test_held_commands_go_in_sent_at_order() -> None:
    s, _ = settling(prefetch=64)
    s.begin(0, clean=False)
    arrivals = [(3, False), (1, True), (2, True), (0, True)]
    assert await let_go_order(s, arrivals) == [0, 1, 2, 3]


async def test_redeliveries_keep_the_window_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "SETTLE_S", 0.2)
    s, _ = settling(prefetch=64)
    s.begin(0, clean=False)
    loop = asyncio.get_running_loop()
    began = loop.time()
    newer = asyncio.create_task(s.admit(0, T0 + timedelta(seconds=5), False))
    await asyncio.sleep(0.15)
    older = asyncio.create_task(s.admit(0, T0, True))  # a late return: 0.2 s more
    await asyncio.gather(newer, older)
    assert loop.time() - began >= 0.3


async def test_release_now_ends_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settle, "SETTLE_S", 30.0)
    s, _ = settling(prefetch=64)
    s.begin(0, clean=False)
    held = asyncio.create_task(s.admit(0, T0, True))
    await asyncio.sleep(0.01)
    s.release_now(0)
    async with asyncio.timeout(1):
        await held


async def test_a_command_arriving_as_the_window_closes_goes_after_the_held_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen in the scale-out test: a delivery already scheduled when the window closed entered
    # its session's mailbox before an older held command of that session had resumed.
    monkeypatch.setattr(settle, "SETTLE_S", 30.0)
    s, _ = settling(prefetch=64)
    s.begin(0, clean=True)
    passed: list[str] = []

    async def one(name: str, at: int) -> None:
        await s.admit(0, T0 + timedelta(seconds=at), False)
        passed.append(name)

    held = [asyncio.create_task(one(f"held {i}", i)) for i in range(3)]
    await asyncio.sleep(0.01)
    s.release_now(0)
    # Scheduled right behind the window's closing, as a delivery read in the same loop turn.
    newcomer = asyncio.create_task(one("newcomer", 10))
    async with asyncio.timeout(1):
        await asyncio.gather(*held, newcomer)
    assert passed == ["held 0", "held 1", "held 2", "newcomer"]


async def test_a_held_command_cancelled_in_line_lets_the_next_one_go() -> None:
    s, _ = settling(prefetch=64)
    s.begin(0, clean=True)
    passed: list[int] = []

    async def one(at: int) -> None:
        await s.admit(0, T0 + timedelta(seconds=at), False)
        passed.append(at)

    tasks = [asyncio.create_task(one(i)) for i in range(3)]
    await asyncio.sleep(0.01)
    s.release_now(0)
    await asyncio.sleep(0)  # the window closes; the first in line is woken
    tasks[1].cancel()
    async with asyncio.timeout(1):
        await asyncio.gather(*tasks, return_exceptions=True)
    assert passed == [0, 2]
    async with asyncio.timeout(0.01):  # the line is gone: the next command goes at once
        await s.admit(0, T0, False)
