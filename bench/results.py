"""The machine a benchmark ran on, and dated sections appended to bench/RESULTS.md."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Sections are appended by the benchmarks (`python -m bench`), newest last. Absolute figures\n"
    "come from a shared 2-core machine and drift from run to run.\n"
)


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


def append_section(markdown: str, path: Path = RESULTS) -> None:
    """Append one benchmark's section (starting with a `## ` title) to the results file."""
    if not path.exists():
        path.write_text(HEADER)
    with path.open("a") as results:
        results.write("\n" + markdown.rstrip() + "\n")


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
