"""The machine a benchmark ran on, and each benchmark's latest run in bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "The latest recorded run of each benchmark (`python -m bench`), with its machine and code\n"
    "revision: a run replaces its benchmark's previous section (git keeps the history).\n"
    "Absolute figures come from a shared 2-core machine and drift from run to run.\n"
)
# Opens each benchmark's section (`<!-- bench: speak -->`), so that its next run replaces it.
_MARK = "<!-- bench: "


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return {
        "cores (nproc)": str(os.cpu_count()),
        "CPU": cpu_model(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load average at start": load,
    }


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def record_section(benchmark: str, markdown: str, path: Path = RESULTS) -> None:
    """Put `benchmark`'s latest section (starting with a `## ` title) into the results file, in
    place of its previous one, or at the end when it has none."""
    text = path.read_text() if path.exists() else HEADER
    mark = f"{_MARK}{benchmark} -->"
    section = f"{mark}\n{markdown.strip()}\n"
    start = text.find(mark)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find(_MARK, start + len(mark))
        text = text[:start] + section + ("\n" + text[end:] if end >= 0 else "")
    path.write_text(text)


def revision(tree: Path) -> str:
    """The commit a tree is at, marked when its code differs from it; or just its path."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tree), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit or Path(git("rev-parse", "--show-toplevel")) != tree.resolve():
        return str(tree)
    dirty = git("status", "--porcelain", "--", "worker", "simulator", "contracts")
    return f"{commit}{' + uncommitted changes' if dirty else ''}"
