"""A three-node RabbitMQ 4 cluster loses a node twice under traffic: first the node the worker's
connections are on, then the node leading the partition queues; both come back. Nothing is
lost, no speech is repeated, no session is duplicated or leaked."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from simulator.server import RunningSimulator
from tests.conftest import private_vhost
from tests.integration.conftest import WorkerProcess, wait_until
from tests.reliability.checker import Checker
from tests.reliability.rabbit_node import (
    RabbitCluster,
    RabbitNode,
    available,
    ensure_root,
    node_dir,
)
from tests.reliability.scenario import assert_clean, run_scenario
from tests.reliability.traffic import ResilientProducer

DOWN_S = 6.0  # how long each killed node stays down


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    if not available():
        pytest.skip("chroot or openssl not installed")
    ensure_root()
    base = node_dir("hsw-cluster-")
    cluster = RabbitCluster(base)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def vhost(cluster: RabbitCluster) -> AsyncIterator[str]:
    async with private_vhost(cluster.nodes[-1].mgmt_url, "cluster") as name:
        yield name


async def api(cluster: RabbitCluster, path: str) -> list[dict[str, Any]]:
    """GET from the management API (called while every node is up)."""
    async with httpx.AsyncClient(
        base_url=cluster.nodes[-1].mgmt_url, auth=("guest", "guest"), timeout=10
    ) as m:
        answer = await m.get(path)
        answer.raise_for_status()
        rows: list[dict[str, Any]] = answer.json()
        return rows


def by_name(cluster: RabbitCluster, name: object) -> RabbitNode:
    return next(n for n in cluster.nodes if n.node == name)


async def kill_for(node: RabbitNode, down_s: float) -> float:
    """kill -9 the node, restart it `down_s` later; returns the wall time of the kill."""
    killed_at = time.time()
    await asyncio.to_thread(node.kill9)
    await asyncio.sleep(down_s)
    await asyncio.to_thread(node.start)
    return killed_at


def longest_silence(checker: Checker, since: float) -> float:
    """The longest gap between events after `since` (wall time): how long nothing flowed."""
    times = sorted(
        e.occurred_at.timestamp()
        for e in checker.events.values()
        if e.occurred_at.timestamp() > since
    )
    gaps = [b - a for a, b in zip([since, *times], times, strict=False)]
    return max(gaps, default=float("inf"))


async def test_a_node_lost_twice_under_traffic(
    cluster: RabbitCluster, vhost: str, simulator: RunningSimulator, tmp_path: Path
) -> None:
    checker = Checker("cluster-node-loss")
    # The producer lists the nodes the other way round: it is not on the worker's node.
    producer = ResilientProducer(cluster.urls(vhost, [2, 1, 0]), checker)
    kills: dict[str, float] = {}

    async def fault(worker: WorkerProcess) -> None:
        workers: set[str] = set()

        async def listed() -> bool:
            # Another node's management API lists a connection once its statistics came by.
            connections = await api(cluster, f"/api/vhosts/{quote(vhost)}/connections")
            workers.update(
                c["node"]
                for c in connections
                if str(c["client_properties"].get("connection_name", "")).endswith("-consume")
            )
            return bool(workers)

        await wait_until(listed, 20)
        assert len(workers) == 1, workers
        queues = await api(cluster, f"/api/queues/{quote(vhost)}")
        partitions = [q for q in queues if str(q["name"]).startswith("avatar.commands.p")]
        everywhere = sorted(n.node for n in cluster.nodes)
        assert all(sorted(q["members"]) == everywhere for q in partitions), partitions
        first = by_name(cluster, workers.pop())
        kills[f"connections' node ({first.name})"] = await kill_for(first, DOWN_S)
        await worker.wait_ready(60)
        queues = await api(cluster, f"/api/queues/{quote(vhost)}")
        leaders = [
            q.get("leader") or q.get("node")
            for q in queues
            if str(q["name"]).startswith("avatar.commands.p")
        ]
        second = by_name(cluster, max(set(leaders), key=leaders.count))
        kills[f"partition leader ({second.name})"] = await kill_for(second, DOWN_S)

    try:
        report = await run_scenario(
            cluster.nodes[-1],
            cluster.urls(vhost),
            simulator,
            checker,
            producer,
            tmp_path,
            fault,
            settle_s=DOWN_S,
            # The management API of the node the worker is on, whichever that is now.
            RABBITMQ_MANAGEMENT_URL="",
        )
    finally:
        await producer.close()
    silences = {what: longest_silence(checker, at) for what, at in kills.items()}
    print("\n" + report.line())
    for what, silence in silences.items():
        print(f"kill -9 of the {what}: events stopped for {silence:.1f} s")
    assert_clean(report)
