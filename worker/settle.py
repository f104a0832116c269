"""Putting a partition's commands back in order right after it changed hands.

RabbitMQ makes the next consumer active and hands it the queued commands before the previous
owner's unfinished ones are back: a crashed owner's are returned when the broker notices the
crash, a draining owner's when it requeues what it could not finish in its grace, and RabbitMQ
3.10 puts a returned message behind the messages already in the queue (checked: returned
commands 0-9 were redelivered after 13-15, published before the returns). So the new owner
holds the partition's commands until no redelivered one has come for a while and then lets
them go in the producers' `sent_at` order (one producer per session keeps a monotonic clock).

That restores the order only if the returned commands reach the new owner while it holds the
others, that is if they and whatever is queued ahead of them fit in its prefetch: held
commands are unacknowledged, and with the prefetch full nothing more is delivered. A drain
that finishes within its grace returns nothing; after a crash the queue ahead of the returned
commands holds only what the dead owner had not fetched yet.

Let go, the held commands pass one at a time, each waking the next once it is on its way to
its session's mailbox, and a command arriving meanwhile queues behind them: woken all at once,
they resumed after a delivery already scheduled in the same loop turn, which then entered its
session's mailbox ahead of an older held command of that session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

# Quiet time without a redelivery before the held commands go: returns come in bursts.
SETTLE_S = 1.0
# However long redeliveries keep trickling in, commands wait no longer than this.
MAX_SETTLE_S = 5.0
# A redelivery this soon after a window closed is reported: it may have missed it.
LATE_S = 30.0


@dataclass
class _Window:
    opened: float
    last_redelivery: float
    clean: bool
    held: list[tuple[datetime, asyncio.Future[None]]] = field(default_factory=list)
    redelivered: int = 0
    closing: asyncio.Event = field(default_factory=asyncio.Event)


class Settling:
    def __init__(
        self,
        *,
        prefetch: int | None,
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self._prefetch = prefetch
        self._spawn = spawn
        self._windows: dict[int, _Window] = {}
        # Per partition, the commands let go and not yet on their way, in the order they go.
        self._lines: dict[int, deque[asyncio.Future[None]]] = {}
        self._closed: dict[int, float] = {}

    def begin(self, partition: int, *, clean: bool) -> None:
        """`partition` was just taken over from another replica: hold its commands. `clean`:
        the previous owner handed it over with nothing requeued (nothing can be missing)."""
        if partition in self._windows:
            return
        now = asyncio.get_running_loop().time()
        self._windows[partition] = _Window(opened=now, last_redelivery=now, clean=clean)
        self._spawn(self._close_later(partition))

    async def admit(self, partition: int, sent_at: datetime, redelivered: bool) -> None:
        """Until the command may run: it then goes on to its session's mailbox at once."""
        window = self._windows.get(partition)
        line = self._lines.get(partition)
        loop = asyncio.get_running_loop()
        if window is None and not line:
            closed = self._closed.get(partition)
            if redelivered and closed is not None and loop.time() - closed < LATE_S:
                # Older commands of its session may have run already.
                log.warning(
                    "partition %d: a redelivered command came %.1f s after its settle window",
                    partition,
                    loop.time() - closed,
                )
            return
        future: asyncio.Future[None] = loop.create_future()
        if window is not None:
            if redelivered:
                window.redelivered += 1
                window.last_redelivery = loop.time()
            window.held.append((sent_at, future))
        else:
            assert line is not None
            line.append(future)  # behind the held commands still on their way
        try:
            await future
        finally:
            self._passed(partition, future)

    def _passed(self, partition: int, future: asyncio.Future[None]) -> None:
        """`future`'s command is on its way (or was cancelled): wake the next in line."""
        line = self._lines.get(partition)
        if line is None or future not in line:
            return  # still held in the window (cancelled there), or never in a line
        if line[0] is not future:
            line.remove(future)  # cancelled while waiting its turn
            return
        line.popleft()
        _wake_first(line)
        if not line:
            del self._lines[partition]

    def release_now(self, partition: int) -> None:
        """Close `partition`'s window at once (it is being handed over again)."""
        window = self._windows.get(partition)
        if window is not None:
            window.closing.set()

    async def _close_later(self, partition: int) -> None:
        loop = asyncio.get_running_loop()
        window = self._windows[partition]
        while not window.closing.is_set():
            now = loop.time()
            until = min(window.last_redelivery + SETTLE_S, window.opened + MAX_SETTLE_S)
            if now >= until:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - now):
                    await window.closing.wait()
        del self._windows[partition]
        self._closed[partition] = loop.time()
        held = sorted(window.held, key=lambda item: item[0])
        full = self._prefetch is not None and len(held) >= self._prefetch
        log.log(
            logging.WARNING if full and not window.clean else logging.INFO,
            "partition %d settled after %.1f s: %d commands held (%d redelivered)%s",
            partition,
            loop.time() - window.opened,
            len(held),
            window.redelivered,
            ", prefetch full: commands still returned to the queue may run out of order"
            if full and not window.clean
            else "",
        )
        line = deque(future for _, future in held if not future.done())
        if line:
            self._lines[partition] = line
            _wake_first(line)


def _wake_first(line: deque[asyncio.Future[None]]) -> None:
    while line and line[0].done():  # its waiter was cancelled and has not cleaned up yet
        line.popleft()
    if line:
        line[0].set_result(None)
