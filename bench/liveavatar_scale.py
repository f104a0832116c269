"""One worker process holding many LiveAvatar sessions: creates per second, keep-alive lateness.

`python -m bench.liveavatar_scale [--sessions 1000] [--interval 10] [--intervals 3]` runs
RabbitMQ (own vhost), the simulator (LiveAvatar's REST API and room stand-in) and the worker as
separate processes on loopback. Each session is token + start over REST and a joined room (a
WebSocket to the stand-in), then kept alive over REST; the simulator closes a session not kept
alive after three intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench import stats
from bench.keepalive_report import REPO, Params
from bench.keepalive_rig import API_KEY, create_all, running_rig
from bench.results import machine, now_utc, record_section, revision
from contracts.commands import SessionCreate
from contracts.common import Provider
from simulator.liveavatar import LiveAvatarAdmin

AVATAR = "2f5b3c6e-9a41-4f4f-8a55-6f2d1c0b7e11"
LATENESS = "heygen_worker_keepalive_lateness_seconds"


def liveavatar_create(session_id: str) -> SessionCreate:
    return SessionCreate(session_id=session_id, avatar_id=AVATAR, provider=Provider.LIVEAVATAR)


@dataclass
class Result:
    params: Params
    revision: str
    started: str
    machine: dict[str, str]
    ready: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    creation_s: float = math.nan
    create_latency_s: list[float] = field(default_factory=list)
    lateness_p50_s: float = math.nan
    lateness_p99_s: float = math.nan
    lateness_mean_s: float = math.nan
    keepalives: dict[str, float] = field(default_factory=dict)
    keepalives_per_session: list[int] = field(default_factory=list)
    live_at_end: int = 0
    ended_by_reason: Counter[str] = field(default_factory=Counter)
    worker_events: Counter[str] = field(default_factory=Counter)

    @property
    def creates_per_s(self) -> float:
        return self.ready / self.creation_s if self.creation_s > 0 else math.nan

    def rows(self) -> list[tuple[str, str]]:
        latency = self.create_latency_s
        return [
            ("sessions ready / asked", f"{self.ready:,} / {self.params.sessions:,}"),
            ("create failures", str(dict(Counter(self.failures.values())) or 0)),
            ("creates per second", f"{self.creates_per_s:.1f} (over {self.creation_s:.1f} s)"),
            (
                "create latency p50 / p99",
                f"{stats.quantile(latency, 0.5):.3f} s / {stats.quantile(latency, 0.99):.3f} s",
            ),
            (
                "keep-alive lateness p50 / p99 / mean",
                f"{self.lateness_p50_s:.3f} s / {self.lateness_p99_s:.3f} s / "
                f"{self.lateness_mean_s:.4f} s",
            ),
            ("keep-alives by outcome", str(self.keepalives)),
            (
                "keep-alives per session (min / max)",
                f"{min(self.keepalives_per_session, default=0)} / "
                f"{max(self.keepalives_per_session, default=0)}",
            ),
            ("live at the end (simulator)", f"{self.live_at_end:,}"),
            ("ended by LiveAvatar", str(dict(self.ended_by_reason)) or "none"),
            ("worker events", str(dict(self.worker_events))),
        ]

    def table(self) -> str:
        width = max(len(name) for name, _ in self.rows())
        return "\n".join(f"{name:<{width}}  {value}" for name, value in self.rows())

    def markdown(self) -> str:
        p = self.params
        lines = [
            f"## liveavatar_scale at {self.revision} ({self.started})",
            "",
            f"{p.sessions:,} LiveAvatar FULL sessions in one worker process, keep-alive "
            f"interval {p.interval_s:g} s held {p.hold_s:g} s, {p.create_concurrency} creates "
            f"in flight; machine: {self.machine}.",
            "",
            "| figure | value |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in self.rows()),
        ]
        return "\n".join(lines)


async def run(params: Params) -> Result:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-liveavatar-"))
    result = Result(params, revision(params.source), now_utc(), machine())
    async with asyncio.timeout(params.deadline_s), running_rig(params, log_dir) as rig:
        fleet = rig.fleet
        rig.enter(f"creating {params.sessions} LiveAvatar sessions")
        began = time.monotonic()
        await create_all(rig, make=liveavatar_create)
        ready = fleet.ready
        result.ready, result.failures = len(ready), dict(fleet.failures)
        result.creation_s = max(ready.values(), default=began) - min(fleet.published.values())
        result.create_latency_s = [ready[s] - fleet.published[s] for s in ready]
        rig.enter(f"{len(ready):,} ready; holding for {params.hold_s:g} s")
        await rig.wait(params.hold_s)
        rig.enter("collecting results")
        async with httpx.AsyncClient(timeout=60) as http:
            exposition = (await http.get(f"{rig.metrics_url}/metrics")).text
        samples = stats.scrape(exposition)
        buckets = stats.histogram_buckets(samples, LATENESS)
        result.lateness_p50_s = stats.histogram_quantile(buckets, 0.5)
        result.lateness_p99_s = stats.histogram_quantile(buckets, 0.99)
        count = sum(v for _, v in samples.get(f"{LATENESS}_count", []))
        total = sum(v for _, v in samples.get(f"{LATENESS}_sum", []))
        result.lateness_mean_s = total / count if count else math.nan
        result.keepalives = {
            labels["outcome"]: value
            for labels, value in samples.get("heygen_worker_keepalives_total", [])
            if labels.get("provider") == "liveavatar" and value
        }
        async with LiveAvatarAdmin(rig.simulator_url, timeout=120) as admin:
            sim = await admin.liveavatar_stats()
        rows = sim.sessions.values()
        result.keepalives_per_session = [r.keep_alives for r in rows if r.status == "active"]
        result.live_at_end = sum(1 for r in rows if r.status == "active")
        result.ended_by_reason = Counter(r.end_reason for r in rows if r.end_reason)
        result.worker_events = fleet.events
        (log_dir / "worker-metrics.txt").write_text(exposition)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.liveavatar_scale", description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=10.0, help="keep-alive interval, s")
    parser.add_argument("--intervals", type=int, default=3, help="intervals held after creating")
    parser.add_argument("--create-concurrency", type=int, default=128)
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    interval = args.interval
    params = Params(
        sessions=args.sessions,
        interval_s=interval,
        intervals=args.intervals,
        create_concurrency=args.create_concurrency,
        deadline_s=args.deadline,
        source=REPO,
        simulator_env={
            "SIMULATOR_LIVEAVATAR_API_KEYS": API_KEY,
            "SIMULATOR_LIVEAVATAR_CONCURRENCY_LIMIT": str(args.sessions + 100),
            "SIMULATOR_LIVEAVATAR_CREDITS": "1000000000",
            "SIMULATOR_LIVEAVATAR_IDLE_TIMEOUT_S": f"{3 * interval:g}",
        },
        # A third of LiveAvatar's idle close would be 100 s: the interval asked for decides.
        worker_env={"WORKER_DEFAULT_PROVIDER": "liveavatar"},
    )
    print(f"liveavatar scale: {params.sessions:,} sessions ...", flush=True)
    result = asyncio.run(run(params))
    print(result.table())
    if not args.no_record:
        record_section("liveavatar_scale", result.markdown())
        print("recorded in bench/RESULTS.md")
    lost = result.ready - result.live_at_end
    return 0 if result.ready == params.sessions and lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
