"""A real Prometheus scrapes the health server: every dashboard query returns data and every
rule evaluates without error."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from itertools import product

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from tests.unit.observability_refs import (
    Prometheus,
    concrete,
    dashboard_exprs,
    running_prometheus,
)
from worker.observability import metrics as m
from worker.observability.http import HealthServer

# One Prometheus (a few seconds to gather scrapes) serves every test of the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def exercise(metrics: m.Metrics) -> None:
    """One round of traffic touching every family and known label value."""
    for command_type, outcome in product(m.COMMAND_TYPES, m.COMMAND_OUTCOMES):
        metrics.commands_received_total.labels(command_type).inc()
        metrics.command_queue_delay_seconds.labels(command_type).observe(0.02)
        metrics.commands_total.labels(command_type, outcome).inc()
        metrics.command_duration_seconds.labels(command_type).observe(0.15)
    for provider, endpoints in m.PROVIDER_ENDPOINTS.items():
        for endpoint, outcome in product(endpoints, m.HEYGEN_OUTCOMES):
            metrics.observe_request(provider, endpoint, outcome, 0.3)
        for endpoint, kind in product(endpoints, m.RETRIED_KINDS):
            metrics.heygen_retries_total.labels(provider, endpoint, kind).inc()
    for provider, reason in product(m.PROVIDERS, m.STOP_REASONS):
        metrics.sessions_stopped_total.labels(provider, reason).inc()
        metrics.session_duration_seconds.labels(reason).observe(600)
    for provider, task_type, task_mode in product(m.PROVIDERS, m.TASK_TYPES, m.TASK_MODES):
        metrics.speech_tasks_total.labels(provider, task_type, task_mode).inc()
    for provider_family, provider_values in (
        (metrics.sessions_created_total, m.SESSION_CREATE_OUTCOMES),
        (metrics.keepalives_total, m.KEEPALIVE_OUTCOMES),
        (metrics.reconnects_total, m.RECONNECT_OUTCOMES),
        (metrics.observed_total, m.OBSERVED_KINDS),
    ):
        for provider, value in product(m.PROVIDERS, provider_values):
            provider_family.labels(provider, value).inc()
    for provider in m.PROVIDERS:
        metrics.credits_left.labels(provider).set(1000)
        metrics.credit_burn_per_minute.labels(provider).set(4)
    for family, values in (
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
    for kind in m.PUBLISH_KINDS:
        metrics.observe_confirm(kind, 0.002)
    for provider, state in product(m.PROVIDERS, m.SESSION_STATES):
        metrics.sessions.labels(provider, state).set(3)
    for connection in m.BUS_CONNECTIONS:
        metrics.bus_connected.labels(connection).set(1)
    metrics.partitions.set(8)
    metrics.partitions_owned.set(8)
    metrics.dead_letter_queue_messages.set(2)
    metrics.max_sessions.set(100)
    metrics.commands_in_flight.set(2)


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
) -> AsyncIterator[Prometheus]:
    directory = tmp_path_factory.mktemp("prometheus")
    async with running_prometheus(f"127.0.0.1:{worker_metrics}", directory) as prometheus:
        # Enough scrapes for rate(), and a rule evaluation after them.
        await prometheus.wait_for('count_over_time(up{job="heygen-worker"}[1m]) >= 3')
        yield prometheus


async def test_every_dashboard_query_returns_data(prometheus: Prometheus) -> None:
    empty, not_finite = [], []
    for expr in dashboard_exprs():
        values = await prometheus.instant(concrete(expr))
        if not values:
            empty.append(expr)
        elif not any(math.isfinite(value) for value in values):
            not_finite.append(expr)
    assert empty == []
    assert not_finite == []


async def test_every_rule_evaluates(prometheus: Prometheus) -> None:
    rules = await prometheus.rules()
    assert rules
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    assert await prometheus.instant("heygen_worker:credits_per_hour") != []
