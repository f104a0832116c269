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
