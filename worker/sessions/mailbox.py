"""Per-session execution: one session's commands in order, different sessions concurrently.

A control job (interrupt, stop) drops queued jobs it makes pointless and does not wait
behind a running job that it is allowed to overtake (a speak).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Container
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class Preempted(Exception):
    """A queued job was dropped by a control job before it ran."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Turn:
    kind: str
    future: asyncio.Future[None]


@dataclass
class _Box:
    running: list[str] = field(default_factory=list)
    waiting: deque[_Turn] = field(default_factory=deque)


class Mailboxes:
    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}

    def queued(self, key: str) -> int:
        box = self._boxes.get(key)
        return len(box.waiting) if box else 0

    async def run(self, key: str, kind: str, job: Callable[[], Awaitable[T]]) -> T:
        """Run `job` when every earlier job of `key` is done."""
        box = self._boxes.setdefault(key, _Box())
        if box.running or box.waiting:
            await self._wait_turn(key, box, kind, first=False)
        else:
            box.running.append(kind)
        return await self._execute(key, box, kind, job)

    async def run_control(
        self,
        key: str,
        kind: str,
        job: Callable[[], Awaitable[T]],
        *,
        preempts: Container[str],
        overtakes: Container[str],
        reason: str,
    ) -> T:
        """Drop queued jobs whose kind is in `preempts`, then run `job` at once if every
        running job may be overtaken, else first in line."""
        box = self._boxes.setdefault(key, _Box())
        kept: deque[_Turn] = deque()
        for turn in box.waiting:
            if turn.future.done():
                continue  # its waiter was cancelled and has not cleaned up yet
            if turn.kind in preempts:
                turn.future.set_exception(Preempted(reason))
            else:
                kept.append(turn)
        box.waiting = kept
        if any(running not in overtakes for running in box.running):
            await self._wait_turn(key, box, kind, first=True)
        else:
            box.running.append(kind)
        return await self._execute(key, box, kind, job)

    async def _execute(self, key: str, box: _Box, kind: str, job: Callable[[], Awaitable[T]]) -> T:
        try:
            return await job()
        finally:
            self._release(key, box, kind)

    async def _wait_turn(self, key: str, box: _Box, kind: str, *, first: bool) -> None:
        turn = _Turn(kind, asyncio.get_running_loop().create_future())
        if first:
            box.waiting.appendleft(turn)
        else:
            box.waiting.append(turn)
        try:
            await turn.future
        except asyncio.CancelledError:
            if turn.future.done() and not turn.future.cancelled() and not turn.future.exception():
                # Handed the turn just as we were cancelled: pass it on.
                self._release(key, box, kind)
            elif turn in box.waiting:
                box.waiting.remove(turn)
            raise

    def _release(self, key: str, box: _Box, kind: str) -> None:
        box.running.remove(kind)
        if box.running:
            return
        while box.waiting:
            turn = box.waiting.popleft()
            if turn.future.done():
                continue  # cancelled while waiting
            # Mark the woken job running now, so no newcomer slips in before it resumes.
            box.running.append(turn.kind)
            turn.future.set_result(None)
            return
        self._boxes.pop(key, None)
