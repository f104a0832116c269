"""What the Grafana dashboard and the Prometheus rules reference: PromQL expressions, metric names,
and promtool to parse them. Shared by the lint tests and the end-to-end scrape test."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "heygen-streaming-worker.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
# Series Prometheus makes itself rather than scraping them.
SYNTHETIC_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"}
    | {"group_left", "group_right"}
)
_LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.*),)?\s*\w+\s*\)")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs(board: dict[str, Any] | None = None) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries' selectors."""
    board = board or dashboard()
    exprs = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.fullmatch(variable["definition"].strip())
            assert match, f"unsupported variable query: {variable['definition']}"
            if match["selector"]:
                exprs.append(match["selector"])
    return exprs


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords removed)."""
    for pattern in (_STRING, _MATCHERS, _RANGES, _GROUPING, _VARIABLE, _NUMBER):
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        is_call = expr[match.end() :].lstrip().startswith("(")
        if not is_call and match.group(0) not in _KEYWORDS:
            names.add(match.group(0))
    return names


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a scrape of `registry` contains (foo_total, foo_bucket, ...)."""
    return {sample.name for family in registry.collect() for sample in family.samples}


def concrete(expr: str) -> str:
    """`expr` with Grafana's variables replaced by values that keep it valid PromQL."""
    expr = re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "1m", expr)
    expr = _STRING.sub(lambda match: _VARIABLE.sub(".*", match.group(0)), expr)
    return _VARIABLE.sub("1", expr)


def require_binary(name: str) -> str:
    """The path of `name` (promtool, prometheus). Missing: a skip locally, a failure in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found: run scripts/ensure-promtool.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def promql_errors(exprs: Iterable[str]) -> str:
    """promtool's complaints about `exprs` (parsed as recording rules); empty when all parse."""
    rule_list = [{"record": f"query_{i}", "expr": expr} for i, expr in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rule_list}]}))
        result = promtool("check", "rules", str(path))
    return "" if result.returncode == 0 else result.stdout + result.stderr
