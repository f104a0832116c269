"""Prometheus rules: structure, runbooks, metric names that exist, promtool check and unit tests."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.unit.observability_refs import (
    ALERTS,
    PROMETHEUS_DIR,
    SYNTHETIC_SERIES,
    exposed_names,
    metric_names,
    promtool,
    rules,
)
from worker.observability.metrics import Metrics

REQUIRED_ALERTS = {
    "HeyGenWorkerDown",
    "HeyGenWorkerNotReady",
    "PartitionWithoutConsumer",
    "DeadLettersGrowing",
    "DeadLetterQueueNotEmpty",
    "HeyGenErrorRateHigh",
    "HeyGenLatencyHigh",
    "KeepaliveFailures",
    "ReconnectStorm",
    "CreditBurnHigh",
    "SessionsNearCapacity",
}


@pytest.fixture(scope="module")
def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def test_required_alerts_exist_with_runbooks(alerts: list[dict[str, Any]]) -> None:
    assert {alert["alert"] for alert in alerts} >= REQUIRED_ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        annotations = alert["annotations"]
        assert {"summary", "description", "runbook"} <= set(annotations), alert["alert"]
        # A runbook is numbered concrete steps, not a link to nowhere.
        assert re.search(r"\b1\. .+\b2\. ", annotations["runbook"]), alert["alert"]


def test_every_metric_exists_in_the_worker() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    known = exposed_names(registry) | recorded | SYNTHETIC_SERIES
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names <= known, f"unknown metric in {rule['expr']!r}: {names - known}"


def test_every_alert_has_a_unit_test(alerts: list[dict[str, Any]]) -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    text = yaml.safe_dump(tests)
    for alert in alerts:
        assert f"alertname: {alert['alert']}" in text or f'alertname="{alert["alert"]}"' in text


def test_promtool_checks_the_rules_and_the_config() -> None:
    for args in (
        ("check", "rules", str(ALERTS)),
        ("check", "config", str(PROMETHEUS_DIR / "prometheus.yml")),
    ):
        result = promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
