#!/usr/bin/env bash
# Copy the Grafana dashboard and the Prometheus alerts from deploy/ into the Helm chart, which
# cannot read files outside its own directory. deploy/ is the source; scripts/deploy-check.sh
# fails when the chart's copies drift from it.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=helm/heygen-streaming-worker/files
mkdir -p "$dest"
for src in deploy/grafana/heygen-streaming-worker.json deploy/prometheus/alerts.yml; do
    cp "$src" "$dest/$(basename "$src")"
    echo "synced $src -> $dest/$(basename "$src")"
done
