"""Broker faults on the private node with traffic running: restart, kill -9, connections
force-closed; nothing lost, nothing done twice at HeyGen."""

from __future__ import annotations

import asyncio
from pathlib import Path

from simulator.server import RunningSimulator
from tests.integration.conftest import WorkerProcess
from tests.reliability.checker import Checker
from tests.reliability.rabbit_node import RabbitNode
from tests.reliability.scenario import assert_clean, run_scenario
from tests.reliability.traffic import ResilientProducer


async def test_broker_restart(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        await asyncio.to_thread(rabbit_node.restart_app, 1.0)

    report = await run_scenario(
        rabbit_node, node_url, simulator, checker, producer, tmp_path, fault
    )
    assert_clean(report)


async def test_broker_kill9_and_restart(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        await asyncio.to_thread(rabbit_node.kill9_and_restart, 0.5)

    report = await run_scenario(
        rabbit_node, node_url, simulator, checker, producer, tmp_path, fault
    )
    assert_clean(report)


async def test_connections_force_closed_repeatedly(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        for _round in range(3):
            await asyncio.to_thread(rabbit_node.ctl, "close_all_connections", "fault test")
            await asyncio.sleep(1.5)

    report = await run_scenario(
        rabbit_node, node_url, simulator, checker, producer, tmp_path, fault
    )
    assert_clean(report)
