"""The production worker imports neither the simulator nor the CLI (which imports the worker)."""

from __future__ import annotations

import subprocess
import sys


def test_the_worker_imports_neither_the_simulator_nor_the_cli() -> None:
    probe = (
        "import sys, worker.app; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulator' "
        "or m.startswith('worker.cli')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
