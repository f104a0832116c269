"""Per-session ordering: FIFO per key, concurrency across keys, control overtaking, preempting."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from worker.sessions.mailbox import Mailboxes, Preempted

SPEAK = "speak"


def recorder(
    log: list[str], name: str, gate: asyncio.Event | None = None
) -> Callable[[], Awaitable[str]]:
    async def job() -> str:
        log.append(f"start {name}")
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        log.append(f"end {name}")
        return name

    return job


async def test_one_key_runs_in_order_and_keys_run_concurrently() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    gate = asyncio.Event()
    first = asyncio.create_task(boxes.run("a", SPEAK, recorder(log, "a1", gate)))
    second = asyncio.create_task(boxes.run("a", SPEAK, recorder(log, "a2")))
    other = asyncio.create_task(boxes.run("b", SPEAK, recorder(log, "b1")))
    await other
    assert log == ["start a1", "start b1", "end b1"]
    gate.set()
    assert list(await asyncio.gather(first, second)) == ["a1", "a2"]
    assert log[3:] == ["end a1", "start a2", "end a2"]
    assert boxes.queued("a") == 0


async def test_hundred_jobs_keep_fifo_order() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    await asyncio.gather(*(boxes.run("s", SPEAK, recorder(log, str(i))) for i in range(100)))
    assert [e for e in log if e.startswith("start")] == [f"start {i}" for i in range(100)]


async def test_control_overtakes_running_speak_and_preempts_queued() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    gate = asyncio.Event()
    running = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "speak1", gate)))
    queued = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "speak2")))
    await asyncio.sleep(0)
    stop = await boxes.run_control(
        "s", "stop", recorder(log, "stop"), preempts={SPEAK}, overtakes={SPEAK}, reason="stopped"
    )
    assert stop == "stop"
    with pytest.raises(Preempted, match="stopped"):
        await queued
    gate.set()
    await running
    assert log == ["start speak1", "start stop", "end stop", "end speak1"]


async def test_control_waits_for_a_job_it_may_not_overtake_but_goes_first() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    gate = asyncio.Event()
    create = asyncio.create_task(boxes.run("s", "create", recorder(log, "create", gate)))
    keepalive = asyncio.create_task(boxes.run("s", "keepalive", recorder(log, "keepalive")))
    await asyncio.sleep(0)
    interrupt = asyncio.create_task(
        boxes.run_control(
            "s",
            "interrupt",
            recorder(log, "interrupt"),
            preempts={SPEAK},
            overtakes={SPEAK},
            reason="x",
        )
    )
    await asyncio.sleep(0)
    assert log == ["start create"]
    gate.set()
    await asyncio.gather(create, keepalive, interrupt)
    assert [e for e in log if e.startswith("start")] == [
        "start create",
        "start interrupt",
        "start keepalive",
    ]


async def test_cancelled_waiter_does_not_block_the_queue() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    gate = asyncio.Event()
    first = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "1", gate)))
    doomed = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "2")))
    third = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "3")))
    await asyncio.sleep(0)
    doomed.cancel()
    gate.set()
    await asyncio.gather(first, third)
    assert "start 2" not in log
    assert log[-1] == "end 3"
    assert boxes.queued("s") == 0


async def test_control_job_skips_a_waiter_cancelled_but_not_yet_cleaned_up() -> None:
    boxes = Mailboxes()
    log: list[str] = []
    gate = asyncio.Event()
    running = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "1", gate)))
    doomed = asyncio.create_task(boxes.run("s", SPEAK, recorder(log, "2")))
    await asyncio.sleep(0)
    doomed.cancel()  # its future is cancelled now; the task cleans up only when it runs
    stop = await boxes.run_control(
        "s", "stop", recorder(log, "stop"), preempts={SPEAK}, overtakes={SPEAK}, reason="x"
    )
    assert stop == "stop"
    gate.set()
    await running
    with pytest.raises(asyncio.CancelledError):
        await doomed
    await boxes.run("s", SPEAK, recorder(log, "3"))
    assert log[-1] == "end 3"
