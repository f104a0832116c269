"""What the Grafana dashboard and the Prometheus rules reference: PromQL expressions, metric names,
promtool to parse them and a real Prometheus to run them. Shared by the lint tests and the
end-to-end scrape tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "heygen-streaming-worker.json"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
# Series Prometheus makes itself rather than scraping them.
SYNTHETIC_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
SCRAPE_JOB = "heygen-worker"  # the job name the rules expect (deploy/prometheus/prometheus.yml)

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


def referenced_metrics() -> dict[str, set[str]]:
    """The scraped metric names each dashboard query and rule expression selects (recorded and
    synthetic series left out), by expression."""
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    exprs = [*dashboard_exprs(), *(rule["expr"] for rule in rules())]
    return {expr: metric_names(expr) - recorded - SYNTHETIC_SERIES for expr in exprs}


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


class Prometheus:
    """A running Prometheus (see running_prometheus) and its query API."""

    def __init__(self, client: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
        self.client = client
        self._process = process

    async def instant(self, query: str) -> list[float]:
        """The values of an instant query (one per series)."""
        body = (await self.client.get("/api/v1/query", params={"query": query})).json()
        assert body["status"] == "success", (query, body)
        return [float(sample["value"][1]) for sample in body["data"]["result"]]

    async def rules(self) -> list[dict[str, Any]]:
        body = (await self.client.get("/api/v1/rules")).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]

    async def wait_for(self, query: str, within: float = 15) -> None:
        """Until `query` returns a series (a filter such as `... >= 3`), Prometheus alive."""
        async with asyncio.timeout(within):
            while True:
                if self._process.returncode is not None:
                    assert self._process.stderr is not None
                    stderr = (await self._process.stderr.read()).decode()
                    pytest.fail(f"prometheus exited: {stderr[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    ready = (await self.client.get("/-/ready")).status_code == 200
                    if ready and await self.instant(query):
                        return
                await asyncio.sleep(0.1)

    async def wait_for_scrape_after(self, moment: float) -> None:
        """Until Prometheus has scraped the worker after `moment` (a time.time())."""
        await self.wait_for(f'timestamp(up{{job="{SCRAPE_JOB}"}}) > {moment}')


@contextlib.asynccontextmanager
async def running_prometheus(
    target: str, directory: Path, scrape_interval: str = "500ms"
) -> AsyncIterator[Prometheus]:
    """A Prometheus with the alert rules loaded, scraping `target` (host:port) as job
    heygen-worker; yields once it has scraped the target once."""
    binary = require_binary("prometheus")
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": SCRAPE_JOB, "static_configs": [{"targets": [target]}]}],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            prometheus = Prometheus(client, process)
            await prometheus.wait_for(f'up{{job="{SCRAPE_JOB}"}} == 1')
            yield prometheus
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
