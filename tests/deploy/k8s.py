"""Renders the Helm chart with Helm's own Go engine and validates the objects it produces.

The engine is libhelm_c (Helm v4's SDK behind a C ABI) from the helm-python-sdk wheel: no helm
binary and no cluster. Built-in kinds are checked against the Kubernetes OpenAPI schemas of
kubernetes-validate; the CRDs against cloudcoil's models generated from the published KEDA and
prometheus-operator CRDs, strictly (a field the model does not know is an error).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pydantic
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring

REPO = Path(__file__).parents[2]
CHART = REPO / "helm" / "heygen-streaming-worker"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "demo"
NAMESPACE = "avatars"

# The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

CRD_MODELS: dict[tuple[str, str], type[pydantic.BaseModel]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): monitoring.PrometheusRule,
}

Manifest = dict[str, Any]


def load_values(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return values


def render(values: dict[str, Any], chart: Path = CHART) -> list[Manifest]:
    """`helm template` of the chart: every object of every template, NOTES excluded."""
    with helm.Chart.load(chart) as loaded:
        files = loaded.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for name, text in sorted(files.items())
        if name.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def lint_problems(values: dict[str, Any], chart: Path = CHART) -> list[str]:
    """`helm lint --strict`: warnings and errors (info-level notes are not problems)."""
    report = helm.lint(chart, values, strict=True, namespace=NAMESPACE)
    messages = [m for m in report["messages"] if m["severity"] >= 2]
    return [f"{m['path']}: {m['error']}" for m in messages] + list(report["errors"])


def find(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (manifest,) = find(manifests, kind)
    return manifest


def schema_errors(manifest: Manifest) -> list[str]:
    """Why the object would not be accepted; empty when it would be."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key in CRD_MODELS:
        return _crd_errors(CRD_MODELS[key], manifest)
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            return [f"no schema for {key} in Kubernetes {version}"]
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"Kubernetes {version}: {exc.message} at {list(exc.path)}")
    return errors


def _crd_errors(model: type[pydantic.BaseModel], manifest: Manifest) -> list[str]:
    try:
        parsed = model.model_validate(manifest)
    except pydantic.ValidationError as exc:
        return [str(exc)]
    # The models ignore unknown fields: what does not survive the round trip was unknown.
    if parsed.model_dump(mode="json", by_alias=True, exclude_unset=True) != manifest:
        return [f"{manifest['kind']} has fields its CRD does not define"]
    return []


def chart_without_schema(destination: Path) -> Path:
    """A copy of the chart without values.schema.json, to exercise the templates' own guards."""
    copy = destination / CHART.name
    shutil.copytree(CHART, copy)
    (copy / "values.schema.json").unlink()
    return copy
