"""The metric families: names, types, labels, buckets, bounded label values."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import contracts
from contracts.common import StopReason
from worker.observability.metrics import LATENCY_BUCKETS, Metrics

# family name (as exposed) -> (type, label names)
EXPECTED = {
    "heygen_worker_commands_received": ("counter", {"type"}),
    "heygen_worker_commands": ("counter", {"type", "outcome"}),
    "heygen_worker_command_duration_seconds": ("histogram", {"type"}),
    "heygen_worker_command_queue_delay_seconds": ("histogram", {"type"}),
    "heygen_worker_commands_in_flight": ("gauge", set()),
    "heygen_worker_heygen_requests": ("counter", {"provider", "endpoint", "outcome"}),
    "heygen_worker_heygen_request_duration_seconds": ("histogram", {"provider", "endpoint"}),
    "heygen_worker_heygen_retries": ("counter", {"provider", "endpoint", "kind"}),
    "heygen_worker_sessions": ("gauge", {"provider", "state"}),
    "heygen_worker_sessions_created": ("counter", {"provider", "outcome"}),
    "heygen_worker_sessions_stopped": ("counter", {"provider", "reason"}),
    "heygen_worker_session_duration_seconds": ("histogram", {"reason"}),
    "heygen_worker_billed_session_seconds": ("counter", set()),
    "heygen_worker_credits_estimated": ("counter", set()),
    "heygen_worker_speech_tasks": ("counter", {"provider", "task_type", "task_mode"}),
    "heygen_worker_speech_characters": ("counter", set()),
    "heygen_worker_keepalives": ("counter", {"provider", "outcome"}),
    "heygen_worker_keepalive_lateness_seconds": ("histogram", set()),
    "heygen_worker_reconnects": ("counter", {"provider", "outcome"}),
    "heygen_worker_provider_credits": ("gauge", {"provider"}),
    "heygen_worker_credit_burn_per_minute": ("gauge", {"provider"}),
    "heygen_worker_observed": ("counter", {"provider", "kind"}),
    "heygen_worker_leaked_sessions_stopped": ("counter", set()),
    "heygen_worker_events_published": ("counter", {"type"}),
    "heygen_worker_event_publish_failures": ("counter", set()),
    "heygen_worker_broker_confirm_seconds": ("histogram", {"kind"}),
    "heygen_worker_dead_letters": ("counter", {"reason"}),
    "heygen_worker_bus_connected": ("gauge", {"connection"}),
    "heygen_worker_partitions_owned": ("gauge", set()),
    "heygen_worker_dead_letter_queue_messages": ("gauge", set()),
    "heygen_worker_broker_api_up": ("gauge", set()),
    "heygen_worker_partitions": ("gauge", set()),
    "heygen_worker_max_sessions": ("gauge", set()),
    "heygen_worker_credit_alert_seconds": ("gauge", set()),
    "heygen_worker_build": ("info", {"version", "python"}),
}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, version="1.2.3")


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def test_every_family_is_exposed_with_its_labels(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    families = {family.name: family for family in text_string_to_metric_families(scrape(registry))}
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= set(families)
    families = {name: f for name, f in families.items() if name.startswith("heygen_worker_")}
    # The text format shows an Info as a gauge named <name>_info.
    families["heygen_worker_build"] = families.pop("heygen_worker_build_info")
    families["heygen_worker_build"].type = "info"
    assert set(families) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        family = families[name]
        assert family.type == kind, name
        assert family.samples, f"{name} has no series before its first event"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == labels, name
            assert "session_id" not in sample.labels


def test_no_created_series_double_the_scrape(metrics: Metrics, registry: CollectorRegistry) -> None:
    assert "_created" not in scrape(registry).replace("sessions_created", "")


def test_latency_buckets_reach_minutes(metrics: Metrics, registry: CollectorRegistry) -> None:
    assert LATENCY_BUCKETS[0] <= 0.01
    assert LATENCY_BUCKETS[-1] >= 60
    metrics.heygen_request_duration_seconds.labels("heygen", "streaming.task").observe(42)
    bucket = "heygen_worker_heygen_request_duration_seconds_bucket"
    task = {"provider": "heygen", "endpoint": "streaming.task"}
    below = registry.get_sample_value(bucket, {**task, "le": "30.0"})
    above = registry.get_sample_value(bucket, {**task, "le": "60.0"})
    assert (below, above) == (0, 1)
    top = registry.get_sample_value(
        "heygen_worker_session_duration_seconds_bucket", {"reason": "idle", "le": "14400.0"}
    )
    assert top == 0


def test_build_info_has_version_and_python(metrics: Metrics, registry: CollectorRegistry) -> None:
    text = scrape(registry)
    assert 'heygen_worker_build_info{python="' in text
    assert 'version="1.2.3"' in text


def test_known_label_values_follow_the_contracts(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    value = registry.get_sample_value
    for command_type in (*contracts.COMMAND_TYPES, "invalid"):
        assert value("heygen_worker_commands_received_total", {"type": command_type}) == 0
    for event_type in contracts.EVENT_TYPES:
        assert value("heygen_worker_events_published_total", {"type": event_type}) == 0
    for reason in StopReason:
        for provider in ("heygen", "liveavatar"):
            labels = {"provider": provider, "reason": reason.value}
            assert value("heygen_worker_sessions_stopped_total", labels) == 0
    assert (
        value("heygen_worker_sessions", {"provider": "heygen", "state": "stopped"}) is None
    )  # not a live state
    assert value("heygen_worker_dead_letters_total", {"reason": "schema"}) == 0


def test_observe_request_bounds_endpoint_and_outcome_per_provider(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_request("heygen", "streaming.new", "capacity", 1.5)
    metrics.observe_request("heygen", "/v9/anything", "weird", 0.1)
    metrics.observe_request("liveavatar", "sessions.start", "ok", 0.2)
    metrics.observe_request("liveavatar", "streaming.new", "ok", 0.2)  # not a LiveAvatar endpoint
    value = registry.get_sample_value
    requests = "heygen_worker_heygen_requests_total"
    heygen = {"provider": "heygen"}
    assert value(requests, {**heygen, "endpoint": "streaming.new", "outcome": "capacity"}) == 1
    assert value(requests, {**heygen, "endpoint": "other", "outcome": "other"}) == 1
    liveavatar = {"provider": "liveavatar", "outcome": "ok"}
    assert value(requests, {**liveavatar, "endpoint": "sessions.start"}) == 1
    assert value(requests, {**liveavatar, "endpoint": "other"}) == 1
    duration = "heygen_worker_heygen_request_duration_seconds_sum"
    assert value(duration, {**heygen, "endpoint": "streaming.new"}) == 1.5


def test_broker_confirms_are_timed_by_kind_to_the_sub_millisecond(
    metrics: Metrics, registry: CollectorRegistry
) -> None:
    metrics.observe_confirm("state", 0.0015)
    bucket = "heygen_worker_broker_confirm_seconds_bucket"
    value = registry.get_sample_value
    assert value(bucket, {"kind": "state", "le": "0.001"}) == 0
    assert value(bucket, {"kind": "state", "le": "0.002"}) == 1
    assert value(bucket, {"kind": "event", "le": "+Inf"}) == 0


def test_child_is_the_labelled_series_cached(metrics: Metrics, registry: CollectorRegistry) -> None:
    first = metrics.child(metrics.commands_total, "session.speak", "ok")
    assert metrics.child(metrics.commands_total, "session.speak", "ok") is first
    first.inc()
    metrics.child(metrics.command_duration_seconds, "session.speak").observe(0.2)
    value = registry.get_sample_value
    assert value("heygen_worker_commands_total", {"type": "session.speak", "outcome": "ok"}) == 1
    assert value("heygen_worker_command_duration_seconds_count", {"type": "session.speak"}) == 1


def test_two_registries_do_not_collide() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Metrics(first).partitions.set(8)
    Metrics(second).partitions.set(4)
    assert first.get_sample_value("heygen_worker_partitions") == 8
    assert second.get_sample_value("heygen_worker_partitions") == 4


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_lints_the_exposition(metrics: Metrics, registry: CollectorRegistry) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=scrape(registry),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
