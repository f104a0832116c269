"""Fault-suite harness: a private RabbitMQ node (restartable, killable), a vhost on it per
test, the simulator, worker processes, and a checker whose figures are printed per test and in
a table at the end of the session."""

# ruff: noqa: ASYNC109

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.server import RunningSimulator, running_simulator
from tests.conftest import private_vhost
from tests.integration.conftest import WorkerProcess, worker_process
from tests.reliability.checker import Checker, Report
from tests.reliability.rabbit_node import RabbitNode, available, ensure_root, node_dir
from tests.reliability.traffic import ResilientProducer

REPORTS: list[Report] = []

# Quick enough for tests: ownership polled often, publishes bounded, short drain.
WORKER_ENV = {
    "WORKER_PARTITIONS": "2",
    "WORKER_OWNERSHIP_POLL_S": "0.5",
    "WORKER_PUBLISH_TIMEOUT_S": "3",
    "WORKER_SHUTDOWN_GRACE_S": "3",
    # Every command's outcome is logged at DEBUG: the trail of an unanswered one (scenario.py).
    "LOG_LEVEL": "DEBUG",
}


@pytest.fixture(scope="session")
def rabbit_node() -> Iterator[RabbitNode]:
    """Started once for the session (~10 s); stopped at the end."""
    if not available():
        pytest.skip("chroot or openssl not installed")
    ensure_root()
    base = node_dir("hsw-faults-")
    node = RabbitNode(base)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def node_url(rabbit_node: RabbitNode) -> AsyncIterator[str]:
    """A fresh vhost on the private node, deleted afterwards."""
    async with private_vhost(rabbit_node.mgmt_url, "faults") as vhost:
        yield rabbit_node.amqp_url(vhost)


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def simulator(simulator_overrides: dict[str, Any]) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(port=0, **simulator_overrides) as sim:
        yield sim


@pytest.fixture
def checker(request: pytest.FixtureRequest) -> Checker:
    return Checker(request.node.name)


@pytest.fixture
async def producer(node_url: str, checker: Checker) -> AsyncIterator[ResilientProducer]:
    """Start it after a worker is up (the worker declares the topology)."""
    producer = ResilientProducer(node_url, checker)
    try:
        yield producer
    finally:
        await producer.close()


@contextlib.asynccontextmanager
async def node_worker(
    rabbit_node: RabbitNode,
    amqp_url: str,
    sim: RunningSimulator,
    log_path: Path,
    **env: str,
) -> AsyncIterator[WorkerProcess]:
    """A worker process on the private node, ready; killed at the end if still running."""
    settings = {**WORKER_ENV, "RABBITMQ_MANAGEMENT_URL": rabbit_node.mgmt_url, **env}
    async with worker_process(amqp_url, sim, log_path, **settings) as process:
        await process.wait_ready(30)
        yield process


async def finish(checker: Checker, sim: RunningSimulator, timeout: float = 60) -> Report:
    """Wait for every command's answer, then compute, print and keep the figures."""
    await checker.wait_answered(timeout)
    report = checker.report(await sim.admin.stats())
    print("\n" + report.line())
    REPORTS.append(report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("reliability figures")
        for report in REPORTS:
            terminalreporter.write_line(report.line())
