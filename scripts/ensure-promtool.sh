#!/usr/bin/env bash
# Make sure promtool (and the prometheus server the scrape test runs) is installed.
# Debian's `prometheus` package provides both; idempotent and quick when already there.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo ">> installing prometheus (Debian package, for promtool)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# On a host with systemd the package also starts a prometheus service on :9090; the tests do not
# use it (they run their own server on a free port).
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
command -v promtool >/dev/null
