"""Lint of the Grafana dashboard: conventions, metric names that exist, PromQL that parses."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tests.unit.observability_refs import (
    concrete,
    dashboard,
    dashboard_exprs,
    exposed_names,
    metric_names,
    panels,
    promql_errors,
)
from worker.observability.metrics import Metrics

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ROWS = {
    "Overview: commands (rate, errors, duration)",
    "HeyGen API",
    "Sessions",
    "Usage and cost",
    "Bus and process",
}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return dashboard()


def query_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in panels(board) if panel["type"] != "row"]


def test_identity_and_schema(board: dict[str, Any]) -> None:
    assert board["uid"] == "heygen-streaming-worker"
    assert board["schemaVersion"] >= 39
    assert {panel["title"] for panel in panels(board) if panel["type"] == "row"} == ROWS
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))


def test_variables(board: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
    assert variables["credit_price"]["type"] == "textbox"
    assert float(variables["credit_price"]["query"]) > 0


def test_every_panel_and_target_uses_the_datasource_variable(board: dict[str, Any]) -> None:
    for panel in query_panels(board):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]


def test_panels_fit_the_grid_without_overlap(board: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in panels(board):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells


def test_queries_follow_the_conventions(board: dict[str, Any]) -> None:
    for panel in query_panels(board):
        for target in panel["targets"]:
            expr = target["expr"]
            # Every range is Grafana's rate interval (at least 4 scrapes, follows the zoom).
            assert set(re.findall(r"\[([^\]]*)\]", expr)) <= {"$__rate_interval"}, expr
            # Quantiles over the buckets summed across instances, never averaged quantiles.
            for quantile in re.finditer(r"histogram_quantile\(\s*[\d.]+\s*,\s*(\S.*)", expr):
                assert re.match(r"sum by \(le\b", quantile.group(1)), expr
            # Every selector honours the job and instance variables.
            for matchers in re.findall(r"\{([^}]*)\}", expr):
                assert 'job=~"$job"' in matchers, expr
                assert 'instance=~"$instance"' in matchers, expr


def test_every_metric_exists_in_the_worker() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    known = exposed_names(registry)
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= known, f"unknown metric in {expr!r}: {names - known}"


def test_every_worker_family_has_a_panel() -> None:
    """A new metric is not done until an on-call engineer can see it."""
    registry = CollectorRegistry()
    Metrics(registry)
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    # Selectors name samples (foo_total, foo_bucket, foo_info), not families.
    hidden = {
        family.name
        for family in registry.collect()
        if family.name.startswith("heygen_worker_")
        and not {sample.name for sample in family.samples} & used
    }
    assert hidden == set()


def test_every_query_parses_as_promql() -> None:
    assert promql_errors(concrete(expr) for expr in dashboard_exprs()) == ""


def test_the_lint_catches_mistakes() -> None:
    assert metric_names('sum by (le) (rate(heygen_worker_typo_total{job=~"$job"}[5m]))') == {
        "heygen_worker_typo_total"
    }
    assert promql_errors(["sum(rate(foo[5m]) by"]) != ""
