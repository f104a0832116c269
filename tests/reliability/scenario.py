"""One fault scenario: a worker process and mixed traffic on the private node, a fault in the
middle, then every command must be answered and nothing done twice at HeyGen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from simulator.server import RunningSimulator
from tests.integration.conftest import WorkerProcess
from tests.reliability.checker import Checker, Report, Sent
from tests.reliability.conftest import finish, node_worker
from tests.reliability.rabbit_node import RabbitNode
from tests.reliability.traffic import ResilientProducer, Traffic

Fault = Callable[[WorkerProcess], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    """What every fault scenario runs with, so a test names only its fault."""

    rabbit_node: RabbitNode
    node_url: str
    simulator: RunningSimulator
    checker: Checker
    producer: ResilientProducer
    tmp_path: Path

    async def run(self, fault: Fault, **options: Any) -> Report:
        return await run_scenario(
            self.rabbit_node,
            self.node_url,
            self.simulator,
            self.checker,
            self.producer,
            self.tmp_path,
            fault,
            **options,
        )


async def run_scenario(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
    fault: Fault,
    *,
    sessions: int = 6,
    rate_hz: float = 30,
    settle_s: float = 2,
    **env: str,
) -> Report:
    """Traffic before, during and after `fault(worker)`; the worker must be ready again after."""
    names = [f"{checker.name[:20]}-{i}" for i in range(sessions)]
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w1.log", **env) as w:
        await producer.start()
        traffic = Traffic(producer, names, rate_hz=rate_hz)
        await traffic.open_sessions()
        traffic.start()
        await asyncio.sleep(1)
        await fault(w)
        await asyncio.sleep(settle_s)
        await traffic.stop()
        await traffic.close_sessions()
        if unanswered := checker.unanswered():
            # Now: the wait in finish() can run into the test's own timeout.
            print(trail(w.log(), [checker.commands[c] for c in unanswered]))
        report = await finish(checker, simulator)
        if report.lost:
            print(await broker_view(rabbit_node, node_url))
            print("lost:", [checker.commands[c] for c in report.lost[:5]])
        await w.wait_ready(30)
        assert w.process.returncode is None, w.log()
    return report


def trail(log: str, commands: list[Sent], lines: int = 40) -> str:
    """The worker's log lines naming these commands or their sessions (the last `lines`)."""
    needles = {c.command_id for c in commands} | {c.session_id for c in commands if c.session_id}
    found = [line for line in log.splitlines() if any(n in line for n in needles)]
    return f"worker log on {sorted(needles)}:\n" + "\n".join(found[-lines:])


async def broker_view(rabbit_node: RabbitNode, amqp_url: str) -> str:
    """The vhost's queues (ready / unacked / consumers) and channels, for a failure message."""
    vhost = quote(urlsplit(amqp_url).path[1:], safe="")
    async with httpx.AsyncClient(
        base_url=rabbit_node.mgmt_url, auth=("guest", "guest"), timeout=10
    ) as mgmt:
        queues = (await mgmt.get(f"/api/queues/{vhost}")).json()
        consumers = (await mgmt.get(f"/api/consumers/{vhost}")).json()
    lines = [
        f"queue {q['name']}: ready={q.get('messages_ready')} "
        f"unacked={q.get('messages_unacknowledged')} consumers={q.get('consumers')}"
        for q in queues
    ]
    lines += [
        f"consumer {c['queue']['name']} active={c.get('active')} tag={c['consumer_tag']}"
        for c in consumers
    ]
    return "\n".join(lines)


def assert_clean(report: Report) -> None:
    assert not report.lost, report.line() + f"\nlost: {report.lost[:10]}"
    assert report.duplicate_speaks == 0, report.line()
    assert report.duplicate_creates == 0, report.line()
    assert report.orphans_live == 0, report.line()
    assert not report.unexpected, report.unexpected[:10]
