"""PNG plots of the speak benchmark: throughput over time, latency distribution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

PLOTS = Path(__file__).with_name("plots")


def throughput(series: Mapping[str, Sequence[float]], bin_s: float, path: Path) -> Path:
    """Answers per second over time, one line per target."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, rates in series.items():
        axes.plot([i * bin_s for i in range(len(rates))], rates, label=name)
    axes.set_xlabel("seconds since the first command")
    axes.set_ylabel(f"answers per second ({bin_s:g} s bins)")
    axes.set_title("Speak throughput over time (closed loop, same in-flight for all)")
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def latency(series: Mapping[str, Sequence[float]], path: Path) -> Path:
    """Distribution (CDF, log time axis) of latencies in milliseconds, one line per series."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for name, values in series.items():
        ordered = sorted(values)
        if not ordered:
            continue
        shares = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.plot(ordered, shares, label=f"{name} (n={len(ordered)})")
    axes.set_xscale("log")
    axes.set_xlabel("command published → speech.started received (ms, log scale)")
    axes.set_ylabel("share of commands at or below")
    axes.set_title("Speak latency at a steady rate")
    axes.grid(alpha=0.3, which="both")
    axes.legend()
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
