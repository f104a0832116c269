"""Broker faults on the private node with traffic running: restart, kill -9, connections
force-closed; nothing lost, nothing done twice at HeyGen."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from simulator.server import RunningSimulator
from tests.integration.conftest import WorkerProcess
from tests.reliability.checker import Checker
from tests.reliability.proxy import Mode, TcpProxy
from tests.reliability.rabbit_node import RabbitNode
from tests.reliability.scenario import Scenario, assert_clean
from tests.reliability.traffic import ResilientProducer


@pytest.fixture
def scenario(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> Scenario:
    return Scenario(rabbit_node, node_url, simulator, checker, producer, tmp_path)


async def test_broker_restart(
    scenario: Scenario,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        await asyncio.to_thread(scenario.rabbit_node.restart_app, 1.0)

    report = await scenario.run(fault)
    assert_clean(report)


async def test_broker_kill9_and_restart(
    scenario: Scenario,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        await asyncio.to_thread(scenario.rabbit_node.kill9_and_restart, 0.5)

    report = await scenario.run(fault)
    assert_clean(report)


async def test_connections_force_closed_repeatedly(
    scenario: Scenario,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        for _round in range(3):
            await asyncio.to_thread(scenario.rabbit_node.ctl, "close_all_connections", "fault test")
            await asyncio.sleep(1.5)

    report = await scenario.run(fault, sessions=4)
    assert_clean(report)


async def test_memory_alarm_blocks_publishers_then_clears(
    scenario: Scenario,
) -> None:
    async def fault(_: WorkerProcess) -> None:
        try:
            await asyncio.to_thread(
                scenario.rabbit_node.ctl, "set_vm_memory_high_watermark", "0.0000001"
            )
            await asyncio.sleep(8)
        finally:
            await asyncio.to_thread(scenario.rabbit_node.ctl, "set_vm_memory_high_watermark", "0.4")

    report = await scenario.run(fault)
    assert_clean(report)


async def test_silent_partition_then_heal(
    scenario: Scenario,
) -> None:
    """The worker's AMQP path goes silent for 8 s (bytes swallowed, no close), then the dead
    connections are reset and the path comes back: heartbeats must notice, the worker must
    reconnect and serve again."""
    proxy = TcpProxy(scenario.rabbit_node.amqp_port)
    await proxy.start()
    vhost = urlsplit(scenario.node_url).path
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}{vhost}?heartbeat=2"

    async def fault(_: WorkerProcess) -> None:
        proxy.mode = Mode.BLACKHOLE
        await asyncio.sleep(8)
        proxy.reset()
        proxy.mode = Mode.PASS

    try:
        report = await scenario.run(fault, settle_s=6, AMQP_URL=via_proxy)
    finally:
        await proxy.close()
    assert_clean(report)
