"""The live worker's /metrics after real traffic: every metric the dashboard and the rules name
exists, the key values moved, and a real Prometheus scraping it answers every dashboard query."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.commands import (
    SessionInterrupt,
    SessionKeepalive,
    SessionSpeak,
    SessionStop,
)
from contracts.common import TaskMode
from contracts.events import CommandRejected, SessionStopped
from simulator.server import RunningSimulator
from tests.integration.conftest import PARTITIONS, Producer
from tests.unit.observability_refs import (
    Prometheus,
    concrete,
    dashboard_exprs,
    referenced_metrics,
    running_prometheus,
)
from worker.app import Worker

# Broker-derived gauges lag: the management API refreshes queue statistics every 5 s and the
# worker polls it every ownership_poll_s.
SETTLE_S = 10
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# Dashboard queries allowed to return no finite value after this traffic, and why. Empty now:
# every known label value exists from the first scrape and the traffic below moves every
# histogram a panel takes a quantile of.
MAY_BE_EMPTY: dict[str, str] = {
    'max by (provider) (heygen_worker_provider_credits{provider="liveavatar", job=~"$job", '
    'instance=~"$instance"}) / sum by (provider) (heygen_worker_credit_burn_per_minute'
    '{provider="liveavatar", job=~"$job", instance=~"$instance"})': "no LiveAvatar session runs "
    "here: without a burn the balance lasts for ever (+Inf)",
}


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    return {"words_per_minute": 3000}  # sync speech answers in a fraction of a second


@pytest.fixture
def worker_overrides() -> dict[str, Any]:
    return {"keepalive_interval_s": 0.3, "ownership_poll_s": 0.2}


async def scrape(worker: Worker) -> Samples:
    assert worker.health is not None
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{worker.health.port}/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= lbls)


async def run_traffic(producer: Producer, simulator: RunningSimulator) -> None:
    """Every kind of command and outcome the dashboard shows, on three sessions."""
    await producer.open_session("busy")
    await producer.open_session("idle", idle_timeout_s=1)
    await producer.open_session("live")
    await producer.call(SessionSpeak(session_id="busy", text="in sync", task_mode=TaskMode.SYNC))
    await producer.call(SessionSpeak(session_id="busy", text="a much longer speech " * 5))
    await simulator.admin.set_fault("streaming.interrupt", status=500, count=1)  # one retry
    assert (await producer.call(SessionInterrupt(session_id="busy"))).type == "speech.interrupted"
    assert (await producer.call(SessionKeepalive(session_id="busy"))).type == "command.completed"
    rejected = await producer.call(SessionSpeak(session_id="nobody", text="hello?"))
    assert isinstance(rejected, CommandRejected)
    await producer.tap.wait_for(
        lambda e: isinstance(e, SessionStopped) and e.session_id == "idle", timeout=5
    )
    assert (await producer.call(SessionStop(session_id="busy"))).type == "session.stopped"


async def settled(worker: Worker, check: Callable[[Samples], bool]) -> Samples:
    """The first scrape for which `check` holds, or the last one after SETTLE_S (the asserts
    then say what is wrong)."""
    samples = await scrape(worker)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SETTLE_S):
            while not check(samples):
                await asyncio.sleep(0.1)
                samples = await scrape(worker)
    return samples


def caught_up(s: Samples) -> bool:
    return (
        # The last answer's event is out before its command is counted.
        total(s, "heygen_worker_commands_in_flight") == 0
        and total(s, "heygen_worker_dead_letter_queue_messages") == 1
        and total(s, "heygen_worker_keepalives_total", outcome="ok") > 0
        and total(s, "heygen_worker_partitions_owned") == PARTITIONS
    )


async def test_live_scrape_has_every_referenced_metric_and_real_values(
    producer: Producer, simulator: RunningSimulator, worker: Worker, tmp_path: Path
) -> None:
    assert worker.health is not None
    # First: the dead-letter queue's depth reaches the management API while Prometheus starts.
    await producer.publish_raw(b"{not json", routing_key="poison")
    async with running_prometheus(f"127.0.0.1:{worker.health.port}", tmp_path) as prometheus:
        await run_traffic(producer, simulator)
        traffic_done = time.time()
        samples = await settled(worker, caught_up)
        assert_referenced_metrics_exist(samples)
        assert_values_moved(samples)
        await prometheus.wait_for_scrape_after(traffic_done)
        await assert_dashboard_queries_return_data(prometheus)
        await assert_rules_evaluate(prometheus)


def assert_referenced_metrics_exist(samples: Samples) -> None:
    scraped = {name for name, _ in samples}
    missing = {expr: names - scraped for expr, names in referenced_metrics().items()}
    assert {expr: names for expr, names in missing.items() if names} == {}


def assert_values_moved(s: Samples) -> None:
    m = "heygen_worker_"
    assert total(s, m + "commands_total", outcome="ok") == 8
    assert total(s, m + "commands_total", type="session.speak", outcome="rejected") == 1
    assert total(s, m + "commands_total", type="invalid", outcome="dead_lettered") == 1
    assert total(s, m + "dead_letters_total", reason="undecodable") == 1
    assert total(s, m + "dead_letter_queue_messages") == 1
    assert total(s, m + "command_duration_seconds_count") == 9
    assert total(s, m + "command_queue_delay_seconds_count") == 9
    for endpoint in (
        "streaming.new",
        "streaming.start",
        "streaming.task",
        "streaming.interrupt",
        "streaming.keep_alive",
        "streaming.stop",
    ):
        assert total(s, m + "heygen_requests_total", endpoint=endpoint, outcome="ok") > 0, endpoint
    assert total(s, m + "heygen_requests_total", endpoint="streaming.interrupt", outcome="server")
    assert total(s, m + "heygen_retries_total", endpoint="streaming.interrupt", kind="server") == 1
    for event_type in (
        "session.created",
        "session.ready",
        "speech.started",
        "speech.finished",
        "speech.interrupted",
        "command.completed",
        "command.rejected",
        "session.stopped",
    ):
        assert total(s, m + "events_published_total", type=event_type) > 0, event_type
    assert total(s, m + "sessions") == 1  # "live"; busy and idle were stopped
    assert total(s, m + "sessions_created_total", outcome="ok") == 3
    assert total(s, m + "sessions_stopped_total", reason="requested") == 1
    assert total(s, m + "sessions_stopped_total", reason="idle") == 1
    assert total(s, m + "session_duration_seconds_count") == 2
    assert total(s, m + "keepalives_total", outcome="ok") > 0
    assert total(s, m + "keepalive_lateness_seconds_count") > 0
    assert total(s, m + "speech_tasks_total", task_mode="sync") == 1
    assert total(s, m + "speech_tasks_total", task_mode="async") == 1
    assert total(s, m + "speech_characters_total") == len("in sync") + 5 * 21
    assert total(s, m + "billed_session_seconds_total") > 0
    assert total(s, m + "credits_estimated_total") > 0
    assert total(s, m + "partitions_owned") == total(s, m + "partitions") == PARTITIONS
    assert total(s, m + "bus_connected", connection="consume") == 1
    assert total(s, m + "bus_connected", connection="publish") == 1
    assert total(s, m + "commands_in_flight") == 0


async def assert_dashboard_queries_return_data(prometheus: Prometheus) -> None:
    empty = []
    for expr in dashboard_exprs():
        values = await prometheus.instant(concrete(expr))
        if not any(math.isfinite(value) for value in values) and expr not in MAY_BE_EMPTY:
            empty.append(expr)
    assert empty == []


async def assert_rules_evaluate(prometheus: Prometheus) -> None:
    await prometheus.wait_for('ALERTS{alertname="DeadLetterQueueNotEmpty"}')
    rules = await prometheus.rules()
    assert [(rule["name"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    # A healthy single replica pages nobody.
    assert await prometheus.instant('ALERTS{severity="critical"}') == []
