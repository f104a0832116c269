#!/usr/bin/env bash
# Regenerate requirements.lock: the exact, hash-pinned runtime dependency set the Docker image installs.
# Run after changing [project.dependencies] in pyproject.toml. pip-tools lives in a throwaway venv so the
# project's own .venv is untouched; the lock targets the image's Python (3.11 on Linux).
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "lock-requirements: needs Python 3.11 (the image's); set PYTHON=/path/to/python3.11" >&2
    exit 1
fi

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$python_bin" -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q --disable-pip-version-check 'pip-tools>=7.4'
CUSTOM_COMPILE_COMMAND="scripts/lock-requirements.sh" \
    "$tools/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
echo "wrote requirements.lock"
