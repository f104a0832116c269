"""What the keep-alive scale benchmark measured, its goals, and how it is printed and recorded."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.sampler import Phase
from bench.stats import quantile

REPO = Path(__file__).resolve().parents[1]
# The goals of the session pool issue (4).
MAX_RSS_MB = 150.0
MAX_LATENESS_P99_S = 1.0


@dataclass(frozen=True)
class Params:
    sessions: int = 10_000
    interval_s: float = 10.0
    intervals: int = 3
    # session.create commands published and not yet answered (ready, rejected or failed).
    create_concurrency: int = 256
    deadline_s: float = 900.0
    # Extra environment for the worker (e.g. WORKER_KEEPALIVE_CONCURRENCY), recorded with results.
    worker_env: Mapping[str, str] = field(default_factory=dict)
    # Extra environment for the simulator (e.g. SIMULATOR_WORDS_PER_MINUTE).
    simulator_env: Mapping[str, str] = field(default_factory=dict)
    # The tree whose worker and simulator run (another checkout or a patched copy to compare).
    source: Path = REPO
    # What distinguishes this run in RESULTS.md (a patch being tried, a setting changed).
    label: str = ""

    @property
    def idle_timeout_s(self) -> float:
        """The simulator's idle close: a session not kept alive dies well within the run."""
        return 3 * self.interval_s

    @property
    def hold_s(self) -> float:
        return (self.intervals + 1) * self.interval_s


SMOKE = Params(sessions=200, interval_s=2.0, intervals=2, create_concurrency=64, deadline_s=40.0)


@dataclass(frozen=True)
class Goal:
    name: str
    measured: str
    passed: bool


def mb(kib: float) -> float:
    return kib * 1024 / 1e6


def _s(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f} s"


@dataclass
class Report:
    params: Params
    machine: Mapping[str, str]
    rabbitmq_version: str
    revision: str  # of the worker and simulator measured
    started: str
    ready: int
    create_failures: Mapping[str, str]
    creation_s: float
    create_latency_s: Sequence[float]
    rss_kib: Mapping[str, int]  # start, after create, end, peak
    create_phase: Phase
    hold_phase: Phase
    # Probe round trips by phase and process: how long each event loop took to answer.
    responsiveness: Mapping[str, Mapping[str, Sequence[float]]]
    keepalives_by_outcome: Mapping[str, float]
    simulator_keepalives: int
    keepalives_per_session: Sequence[int]
    histogram_p50_s: float
    histogram_p99_s: float
    histogram_count: float
    lateness_all_s: Sequence[float]  # every gap of the run, creation included
    lateness_held_s: Sequence[float]  # gaps ended in the measured hold (after the settling one)
    longest_gap_s: float
    log_kept: int
    log_total: int
    live_at_end: int
    closed_by_reason: Counter[str]
    worker_events: Counter[str]
    log_dir: str

    @property
    def creation_rate(self) -> float:
        return self.ready / self.creation_s if self.creation_s else math.nan

    @property
    def lost_idle(self) -> int:
        return self.closed_by_reason.get("idle", 0)

    def goals(self) -> list[Goal]:
        p = self.params
        lost = p.sessions - self.live_at_end
        peak = mb(self.rss_kib["peak"])
        p99 = quantile(self.lateness_held_s, 0.99)
        if math.isnan(p99):
            p99 = self.histogram_p99_s  # no request log: the worker's own (coarser) view
        return [
            Goal(
                "no session lost",
                f"{self.lost_idle} closed idle, {lost} of {p.sessions} not live at the end",
                self.lost_idle == 0 and lost == 0 and not self.create_failures,
            ),
            Goal(f"worker RSS < {MAX_RSS_MB:g} MB", f"peak {peak:.1f} MB", peak < MAX_RSS_MB),
            Goal(
                f"keep-alive lateness p99 < {MAX_LATENESS_P99_S:g} s",
                f"p99 {_s(p99)} while holding",
                p99 < MAX_LATENESS_P99_S,
            ),
        ]

    @property
    def passed(self) -> bool:
        return all(goal.passed for goal in self.goals())

    def rows(self) -> list[tuple[str, str]]:
        p = self.params
        create, hold = self.create_phase, self.hold_phase
        rss = {k: f"{mb(v):.1f}" for k, v in self.rss_kib.items()}
        per_session = (self.rss_kib["after create"] - self.rss_kib["start"]) / max(self.ready, 1)
        lat = self.create_latency_s
        per = self.keepalives_per_session
        outcomes = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(self.keepalives_by_outcome.items()))
        closed_other = {k: v for k, v in self.closed_by_reason.items() if k != "idle"}
        events = ", ".join(f"{k} {v}" for k, v in sorted(self.worker_events.items())) or "none"
        return [
            ("sessions ready / asked", f"{self.ready:,} / {p.sessions:,}"),
            ("create failures", _failures(self.create_failures)),
            (
                "creation rate",
                f"{self.creation_rate:,.0f} sessions/s ({self.creation_s:.1f} s, "
                f"{p.create_concurrency} in flight)",
            ),
            (
                "create latency p50 / p99",
                f"{quantile(lat, 0.5) * 1000:.0f} / {quantile(lat, 0.99) * 1000:.0f} ms "
                "(publish to session.ready)",
            ),
            (
                "worker RSS start / after create / end / peak",
                f"{rss['start']} / {rss['after create']} / {rss['end']} / {rss['peak']} MB",
            ),
            ("worker RSS per session", f"{per_session:.1f} KiB"),
            (
                "worker CPU while creating",
                f"{create.cpu_s['worker']:.1f} s ({create.core_share('worker'):.0%} of a core)",
            ),
            (
                f"worker CPU holding ({hold.seconds:.0f} s)",
                f"{hold.cpu_s['worker']:.1f} s ({hold.core_share('worker'):.0%} of a core)",
            ),
            (
                "others while holding (same cores)",
                f"simulator {hold.core_share('simulator'):.0%}, RabbitMQ "
                f"{hold.core_share('rabbitmq'):.0%}, bench {hold.core_share('bench'):.0%}; "
                f"machine {hold.machine_busy_cores:.2f} of {self.machine['cores (nproc)']} "
                "cores busy",
            ),
            *(
                (f"answer time while {phase} p50 / p99 / max", _probes(probes))
                for phase, probes in self.responsiveness.items()
            ),
            ("keep-alives (worker metric)", outcomes or "none"),
            ("keep-alives (simulator)", f"{self.simulator_keepalives:,}"),
            (
                "keep-alives per session min / median / max",
                f"{min(per, default=0)} / {statistics.median(per) if per else 0:g} / "
                f"{max(per, default=0)}",
            ),
            (
                "lateness, worker histogram p50 / p99",
                f"{_s(self.histogram_p50_s)} / {_s(self.histogram_p99_s)} "
                f"(bucket resolution, {self.histogram_count:,.0f} observed)",
            ),
            (
                f"lateness, simulator log, holding ({p.intervals} intervals)",
                _spread(self.lateness_held_s),
            ),
            ("lateness, simulator log, whole run", _spread(self.lateness_all_s)),
            (
                "longest gap between activity",
                f"{_s(self.longest_gap_s)} (interval {p.interval_s:g} s, HeyGen idle close "
                f"{p.idle_timeout_s:g} s)",
            ),
            ("request log kept", f"{self.log_kept:,} of {self.log_total:,} requests"),
            ("sessions live at the end", f"{self.live_at_end:,}"),
            ("closed by the simulator: idle (LOST)", str(self.lost_idle)),
            ("closed by the simulator: other", str(closed_other or "none")),
            ("worker events besides ready", events),
        ]

    def table(self) -> str:
        return aligned(self.rows() + [(f"GOAL {g.name}", verdict(g)) for g in self.goals()])

    def markdown(self) -> str:
        p = self.params
        lines = [
            f"## Keep-alive scale: {p.sessions:,} sessions, {self.started}"
            + (f" ({p.label})" if p.label else ""),
            "",
            f"`python -m bench.keepalive_scale --sessions {p.sessions} "
            f"--interval {p.interval_s:g} --intervals {p.intervals}`: one worker process holds "
            f"the sessions for {p.intervals} keep-alive intervals plus one to settle "
            f"({p.hold_s:g} s) against the simulator (idle close {p.idle_timeout_s:g} s) in "
            "separate processes. RabbitMQ, the simulator, the benchmark and the worker share "
            "the same cores.",
            "",
            "Machine: "
            + "; ".join(f"{k} {v}" for k, v in self.machine.items())
            + f"; RabbitMQ {self.rabbitmq_version}.",
        ]
        lines += ["", f"Worker and simulator code: {self.revision}."]
        if p.worker_env:
            env = " ".join(f"{k}={v}" for k, v in sorted(p.worker_env.items()))
            lines += ["", f"Worker environment: `{env}`."]
        lines += ["", "| figure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        lines += ["", "| goal | measured | result |", "|---|---|---|"]
        lines += [
            f"| {g.name} | {g.measured} | {'PASS' if g.passed else 'FAIL'} |" for g in self.goals()
        ]
        lines += [
            "",
            "Lateness from the simulator's log is, per session, each gap between consecutive "
            f"accepted activity requests minus the {p.interval_s:g} s interval (0 when shorter); "
            '"holding" counts the gaps that ended after the first (settling) interval of the '
            "hold. The worker's histogram measures dispatch against each keep-alive's jittered "
            "due time, to its bucket bounds.",
        ]
        return "\n".join(lines)


def _failures(failures: Mapping[str, str]) -> str:
    if not failures:
        return "0"
    # The same message for many sessions: count them once, without the session ids.
    kinds = Counter(re.sub(r"\bbench-\d+\b", "<id>", m) for m in failures.values())
    message, count = kinds.most_common(1)[0]
    return f"{len(failures)} (most common, {count}x: {message})"


def _probes(probes: Mapping[str, Sequence[float]]) -> str:
    def ms(values: Sequence[float], q: float) -> str:
        return f"{quantile(values, q) * 1000:.0f}"

    return "; ".join(
        f"{name} {ms(v, 0.5)} / {ms(v, 0.99)} / {ms(v, 1.0)} ms" for name, v in probes.items()
    )


def _spread(lateness: Sequence[float]) -> str:
    late = sum(1 for x in lateness if x > 0)
    return (
        f"p50 {_s(quantile(lateness, 0.5))} / p99 {_s(quantile(lateness, 0.99))} / "
        f"max {_s(max(lateness, default=math.nan))} ({len(lateness):,} gaps, {late:,} late)"
    )


def verdict(goal: Goal) -> str:
    return f"{'PASS' if goal.passed else 'FAIL'} ({goal.measured})"


def aligned(rows: Sequence[tuple[str, str]]) -> str:
    """Name / value rows as two aligned columns of text."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
