"""One worker process holding many simulated HeyGen sessions: RSS, CPU and keep-alive lateness.

`python -m bench.keepalive_scale [--sessions 10000] [--interval 10] [--intervals 3] [--smoke]`
runs RabbitMQ (own vhost), the simulator and the worker as separate processes on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench import harness, stats
from bench.keepalive_report import REPO, SMOKE, Params, Report
from bench.keepalive_rig import BenchmarkAborted, Rig, create_all, running_rig
from bench.results import machine, now_utc, record_section, revision
from bench.sampler import Phase, Sampler
from simulator.admin import SimulatorAdmin


@dataclass(frozen=True)
class Provenance:
    """Taken before anything starts: the code may change while a long run goes on."""

    started: str
    revision: str
    machine: dict[str, str]
    log_dir: Path


async def _measure(setup: Rig, provenance: Provenance) -> Report:
    params, fleet, sampler = setup.params, setup.fleet, setup.sampler
    start = sampler.mark()
    rss_start = start.rss_kib
    setup.enter(f"creating {params.sessions} sessions")
    await create_all(setup)
    created = sampler.mark()
    setup.enter(f"{len(fleet.ready):,} sessions ready, {len(fleet.failures):,} failed")
    creation_s = max(fleet.ready.values(), default=created.at) - min(fleet.published.values())
    setup.enter(f"holding for {params.hold_s:g} s")
    await setup.wait(params.hold_s)
    held = sampler.mark()
    setup.enter("collecting results")
    async with SimulatorAdmin(setup.simulator_url, timeout=120) as admin:
        sim = await admin.stats()
    async with httpx.AsyncClient(timeout=30) as http:
        exposition = (await http.get(f"{setup.metrics_url}/metrics")).text
    samples = stats.scrape(exposition)
    buckets = stats.histogram_buckets(samples, "heygen_worker_keepalive_lateness_seconds")
    gaps = stats.activity_gaps(sim.requests)
    _dump(provenance.log_dir, sim.model_dump_json(), exposition, sampler)
    ready = fleet.ready
    return Report(
        params=params,
        machine=provenance.machine,
        rabbitmq_version=await harness.rabbitmq_version(),
        revision=provenance.revision,
        started=provenance.started,
        ready=len(ready),
        create_failures=dict(fleet.failures),
        creation_s=creation_s,
        create_latency_s=[ready[s] - fleet.published[s] for s in ready if s in fleet.published],
        rss_kib={
            "start": rss_start,
            "after create": created.rss_kib,
            "end": held.rss_kib,
            "peak": sampler.peak_kib(),
        },
        create_phase=Phase.between(start, created),
        hold_phase=Phase.between(created, held),
        responsiveness={
            phase: {name: setup.prober.between(name, a, b) for name in setup.prober.timings}
            for phase, a, b in (("creating", start, created), ("holding", created, held))
        },
        keepalives_by_outcome=stats.by_label(samples, "heygen_worker_keepalives_total", "outcome"),
        simulator_keepalives=sim.calls.get("streaming.keep_alive", 0),
        keepalives_per_session=[s.keep_alives for s in sim.sessions.values()],
        histogram_p50_s=stats.histogram_quantile(buckets, 0.5),
        histogram_p99_s=stats.histogram_quantile(buckets, 0.99),
        histogram_count=max((count for _, count in buckets), default=0.0),
        lateness_all_s=stats.lateness(gaps, params.interval_s),
        lateness_held_s=stats.lateness(gaps, params.interval_s, created.wall + params.interval_s),
        longest_gap_s=max((g.seconds for g in gaps), default=float("nan")),
        log_kept=len(sim.requests),
        log_total=sim.requests_total,
        live_at_end=sim.live_sessions,
        closed_by_reason=Counter(
            s.closed_reason for s in sim.sessions.values() if s.closed_reason is not None
        ),
        worker_events=fleet.events,
        log_dir=str(provenance.log_dir),
    )


def _dump(log_dir: Path, simulator_stats: str, exposition: str, sampler: Sampler) -> None:
    """Raw material next to the process logs, for a closer look after the run."""
    (log_dir / "simulator-stats.json").write_text(simulator_stats)
    (log_dir / "worker-metrics.txt").write_text(exposition)
    names = sorted(sampler.readings[0].cpu_s) if sampler.readings else []
    rows = ["wall,rss_kib,machine_busy_s," + ",".join(f"cpu_{n}" for n in names)]
    rows += [
        f"{r.wall:.3f},{r.rss_kib},{r.machine_busy_s:.2f},"
        + ",".join(f"{r.cpu_s[n]:.2f}" for n in names)
        for r in sampler.readings
    ]
    (log_dir / "readings.csv").write_text("\n".join(rows) + "\n")


async def run(params: Params, log_dir: Path | None = None) -> Report:
    """The whole benchmark, bounded by `params.deadline_s`; every process is gone on return."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-keepalive-"))
    provenance = Provenance(now_utc(), revision(params.source), machine(), log_dir)
    setup: Rig | None = None
    bound = asyncio.timeout(params.deadline_s)
    try:
        async with bound, running_rig(params, log_dir) as setup:
            return await _measure(setup, provenance)
    except TimeoutError as exc:
        if not bound.expired():
            raise
        phase = setup.phase if setup is not None else "starting"
        raise BenchmarkAborted(
            f"aborted: still {phase} after the {params.deadline_s:g} s bound "
            f"(process logs in {log_dir})"
        ) from exc


def _parse(argv: list[str] | None) -> tuple[Params, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.keepalive_scale",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "--sessions", type=int, default=Params.sessions, help="sessions to hold (%(default)s)"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=Params.interval_s,
        help="WORKER_KEEPALIVE_INTERVAL_S, seconds (%(default)s)",
    )
    parser.add_argument(
        "--intervals",
        type=int,
        default=Params.intervals,
        help="intervals measured after one to settle (%(default)s)",
    )
    parser.add_argument(
        "--create-concurrency",
        type=int,
        default=Params.create_concurrency,
        help="creates published and not yet answered (%(default)s)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=Params.deadline_s,
        help="abort after this many seconds (%(default)s)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="200 sessions, 2 s interval, 2 intervals; no record"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra worker setting, e.g. WORKER_KEEPALIVE_CONCURRENCY=64 (repeatable)",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=REPO,
        help="run the worker and simulator of this tree (e.g. an exported commit or a patch)",
    )
    parser.add_argument("--label", default="", help="a note for this run's RESULTS.md title")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    if args.smoke:
        return replace(SMOKE, worker_env=worker_env, source=args.source.resolve()), False
    params = Params(
        sessions=args.sessions,
        interval_s=args.interval,
        intervals=args.intervals,
        create_concurrency=args.create_concurrency,
        deadline_s=args.deadline,
        worker_env=worker_env,
        source=args.source.resolve(),
        label=args.label,
    )
    return params, not args.no_record


async def _main(params: Params) -> Report:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the child processes are stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(params)


def main(argv: list[str] | None = None) -> int:
    params, record = _parse(argv)
    print(
        f"keep-alive scale: {params.sessions:,} sessions, interval {params.interval_s:g} s, "
        f"holding {params.hold_s:g} s ...",
        flush=True,
    )
    try:
        report = asyncio.run(_main(params))
    except (BenchmarkAborted, harness.ChildExited) as exc:
        print(f"keep-alive scale: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print(
            "keep-alive scale: interrupted (every process it started is stopped)", file=sys.stderr
        )
        return 130
    print(report.table())
    if record:
        record_section("keepalive_scale", report.markdown())
        print("recorded in bench/RESULTS.md")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
