"""Sampling profiles of a running process with py-spy, summarised by function."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Profile:
    samples: int
    own: Counter[str]  # samples with the function on top of the stack
    inclusive: Counter[str]  # samples with the function anywhere in the stack
    raw_path: Path

    def top(self, counts: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(name, count / max(self.samples, 1)) for name, count in counts.most_common(n)]


def py_spy() -> str | None:
    """The py-spy next to this interpreter, else on PATH; None when it is not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, rate: int = 200) -> Profile:
    """Sample `pid` for `seconds` (non-blocking: the process is never paused) and summarise."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--rate",
        str(rate),
        "--nonblocking",
        "--format",
        "raw",
        "--output",
        str(out),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return summarise(out)


def _frame(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "module.py:function"
    name, _, where = frame.partition(" (")
    return f"{Path(where.split(':', 1)[0]).name}:{name}" if where else name


def summarise(raw_path: Path) -> Profile:
    """Collapsed stacks ("frame;frame;... count" a line) by function: own and inclusive share."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    samples = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        # The first frame is the process/thread line py-spy adds.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return Profile(samples, own, inclusive, raw_path)
