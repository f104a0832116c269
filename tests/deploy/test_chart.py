"""The Helm chart, rendered by Helm's real engine: lint, valid objects, and what they promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from pydantic import AliasChoices

from tests.deploy.k8s import (
    CHART,
    CI_VALUES,
    REPO,
    chart_without_schema,
    find,
    lint_problems,
    load_values,
    one,
    render,
    schema_errors,
)
from worker.settings import WorkerSettings

DEFAULTS = CHART / "ci" / "default-values.yaml"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
HPA = CHART / "ci" / "hpa-values.yaml"
CREDENTIALS = load_values(DEFAULTS)

# Chart copies of files whose source of truth lives under deploy/.
SYNCED_FILES = [
    ("files/heygen-streaming-worker.json", "deploy/grafana/heygen-streaming-worker.json"),
    ("files/alerts.yml", "deploy/prometheus/alerts.yml"),
]


def _values(**overrides: Any) -> dict[str, Any]:
    return {**CREDENTIALS, **overrides}


def _pod(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def _render_error(values: dict[str, Any], chart: Path = CHART) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render(values, chart)
    return str(caught.value)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_lint_strict_is_clean(values_file: Path) -> None:
    assert lint_problems(load_values(values_file)) == []


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_object_matches_its_schema(values_file: Path) -> None:
    manifests = render(load_values(values_file))
    errors = {f"{m['kind']}/{m['metadata']['name']}": schema_errors(m) for m in manifests}
    assert {name: problems for name, problems in errors.items() if problems} == {}


def test_optional_features_render_their_objects() -> None:
    kinds = {m["kind"] for m in render(load_values(DEFAULTS))}
    assert kinds == {
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Pod",  # the `helm test` hook
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    }
    everything = {m["kind"] for m in render(load_values(ALL_FEATURES))}
    assert everything - kinds == {
        "PrometheusRule",
        "ScaledObject",
        "ServiceMonitor",
        "TriggerAuthentication",
    }
    hpa = render(load_values(HPA))
    assert {m["kind"] for m in hpa} - kinds == {"HorizontalPodAutoscaler"}
    assert find(hpa, "Secret") == [], "existingSecret: the chart creates no Secret"


def test_pod_runs_restricted_with_a_read_only_root() -> None:
    pod = _pod(render(load_values(DEFAULTS)))
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_heygen_key_is_a_mounted_file_and_amqp_url_a_secret_ref() -> None:
    manifests = render(load_values(DEFAULTS))
    (container,) = _pod(manifests)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "HEYGEN_API_KEY" not in env
    key_file = Path(env["HEYGEN_API_KEY_FILE"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["name"] == "heygen-api-key")
    assert key_file.parent == Path(mount["mountPath"])
    volume = next(v for v in _pod(manifests)["volumes"] if v["name"] == "heygen-api-key")
    secret = one(manifests, "Secret")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "heygen-api-key", "path": key_file.name}]
    assert env["AMQP_URL"]["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    assert set(secret["data"]) == {"heygen-api-key", "amqp-url"}
    config = json.dumps(one(manifests, "ConfigMap")["data"])
    assert CREDENTIALS["heygen"]["apiKey"] not in config
    assert CREDENTIALS["amqp"]["url"] not in config


def test_chart_sets_only_variables_the_worker_reads() -> None:
    known = {
        alias
        for field in WorkerSettings.model_fields.values()
        if isinstance(field.validation_alias, AliasChoices)
        for alias in field.validation_alias.choices
        if isinstance(alias, str)
    }
    manifests = render(load_values(ALL_FEATURES))
    (settings,) = (m for m in find(manifests, "ConfigMap") if "WORKER_PARTITIONS" in m["data"])
    (container,) = _pod(manifests)["containers"]
    names = set(settings["data"]) | {e["name"] for e in container["env"]}
    # OTEL_* variables are read by the OpenTelemetry SDK itself.
    assert {name for name in names if not name.startswith("OTEL_")} <= known
    assert settings["data"]["RABBITMQ_MANAGEMENT_URL"] == "https://rabbitmq.rabbitmq.svc:15671"


def test_probes_grace_and_rollout_fit_the_workers_drain() -> None:
    manifests = render(_values(config={"shutdownGraceS": 60}))
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] == 75
    assert one(manifests, "ConfigMap")["data"]["WORKER_SHUTDOWN_GRACE_S"] == "60"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert one(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_network_policy_admits_metrics_in_and_broker_https_dns_out() -> None:
    policy = one(render(load_values(DEFAULTS)), "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {
        (53, "UDP"),
        (53, "TCP"),
        (5671, "TCP"),  # AMQPS
        (5672, "TCP"),
        (15671, "TCP"),  # management API (partition ownership), TLS
        (15672, "TCP"),
        (443, "TCP"),  # HeyGen
    }


def test_chart_copies_of_dashboard_and_alerts_match_deploy() -> None:
    drifted = [
        copy
        for copy, source in SYNCED_FILES
        if not (CHART / copy).is_file()
        or (CHART / copy).read_bytes() != (REPO / source).read_bytes()
    ]
    assert drifted == [], "run scripts/sync-chart-files.sh"


def test_prometheus_rule_and_dashboard_carry_the_deploy_files() -> None:
    manifests = render(load_values(ALL_FEATURES))
    alerts = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    assert one(manifests, "PrometheusRule")["spec"]["groups"] == alerts["groups"]
    (dashboard,) = (
        m for m in find(manifests, "ConfigMap") if m["metadata"]["name"].endswith("-dashboard")
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    source = json.loads((REPO / "deploy/grafana/heygen-streaming-worker.json").read_text())
    assert json.loads(dashboard["data"]["heygen-streaming-worker.json"]) == source


def test_keda_sums_the_backlog_of_the_partition_queues() -> None:
    manifests = render(load_values(ALL_FEATURES))
    scaled = one(manifests, "ScaledObject")["spec"]
    assert one(manifests, "Deployment")["spec"].get("replicas") is None
    assert scaled["minReplicaCount"] >= 1
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["operation"] == "sum"
    assert trigger["metadata"]["useRegex"] == "true"
    auth = one(manifests, "TriggerAuthentication")["spec"]["secretTargetRef"]
    secret = one(manifests, "Secret")
    assert auth == [
        {"parameter": "host", "name": secret["metadata"]["name"], "key": "rabbitmq-management-url"}
    ]
    assert "rabbitmq-management-url" in secret["data"]


def test_schema_refuses_two_autoscalers() -> None:
    both = _values(autoscaling={"enabled": True}, keda={"enabled": True})
    assert "/keda/enabled" in _render_error(both)


def test_templates_refuse_two_autoscalers_without_the_schema(tmp_path: Path) -> None:
    both = _values(autoscaling={"enabled": True}, keda={"enabled": True})
    message = _render_error(both, chart_without_schema(tmp_path))
    assert "mutually exclusive" in message


def test_refuses_more_replicas_than_partitions() -> None:
    message = _render_error(_values(replicaCount=5, config={"partitions": 4}))
    assert "exceeds config.partitions" in message
    hpa = _values(autoscaling={"enabled": True, "maxReplicas": 9})
    assert "autoscaling.maxReplicas (9) exceeds config.partitions (8)" in _render_error(hpa)


def test_credentials_are_required_unless_an_existing_secret_is_named() -> None:
    assert "set heygen.apiKey" in _render_error({})
    assert "set amqp.url" in _render_error({"heygen": {"apiKey": "k"}})
    manifests = render({"existingSecret": "managed-elsewhere"})
    assert find(manifests, "Secret") == []
    volume = next(v for v in _pod(manifests)["volumes"] if v["name"] == "heygen-api-key")
    assert volume["secret"]["secretName"] == "managed-elsewhere"


@pytest.mark.parametrize(
    "bad",
    [
        {"replicas": 3},  # a typo of replicaCount
        {"config": {"logLevel": "TRACE"}},
        {"config": {"partitions": "8"}},
        {"keda": {"enabled": True, "minReplicaCount": 0}},
        {"amqp": {"url": "http://not-amqp"}},
    ],
    ids=["unknown-key", "log-level", "partitions-type", "keda-zero", "amqp-scheme"],
)
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    assert "values don't meet the specifications of the schema" in _render_error(_values(**bad))


def test_liveavatar_key_is_a_mounted_file_when_enabled() -> None:
    off = render(load_values(DEFAULTS))
    (container,) = _pod(off)["containers"]
    assert "LIVEAVATAR_API_KEY_FILE" not in {e["name"] for e in container["env"]}
    assert "liveavatar-api-key" not in one(off, "Secret")["data"]

    on = render(load_values(ALL_FEATURES))
    (container,) = _pod(on)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "LIVEAVATAR_API_KEY" not in env
    key_file = Path(env["LIVEAVATAR_API_KEY_FILE"]["value"])
    volume = next(v for v in _pod(on)["volumes"] if v["name"] == "heygen-api-key")
    assert {"key": "liveavatar-api-key", "path": key_file.name} in volume["secret"]["items"]
    (config,) = [m["data"] for m in find(on, "ConfigMap") if "LIVEAVATAR_BASE_URL" in m["data"]]
    assert config["LIVEAVATAR_BASE_URL"] == "https://api.liveavatar.com"
    assert config["WORKER_DEFAULT_PROVIDER"] == "heygen"
    assert "ci-liveavatar-key" not in json.dumps(config)
    assert "liveavatar.enabled needs liveavatar.apiKey" in _render_error(
        _values(liveavatar={"enabled": True, "apiKey": "", "baseUrl": "https://x"})
    )
