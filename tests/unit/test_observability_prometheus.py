"""A real Prometheus scrapes the health server: every dashboard query returns data and every
rule evaluates without error."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator
from itertools import product

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client import CollectorRegistry

from tests.unit.observability_refs import ALERTS, concrete, dashboard_exprs, require_binary
from worker.observability import metrics as m
from worker.observability.http import HealthServer

SCRAPE_INTERVAL = "500ms"
# One Prometheus (a few seconds to gather scrapes) serves every test of the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def exercise(metrics: m.Metrics) -> None:
    """One round of traffic touching every family and known label value."""
    for command_type, outcome in product(m.COMMAND_TYPES, m.COMMAND_OUTCOMES):
        metrics.commands_received_total.labels(command_type).inc()
        metrics.command_queue_delay_seconds.labels(command_type).observe(0.02)
        metrics.commands_total.labels(command_type, outcome).inc()
        metrics.command_duration_seconds.labels(command_type).observe(0.15)
    for endpoint, outcome in product(m.HEYGEN_ENDPOINTS, m.HEYGEN_OUTCOMES):
        metrics.observe_heygen(endpoint, outcome, 0.3)
    for endpoint, kind in product(m.HEYGEN_ENDPOINTS, m.RETRIED_KINDS):
        metrics.heygen_retries_total.labels(endpoint, kind).inc()
    for reason in m.STOP_REASONS:
        metrics.sessions_stopped_total.labels(reason).inc()
        metrics.session_duration_seconds.labels(reason).observe(600)
    for task_type, task_mode in product(m.TASK_TYPES, m.TASK_MODES):
        metrics.speech_tasks_total.labels(task_type, task_mode).inc()
    for family, values in (
        (metrics.sessions_created_total, m.SESSION_CREATE_OUTCOMES),
        (metrics.keepalives_total, m.KEEPALIVE_OUTCOMES),
        (metrics.reconnects_total, m.RECONNECT_OUTCOMES),
        (metrics.events_published_total, m.EVENT_TYPES),
        (metrics.dead_letters_total, m.DEAD_LETTER_REASONS),
    ):
        for value in values:
            family.labels(value).inc()
    for counter in (
        metrics.billed_session_seconds_total,
        metrics.credits_estimated_total,
        metrics.speech_characters_total,
        metrics.leaked_sessions_stopped_total,
        metrics.event_publish_failures_total,
    ):
        counter.inc(5)
    metrics.keepalive_lateness_seconds.observe(0.2)
    for state in m.SESSION_STATES:
        metrics.sessions.labels(state).set(3)
    for connection in m.BUS_CONNECTIONS:
        metrics.bus_connected.labels(connection).set(1)
    metrics.partitions.set(8)
    metrics.partitions_owned.set(8)
    metrics.max_sessions.set(100)
    metrics.commands_in_flight.set(2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def worker_metrics() -> AsyncIterator[int]:
    """A health server with live traffic; yields its port."""
    registry = CollectorRegistry()
    metrics = m.Metrics(registry)
    server = HealthServer(registry, lambda: (True, ""), host="127.0.0.1", port=0)
    await server.start()

    async def traffic() -> None:
        while True:
            exercise(metrics)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(traffic())
    try:
        yield server.port
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def prometheus(
    worker_metrics: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    binary = require_binary("prometheus")
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "heygen-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_metrics}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            await wait_for_samples(client, process)
            yield client
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def wait_for_samples(client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    """Until Prometheus holds enough scrapes for rate() and the rules have run."""
    for _ in range(150):
        if process.returncode is not None:
            assert process.stderr is not None
            pytest.fail(f"prometheus exited: {(await process.stderr.read()).decode()[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            ready = (await client.get("/-/ready")).status_code == 200
            query = 'count_over_time(up{job="heygen-worker"}[1m]) >= 3'
            if ready and await instant(client, query):
                return
        await asyncio.sleep(0.1)
    pytest.fail("prometheus did not scrape the worker in time")


async def instant(client: httpx.AsyncClient, query: str) -> list[float]:
    response = await client.get("/api/v1/query", params={"query": query})
    body = response.json()
    assert body["status"] == "success", (query, body)
    return [float(sample["value"][1]) for sample in body["data"]["result"]]


async def test_every_dashboard_query_returns_data(prometheus: httpx.AsyncClient) -> None:
    empty, not_finite = [], []
    for expr in dashboard_exprs():
        values = await instant(prometheus, concrete(expr))
        if not values:
            empty.append(expr)
        elif not any(math.isfinite(value) for value in values):
            not_finite.append(expr)
    assert empty == []
    assert not_finite == []


async def test_every_rule_evaluates(prometheus: httpx.AsyncClient) -> None:
    body = (await prometheus.get("/api/v1/rules")).json()
    rules = [rule for group in body["data"]["groups"] for rule in group["rules"]]
    assert rules
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    assert await instant(prometheus, "heygen_worker:credits_per_hour") != []
