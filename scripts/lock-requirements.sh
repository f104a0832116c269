#!/usr/bin/env bash
# Regenerate requirements.lock: the exact, hash-pinned runtime dependency set the Docker image installs.
# Run after changing [project.dependencies] in pyproject.toml or contracts/pyproject.toml. pip-tools lives
# in a throwaway venv so the project's own .venv is untouched; the lock targets the image's Python (3.11
# on Linux). The two distributions built from this tree are left out: the image installs them from it.
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
# What the worker and the contracts (with the extras the worker asks for) require from an index.
"$python_bin" - >"$tools/requirements.in" <<'PY'
import re
import tomllib

projects = {}
for path in ("pyproject.toml", "contracts/pyproject.toml"):
    with open(path, "rb") as project_file:
        project = tomllib.load(project_file)["project"]
    projects[project["name"]] = project
wanted = [("heygen-streaming-worker", set())]
for name, extras in wanted:
    project = projects[name]
    specs = project["dependencies"] + [
        spec for extra in extras for spec in project["optional-dependencies"][extra]
    ]
    for spec in specs:
        local = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^]]*)\])?", spec)
        if local[1] in projects:
            wanted.append((local[1], set(filter(None, (local[2] or "").split(",")))))
        else:
            print(spec)
PY
lock="$PWD/requirements.lock"
# From the throwaway folder, so that the lock's annotations name requirements.in, not a temp path.
cd "$tools"
CUSTOM_COMPILE_COMMAND="scripts/lock-requirements.sh" \
    "$tools/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --output-file "$lock" requirements.in
echo "wrote requirements.lock"
