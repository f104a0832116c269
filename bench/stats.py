"""Quantiles of samples and of Prometheus histograms, and keep-alive gaps from a request log."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from simulator.admin import RequestRecord

# What HeyGen counts as activity on a session (each one restarts its idle countdown).
ACTIVITY_ENDPOINTS = frozenset(
    {"streaming.start", "streaming.keep_alive", "streaming.task", "streaming.interrupt"}
)


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (q in [0, 1]) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Gap:
    session_id: str
    ended: float  # wall-clock time of the request that ended the gap
    seconds: float


def activity_gaps(records: Iterable[RequestRecord]) -> list[Gap]:
    """Every gap between consecutive accepted activity requests of a session (simulator clock)."""
    times: dict[str, list[float]] = {}
    for record in records:
        if record.session_id and record.applied and record.endpoint in ACTIVITY_ENDPOINTS:
            times.setdefault(record.session_id, []).append(record.at)
    gaps: list[Gap] = []
    for session_id, stamps in times.items():
        stamps.sort()
        gaps += [Gap(session_id, b, b - a) for a, b in itertools.pairwise(stamps)]
    return gaps


def lateness(gaps: Iterable[Gap], interval_s: float, since: float = -math.inf) -> list[float]:
    """How far each gap ended after `since` overran the interval the worker promises (0 if not)."""
    return [max(0.0, gap.seconds - interval_s) for gap in gaps if gap.ended >= since]


# --- Prometheus text ------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]  # by sample name: [(labels, value)]


def scrape(text: str) -> Samples:
    """Samples of an exposition, by sample name: [(labels, value)]."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    """The series of `name` summed by one label (over the others, such as `provider`)."""
    sums: dict[str, float] = {}
    for labels, value in samples.get(name, []):
        key = labels.get(label, "")
        sums[key] = sums.get(key, 0.0) + value
    return sums


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear within the bucket holding rank q.

    `buckets` are (upper bound, cumulative count) including +Inf; the answer is only as fine
    as the bucket bounds. A rank in the +Inf bucket answers the highest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


def histogram_buckets(samples: Samples, name: str) -> list[tuple[float, float]]:
    return [(float(labels["le"]), value) for labels, value in samples.get(f"{name}_bucket", [])]


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """What one series of a Prometheus histogram gained between two scrapes."""

    count: float
    total: float  # the _sum
    buckets: list[tuple[float, float]]

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        return histogram_quantile(self.buckets, q)


def histogram_delta(before: Samples, after: Samples, name: str, **labels: str) -> HistogramDelta:
    """The observations of `name{labels}` made between the scrapes `before` and `after`."""

    def series(samples: Samples, suffix: str) -> dict[str, float]:
        return {
            got.get("le", ""): value
            for got, value in samples.get(f"{name}{suffix}", [])
            if all(got.get(k) == v for k, v in labels.items())
        }

    def gained(suffix: str) -> dict[str, float]:
        old = series(before, suffix)
        return {key: value - old.get(key, 0.0) for key, value in series(after, suffix).items()}

    count, total = gained("_count").get("", 0.0), gained("_sum").get("", 0.0)
    buckets = [(float(le), value) for le, value in gained("_bucket").items()]
    return HistogramDelta(count, total, buckets)
