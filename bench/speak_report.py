"""What the speak benchmark measured, its goals, and how it is printed, plotted and recorded."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import plots
from bench.keepalive_report import REPO, Goal, aligned, mb, verdict
from bench.profile import Profile
from bench.stats import HistogramDelta, Samples, histogram_delta, quantile

# The goals of the benchmarks issue (9).
MIN_CEILING_RATIO = 0.6
MIN_PEER_RATIO = 3.0
MAX_ADDED_P99_MS = 5.0
# "Flat": throughput at the most live sessions within this share of the best level's.
MIN_FLAT_RATIO = 0.8


@dataclass(frozen=True)
class SpeakParams:
    levels: tuple[int, ...] = (10, 100, 1_000, 10_000)
    headline_level: int = 100  # where the ratios, simulator round trip and profile are taken
    active: int = 100  # sessions the speaks go to (all of them below this many live)
    # One more closed loop, at the first level with this many live, with the speaks spread over
    # all of them: a session runs its commands one at a time, and 512 in flight over 100
    # sessions queue about five per session, which no real avatar does.
    spread: int = 1_000
    partitions: int = 8  # the worker's default, for every target
    prefetch: int = 64  # the worker's default, per partition, for every target
    in_flight: int = 512  # closed loop: published and unanswered commands, every target
    # The peer answers nothing for its first ~5 s (httpx pool and FastStream start-up): a
    # warm-up past that for every target, so the window measures steady rates.
    warmup_s: float = 7.0
    duration_s: float = 8.0
    bin_s: float = 0.25
    rate: float = 200.0  # commands per second of the latency runs
    # A second latency run at the headline level, at a rate well within the worker's reach.
    low_rate: float = 20.0
    latency_s: float = 6.0
    rest_s: float = 5.0
    sequential_creates: int = 100  # created one at a time: create latency without queueing
    load_size: int = 80_000  # commands encoded per closed-loop run (more than any target uses)
    deadline_s: float = 900.0
    profile: bool = True
    worker_only: bool = False  # no ceilings, no peer: a comparison of workers
    # The machine's speed drifts within minutes: the headline ratios are medians over rounds of
    # relay, peer, skeleton and worker measured back to back (the first round is the figures
    # above).
    rounds: int = 3
    source: Path = REPO
    label: str = ""


SMOKE = SpeakParams(
    levels=(10, 40),
    headline_level=10,
    active=10,
    spread=40,
    in_flight=128,
    warmup_s=0.5,
    duration_s=1.5,
    rate=50.0,
    low_rate=20.0,
    latency_s=1.0,
    rest_s=0.5,
    sequential_creates=10,
    load_size=8_000,
    rounds=2,
    deadline_s=150.0,
    profile=False,
)


@dataclass
class Measured:
    """A closed-loop run of one target."""

    name: str
    rate: float  # answers per second in the measured window
    answered: int
    errors: int
    cores: float  # CPU of the target process in the window, in cores
    timeline: Sequence[float]  # answers per second by bin since the first command
    latency_s: Sequence[float]  # under saturation: mostly queueing, for the record only
    paced_latency_s: Sequence[float] = ()  # open loop at the latency step's rate


@dataclass
class Level:
    live: int
    throughput: Measured
    latency_s: Sequence[float]  # open loop at `rate`
    rest_cores: float
    rest_keepalives_per_s: float  # sent during the rest window
    rss_kib: int


@dataclass(frozen=True)
class Round:
    """Closed-loop speaks/s of the four targets, measured one right after the other."""

    relay: float
    peer: float
    skeleton: float
    worker: float

    @property
    def to_relay(self) -> float:
        return ratio(self.worker, self.relay)

    @property
    def to_peer(self) -> float:
        return ratio(self.worker, self.peer)

    @property
    def floor_to_relay(self) -> float:
        """What the design's message pattern allows, as a share of ceiling (a)."""
        return ratio(self.skeleton, self.relay)

    @property
    def to_floor(self) -> float:
        """The worker against its own message pattern done bare."""
        return ratio(self.worker, self.skeleton)


@dataclass(frozen=True)
class PathWaits:
    """What the worker's own metrics saw during a latency step: the waits a speak has on its
    way to `speech.started` that are not the worker's code."""

    delivery: HistogramDelta  # the command: producer's publish to the worker receiving it
    state: HistogramDelta  # broker confirms of state-stream records (two before the event)
    event: HistogramDelta  # broker confirms of events
    heygen: HistogramDelta  # streaming.task requests

    @classmethod
    def between(cls, before: Samples, after: Samples) -> PathWaits:
        def delta(name: str, **labels: str) -> HistogramDelta:
            return histogram_delta(before, after, f"heygen_worker_{name}", **labels)

        return cls(
            delivery=delta("command_queue_delay_seconds", type="session.speak"),
            state=delta("broker_confirm_seconds", kind="state"),
            event=delta("broker_confirm_seconds", kind="event"),
            heygen=delta("heygen_request_duration_seconds", endpoint="streaming.task"),
        )

    @property
    def broker_ms(self) -> float:
        """Mean broker time before `speech.started` can go out: delivery and two state confirms."""
        return (self.delivery.mean + 2 * self.state.mean) * 1000


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


@dataclass
class SpeakReport:
    params: SpeakParams
    started: str
    revision: str
    machine: Mapping[str, str]
    rabbitmq_version: str
    log_dir: Path
    http_rps: float = math.nan
    relay: Measured | None = None
    peer: Measured | None = None
    skeleton: Measured | None = None
    levels: list[Level] = field(default_factory=list)
    simulator_rtt_s: Sequence[float] = ()
    low_rate_latency_s: Sequence[float] = ()
    create_latency_s: list[float] = field(default_factory=list)
    bulk_creates: list[tuple[int, float, list[float]]] = field(default_factory=list)
    rss_start_kib: int = 0
    keepalive_p99_s: float = math.nan
    keepalives: Mapping[str, float] = field(default_factory=dict)
    waits: PathWaits | None = None  # over the headline level's latency step
    # The first from the relay, peer and skeleton runs and the headline level.
    rounds: list[Round] = field(default_factory=list)
    spread: Measured | None = None
    profile: Profile | None = None
    phase: str = "starting"
    aborted: str = ""  # why the run stopped early (what it measured until then stays)

    # --- derived ---------------------------------------------------------------------------

    def level(self, live: int) -> Level | None:
        return next((lv for lv in self.levels if lv.live == live), None)

    @property
    def headline(self) -> Level | None:
        return self.level(self.params.headline_level)

    @property
    def simulator_ms(self) -> float:
        return quantile(self.simulator_rtt_s, 0.5) * 1000

    def added_ms(self, latencies: Sequence[float], q: float) -> float:
        """Worker-added latency at quantile q: end to end minus the simulator's median time."""
        return quantile(latencies, q) * 1000 - self.simulator_ms

    @property
    def to_relay(self) -> float:
        """Worker / ceiling (a): the median over rounds."""
        return self._median(lambda r: r.to_relay)

    @property
    def to_peer(self) -> float:
        return self._median(lambda r: r.to_peer)

    @property
    def floor_to_relay(self) -> float:
        """Skeleton / ceiling (a): the median over rounds."""
        return self._median(lambda r: r.floor_to_relay)

    @property
    def bare(self) -> list[Measured]:
        """The relay, peer and skeleton, those that ran (their first pass)."""
        return [m for m in (self.relay, self.peer, self.skeleton) if m is not None]

    @property
    def compared(self) -> list[Measured]:
        """The bare targets and the worker at the headline level, side by side."""
        head = self.headline
        return [*self.bare, *([head.throughput] if head else [])]

    def _median(self, of: Callable[[Round], float]) -> float:
        return statistics.median(of(r) for r in self.rounds) if self.rounds else math.nan

    @property
    def floor_added_s(self) -> Sequence[float]:
        """The skeleton's latencies at the latency step's rate: the design's floor."""
        return self.skeleton.paced_latency_s if self.skeleton is not None else ()

    def goals(self) -> list[Goal]:
        head = self.headline
        to_relay, to_peer = self.to_relay, self.to_peer
        p99 = self.added_ms(head.latency_s, 0.99) if head else math.nan
        rates = [lv.throughput.rate for lv in self.levels]
        flat = ratio(rates[-1], max(rates)) if rates else math.nan
        # Beside each, what the skeleton (the same messages, nothing else) reached.
        floor_ratio = f" (skeleton {self.floor_to_relay:.2f} x)"
        floor_p99 = f" (skeleton {self.added_ms(self.floor_added_s, 0.99):.1f} ms)"
        return [
            Goal(
                f"throughput >= {MIN_CEILING_RATIO:g} x ceiling (a)",
                f"{to_relay:.2f} x" + (floor_ratio if self.rounds else ""),
                to_relay >= MIN_CEILING_RATIO,
            ),
            Goal(f"throughput >= {MIN_PEER_RATIO:g} x peer", f"{to_peer:.2f} x", to_peer >= 3),
            Goal(
                f"worker-added latency p99 < {MAX_ADDED_P99_MS:g} ms",
                f"p99 {p99:.1f} ms at {self.params.rate:g}/s"
                + (floor_p99 if self.floor_added_s else ""),
                p99 < MAX_ADDED_P99_MS,
            ),
            Goal(
                f"cost growth flat (>= {MIN_FLAT_RATIO:g} of the best level)",
                f"{self.levels[-1].live:,} live: {flat:.2f} of the best" if rates else "n/a",
                flat >= MIN_FLAT_RATIO,
            ),
        ]

    @property
    def passed(self) -> bool:
        return all(goal.passed for goal in self.goals())

    # --- tables ----------------------------------------------------------------------------

    def rows(self) -> list[tuple[str, str]]:
        p = self.params
        head = self.headline
        rows = [("ceiling (b): HTTP client → simulator", f"{self.http_rps:,.0f} req/s")]
        for measured in self.compared:
            rows.append(
                (
                    f"throughput: {measured.name}",
                    f"{measured.rate:,.0f} speaks/s ({measured.cores:.2f} cores, "
                    f"{measured.errors} errors)",
                )
            )
        if self.rounds:
            rows.append(
                (
                    f"worker / ceiling (a), worker / peer (median of {len(self.rounds)} rounds)",
                    f"{self.to_relay:.2f}, {self.to_peer:.2f}",
                )
            )
            rows.append(
                (
                    "  rounds: relay, peer, skeleton, worker speaks/s (worker / relay, worker / "
                    "peer)",
                    "; ".join(
                        f"{r.relay:,.0f}, {r.peer:,.0f}, {r.skeleton:,.0f}, {r.worker:,.0f} "
                        f"({r.to_relay:.2f}, {r.to_peer:.2f})"
                        for r in self.rounds
                    ),
                )
            )
            peer_to_relay = self._median(lambda r: ratio(r.peer, r.relay))
            rows.append(("peer / ceiling (a) (median)", f"{peer_to_relay:.2f}"))
            rows.append(
                (
                    "design floor: skeleton / ceiling (a), worker / skeleton (medians)",
                    f"{self.floor_to_relay:.2f}, {self._median(lambda r: r.to_floor):.2f}",
                )
            )
        if self.spread is not None:
            relay = self._median(lambda r: r.relay)
            rows.append(
                (
                    f"throughput: {self.spread.name}",
                    f"{self.spread.rate:,.0f} speaks/s ({self.spread.cores:.2f} cores, "
                    f"{self.spread.errors} errors): {ratio(self.spread.rate, relay):.2f} of the "
                    "rounds' median relay",
                )
            )
        rtt = self.simulator_rtt_s
        rows.append(
            (
                "simulator's own time (bare aiohttp, streaming.task)",
                f"p50 {ms(quantile(rtt, 0.5))}, p99 {ms(quantile(rtt, 0.99))}",
            )
        )
        if head:
            lat = head.latency_s
            rows.append(
                (
                    f"latency at {p.rate:g}/s, {head.live:,} live: end to end",
                    f"p50 {ms(quantile(lat, 0.5))}, p99 {ms(quantile(lat, 0.99))}, "
                    f"max {ms(max(lat, default=math.nan))}",
                )
            )
            rows.append(
                (
                    "  worker-added (minus simulator p50)",
                    f"p50 {self.added_ms(lat, 0.5):.1f} ms, p99 {self.added_ms(lat, 0.99):.1f} "
                    f"ms, max {self.added_ms(lat, 1.0):.1f} ms",
                )
            )
        if self.waits is not None:
            rows += self._wait_rows(self.waits)
        for bare in self.bare:
            if bare.paced_latency_s:
                lat = bare.paced_latency_s
                rows.append(
                    (
                        f"  same rate, {bare.name} (publish → answer)",
                        f"p50 {ms(quantile(lat, 0.5))}, p99 {ms(quantile(lat, 0.99))}, "
                        f"max {ms(max(lat, default=math.nan))}",
                    )
                )
        if floor := self.floor_added_s:
            rows.append(
                (
                    "  the design's floor: skeleton minus simulator p50",
                    f"p50 {self.added_ms(floor, 0.5):.1f} ms, p99 {self.added_ms(floor, 0.99):.1f}"
                    f" ms, max {self.added_ms(floor, 1.0):.1f} ms",
                )
            )
        low = self.low_rate_latency_s
        if low:
            rows.append(
                (
                    f"latency at {p.low_rate:g}/s (within reach): end to end",
                    f"p50 {ms(quantile(low, 0.5))}, p99 {ms(quantile(low, 0.99))}, "
                    f"max {ms(max(low, default=math.nan))}; worker-added p50 "
                    f"{self.added_ms(low, 0.5):.1f} ms, p99 {self.added_ms(low, 0.99):.1f} ms",
                )
            )
        c = self.create_latency_s
        rows.append(
            (
                f"create → session.ready, one at a time ({len(c)})",
                f"p50 {ms(quantile(c, 0.5))}, p99 {ms(quantile(c, 0.99))}, "
                f"max {ms(max(c, default=math.nan))}",
            )
        )
        for count, seconds, latencies in self.bulk_creates:
            rows.append(
                (
                    f"creates, {count:,} with 256 in flight",
                    f"{count / seconds:,.0f} sessions/s; p50 {ms(quantile(latencies, 0.5))}, "
                    f"p99 {ms(quantile(latencies, 0.99))}",
                )
            )
        last = self.levels[-1] if self.levels else None
        if last:
            per = (last.rss_kib - self.rss_start_kib) / max(last.live, 1)
            outcomes = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(self.keepalives.items()))
            rows += [
                (
                    f"scale: RSS at {last.live:,} live",
                    f"{mb(last.rss_kib):.1f} MB ({mb(self.rss_start_kib):.1f} MB at start): "
                    f"{per:.1f} KiB a session",
                ),
                (
                    f"scale: CPU at rest, {last.live:,} live",
                    f"{last.rest_cores:.0%} of a core, sending "
                    f"{last.rest_keepalives_per_s:,.0f} keep-alives/s",
                ),
                (
                    "scale: keep-alive lateness p99 (worker histogram)",
                    f"{ms(self.keepalive_p99_s)} (keep-alives: {outcomes or 'none'})",
                ),
            ]
        return rows

    def _wait_rows(self, w: PathWaits) -> list[tuple[str, str]]:
        return [
            (
                "  of which the broker's (worker metrics, means)",
                f"{w.broker_ms:.1f} ms: command delivery {ms(w.delivery.mean)} + two state-stream "
                f"confirms of {ms(w.state.mean)} (checkpoint, then the snapshot holding the event)",
            ),
            (
                "  broker confirm p99 (bucket resolution)",
                f"state {ms(w.state.quantile(0.99))} ({w.state.count:,.0f} records), event "
                f"{ms(w.event.quantile(0.99))} (mean {ms(w.event.mean)}, "
                f"{w.event.count:,.0f} events)",
            ),
            (
                "  HeyGen call (worker metrics, mean)",
                f"{ms(w.heygen.mean)} against the simulator's own p50 {self.simulator_ms:.1f} ms",
            ),
        ]

    def growth_rows(self) -> list[tuple[str, ...]]:
        rows: list[tuple[str, ...]] = []
        for lv in self.levels:
            lat = lv.latency_s
            rows.append(
                (
                    f"{lv.live:,}",
                    f"{lv.throughput.rate:,.0f}",
                    f"{lv.throughput.cores:.2f}",
                    f"{ms(quantile(lat, 0.5))} / {ms(quantile(lat, 0.99))} / "
                    f"{ms(max(lat, default=math.nan))}",
                    f"{lv.rest_cores:.0%} ({lv.rest_keepalives_per_s:,.0f}/s)",
                    f"{mb(lv.rss_kib):.1f}",
                    str(lv.throughput.errors),
                )
            )
        return rows

    GROWTH_HEADER = (
        "live sessions",
        "speaks/s",
        "worker cores",
        "latency p50 / p99 / max (end to end)",
        "CPU at rest (keep-alives/s)",
        "RSS MB",
        "errors",
    )

    def profile_rows(self, n: int = 15) -> list[tuple[str, str, str]]:
        """The functions the worker spent most samples in themselves (own), with inclusive."""
        return profile_rows(self.profile, n) if self.profile is not None else []

    def table(self) -> str:
        lines = [aligned(self.rows() + [(f"GOAL {g.name}", verdict(g)) for g in self.goals()])]
        lines += ["", "cost growth: " + " | ".join(self.GROWTH_HEADER)]
        lines += ["  " + " | ".join(row) for row in self.growth_rows()]
        if self.profile is not None:
            lines += ["", f"worker profile ({self.profile.samples} samples): inclusive / own"]
            lines += [f"  {i:>6} {o:>6}  {name}" for name, i, o in self.profile_rows()]
        lines += ["", f"logs: {self.log_dir}"]
        return "\n".join(lines)

    def markdown(self) -> str:
        p = self.params
        lines = [
            f"## Speak throughput, latency and cost growth, {self.started}"
            + (f" ({p.label})" if p.label else ""),
            "",
            "`python -m bench.speak`: ceilings, peer and worker measured in the same run "
            f"({p.rounds} rounds of relay, peer, skeleton and worker back to back for the "
            "ratios), each "
            f"target in its own process and vhost, {p.partitions} quorum partitions, prefetch "
            f"{p.prefetch} per partition, {p.in_flight} commands in flight (closed loop, "
            f"{p.warmup_s:g} s warm-up, {p.duration_s:g} s measured), speaks spread over "
            f"{p.active} sessions, simulator at 0 ms latency (1 ms speeches). Latency: open "
            f"loop at {p.rate:g} speaks/s for {p.latency_s:g} s.",
            "",
            "Machine: "
            + "; ".join(f"{k} {v}" for k, v in self.machine.items())
            + f"; RabbitMQ {self.rabbitmq_version}.",
            "",
            f"Worker and simulator code: {self.revision}.",
            "",
            *(
                [f"**Cut short**: {self.aborted}; the figures below are what it measured.", ""]
                if self.aborted
                else []
            ),
            "| figure | value |",
            "|---|---|",
        ]
        lines += [f"| {name} | {value} |" for name, value in self.rows()]
        lines += ["", "Cost growth (same worker process, sessions added between rows):", ""]
        lines += [_md_row(self.GROWTH_HEADER), _md_row(("---",) * len(self.GROWTH_HEADER))]
        lines += [_md_row(row) for row in self.growth_rows()]
        lines += ["", "| goal | measured | result |", "|---|---|---|"]
        lines += [
            f"| {g.name} | {g.measured} | {'PASS' if g.passed else 'FAIL'} |" for g in self.goals()
        ]
        if self.profile is not None:
            lines += [
                "",
                f"Worker profile under the same closed-loop load (py-spy, {self.profile.samples} "
                "samples, a separate run from the figures above):",
                "",
                "| function (most own samples first) | inclusive | own |",
                "|---|---|---|",
            ]
            lines += [f"| `{n}` | {i} | {o} |" for n, i, o in self.profile_rows()]
        lines += [
            "",
            "![throughput over time](plots/speak-throughput.png)",
            "![latency distribution](plots/speak-latency.png)",
        ]
        return "\n".join(lines)

    def plot(self, directory: Path) -> None:
        plots.throughput(
            {m.name: m.timeline for m in self.compared},
            self.params.bin_s,
            directory / "speak-throughput.png",
        )
        plots.latency(
            {f"worker, {lv.live:,} live": [s * 1000 for s in lv.latency_s] for lv in self.levels}
            | {
                f"worker, {self.params.headline_level:,} live, {self.params.low_rate:g}/s": [
                    s * 1000 for s in self.low_rate_latency_s
                ],
                "simulator alone": [s * 1000 for s in self.simulator_rtt_s],
            },
            directory / "speak-latency.png",
        )


def profile_rows(profile: Profile, n: int = 15) -> list[tuple[str, str, str]]:
    """(function, inclusive share, own share) of the `n` functions with the most own samples."""
    inclusive = dict(profile.top(profile.inclusive, len(profile.inclusive)))
    return [
        (name, f"{inclusive.get(name, 0.0):.1%}", f"{share:.1%}")
        for name, share in profile.top(profile.own, n)
    ]


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
