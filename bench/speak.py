"""Speak commands end to end beside their ceilings, and cost growth with live sessions.

`python -m bench.speak [--smoke] [--no-record]`, in one run and on the same machine:
ceiling (b), HTTP requests/s of the worker's client to the simulator; ceiling (a), a bare
aio-pika relay over the worker's quorum queues; the FastStream peer; the skeleton (the worker's
message pattern with nothing else: the design's floor); then one worker process with 10, 100,
1,000 and 10,000 live sessions: speak throughput (closed loop), latency at a steady rate,
creates, RSS and CPU at rest. Every process runs on loopback, in vhosts of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import aio_pika
import aiohttp
import httpx

from bench import harness, load, plots, profile, simulator_rps, stats
from bench.harness import Child
from bench.keepalive_report import Params
from bench.keepalive_rig import (
    API_KEY,
    Rig,
    create_all,
    environment,
    running_rig,
    session_ids,
    start_simulator,
)
from bench.results import machine, now_utc, record_section, revision
from bench.speak_report import (
    SMOKE,
    Level,
    Measured,
    PathWaits,
    Round,
    SpeakParams,
    SpeakReport,
)
from worker.bus.topology import TopologySpec, declare_topology

# Durations of 1 ms (the simulator's floor): each speak's estimated speech.finished is
# published during the run, so the worker's steady cost per speak is what is measured.
SIMULATOR_SPEECH = {"SIMULATOR_WORDS_PER_MINUTE": "1000000000"}
KEEPALIVE_INTERVAL_S = 30.0  # the worker's default


async def http_ceiling(params: SpeakParams) -> float:
    """Ceiling (b): keep-alives/s the worker's HeyGen client (its transport stack) gets."""
    args = argparse.Namespace(
        duration=params.duration_s, warmup=1.0, concurrency=64, client="worker"
    )
    result = await simulator_rps._bench(args)
    return result.requests / result.seconds


async def _consumers_ready(url: str, partitions: int) -> bool:
    vhost = url.rsplit("/", 1)[1]
    auth = (harness.RABBIT_USER, harness.RABBIT_PASSWORD)
    async with httpx.AsyncClient(base_url=harness.RABBIT_MGMT, auth=auth, timeout=10) as mgmt:
        queues = (await mgmt.get(f"/api/queues/{vhost}")).json()
    ready = [q for q in queues if q["name"].startswith("avatar.commands.p") and q.get("consumers")]
    return len(ready) == partitions


async def open_simulator_sessions(url: str, count: int) -> list[str]:
    """HeyGen sessions opened directly (v2 new + start), for the peer, which creates none."""
    ids: list[str] = []
    async with aiohttp.ClientSession(url, headers={"X-Api-Key": API_KEY}) as http:
        for _ in range(count):
            async with http.post(
                "/v1/streaming.new", json={"avatar_id": "bench", "version": "v2"}
            ) as response:
                session_id = (await response.json())["data"]["session_id"]
            async with http.post("/v1/streaming.start", json={"session_id": session_id}) as r:
                r.raise_for_status()
            ids.append(session_id)
    return ids


async def bare_target(
    kind: str, params: SpeakParams, log_dir: Path, *, tag: str = "", paced: bool = True
) -> Measured:
    """The relay (ceiling a), the peer or the skeleton, in a child process, under the worker's
    load; `paced` adds the latency step's open loop; `tag` tells one round's logs apart."""
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(harness.rabbit_vhost(f"bench-{kind}"))
        connection = await aio_pika.connect(url)
        stack.push_async_callback(connection.close)
        await declare_topology(connection, TopologySpec(params.partitions, delivery_limit=20))
        env = {
            "BENCH_AMQP_URL": url,
            "BENCH_PARTITIONS": str(params.partitions),
            "BENCH_PREFETCH": str(params.prefetch),
        }
        ids = session_ids(0, params.active)
        if kind in ("peer", "skeleton"):
            _, sim_url = await start_simulator(
                stack,
                params.source,
                log_dir,
                SIMULATOR_CONCURRENCY_LIMIT=str(params.active + 10),
                **SIMULATOR_SPEECH,
            )
            ids = await open_simulator_sessions(sim_url, params.active)
            env |= {"BENCH_HEYGEN_URL": sim_url, "BENCH_HEYGEN_KEY": API_KEY}
        child = await stack.enter_async_context(
            harness.child_process(
                kind,
                [sys.executable, "-m", f"bench.{kind}"],
                environment(params.source, **env),
                log_dir / f"{kind}{tag}.log",
                params.source,
            )
        )
        await harness.wait_until(
            f"{kind} consumers", lambda: _consumers_ready(url, params.partitions), child, 30
        )
        channel = await connection.channel(publisher_confirms=True)
        measured = await saturate(kind, channel, child, ids, params)
        if not paced:
            return measured
        # The same open-loop rate as the worker's latency step: what the broker (and, for the
        # peer and the skeleton, one HTTP call) costs a command at that rate, with nothing else
        # in the way.
        latency = await paced_latency(channel, ids, params.rate, params.latency_s)
        return replace(measured, paced_latency_s=latency)


async def saturate(
    name: str, channel: aio_pika.abc.AbstractChannel, target: Child, ids: list[str], p: SpeakParams
) -> Measured:
    """Closed-loop speak throughput of `target`, with its CPU share during the measured part."""
    commands = list(load.speaks(ids, p.load_size))
    async with load.answers(channel) as collected:
        cpu = _CpuWindow(target.pid)
        window = await load.saturate(
            channel,
            collected,
            commands,
            in_flight=p.in_flight,
            warmup_s=p.warmup_s,
            duration_s=p.duration_s,
            on_measuring=cpu.start,
            on_measured=cpu.stop,
        )
    first = min(collected.sent.values())
    return Measured(
        name=name,
        rate=window.rate,
        answered=window.answered,
        errors=window.errors,
        cores=cpu.cores,
        timeline=load.timeline(collected.arrivals, first, p.bin_s),
        latency_s=collected.latencies_s(),
    )


class _CpuWindow:
    """CPU time of one process between two moments, as cores used."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start = (0.0, 0.0)
        self.cores = float("nan")

    def start(self) -> None:
        self._start = (time.monotonic(), harness.cpu_seconds(self._pid))

    def stop(self) -> None:
        at, cpu = self._start
        self.cores = (harness.cpu_seconds(self._pid) - cpu) / max(time.monotonic() - at, 1e-9)


async def simulator_round_trip(rig: Rig, p: SpeakParams) -> list[float]:
    """The simulator's own time: streaming.task from a bare aiohttp client at the same rate."""
    async with httpx.AsyncClient(base_url=rig.simulator_url, timeout=30) as admin:
        sessions = (await admin.get("/_admin/stats", params={"requests": "0"})).json()["sessions"]
    live = [sid for sid, s in sessions.items() if s["closed_at"] is None][: p.active]
    times: list[float] = []
    async with aiohttp.ClientSession(rig.simulator_url, headers={"X-Api-Key": API_KEY}) as http:

        async def one(session_id: str) -> None:
            started = time.monotonic()
            body = {"session_id": session_id, "text": load.TEXT, "task_mode": "async"}
            async with http.post("/v1/streaming.task", json=body) as response:
                await response.read()
            times.append(time.monotonic() - started)

        tasks = []
        began = time.monotonic()
        for index in range(int(p.rate * p.latency_s)):
            await asyncio.sleep(max(0.0, began + index / p.rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(live[index % len(live)])))
        await asyncio.gather(*tasks)
    return times


async def _create_level(rig: Rig, have: int, level: int, p: SpeakParams) -> list[float]:
    """Create sessions up to `level`: the first `sequential_creates` one at a time (their
    latencies are returned), the rest with `create_concurrency` in flight."""
    fleet = rig.fleet
    latencies: list[float] = []
    one_by_one = max(0, min(level, p.sequential_creates) - have)
    if one_by_one:
        fleet.slots = asyncio.Semaphore(1)
        await create_all(rig, have, one_by_one)
        latencies = [
            fleet.ready[s] - fleet.published[s] for s in session_ids(have, have + one_by_one)
        ]
        have += one_by_one
    if level > have:
        fleet.slots = asyncio.Semaphore(rig.params.create_concurrency)
        await create_all(rig, have, level - have)
    if fleet.failures:
        raise RuntimeError(
            f"{len(fleet.failures)} creates failed, e.g. {next(iter(fleet.failures.values()))}"
        )
    return latencies


async def paced_latency(
    channel: aio_pika.abc.AbstractChannel, ids: list[str], rate: float, seconds: float
) -> list[float]:
    """Publish → answer (speech.started) of speaks sent at a steady `rate` (open loop)."""
    async with load.answers(channel) as collected:
        await load.paced(channel, collected, load.speaks(ids, int(rate * seconds)), rate)
    if collected.failed:
        raise RuntimeError(f"{len(collected.failed)} speaks failed at {rate:g}/s")
    return collected.latencies_s()


async def _latency(rig: Rig, ids: list[str], rate: float, seconds: float) -> list[float]:
    return await paced_latency(rig.channel, ids, rate, seconds)


async def _rest(rig: Rig, seconds: float) -> tuple[float, float, int]:
    """CPU share of the worker while nothing but keep-alives happens, the keep-alives/s it sent
    meanwhile (sessions created in a burst fall due together), and its RSS after."""
    before = await _scrape(rig)
    cpu = _CpuWindow(rig.worker.pid)
    cpu.start()
    await rig.wait(seconds)
    cpu.stop()
    after = await _scrape(rig)
    name = "heygen_worker_keepalives_total"
    sent = sum(stats.by_label(after, name, "outcome").values()) - sum(
        stats.by_label(before, name, "outcome").values()
    )
    return cpu.cores, sent / seconds, harness.memory_kib(rig.worker.pid).get("VmRSS", 0)


async def worker_levels(p: SpeakParams, log_dir: Path, report: SpeakReport) -> None:
    params = Params(
        sessions=max(p.levels),
        interval_s=KEEPALIVE_INTERVAL_S,
        intervals=1,
        create_concurrency=256,
        deadline_s=p.deadline_s,
        simulator_env=SIMULATOR_SPEECH,
        source=p.source,
    )
    async with running_rig(params, log_dir) as rig:
        report.rss_start_kib = harness.memory_kib(rig.worker.pid).get("VmRSS", 0)
        have = 0
        for level in p.levels:
            _enter(rig, report, f"creating sessions up to {level:,}")
            created_at = time.monotonic()
            report.create_latency_s += await _create_level(rig, have, level, p)
            if level - have > p.sequential_creates:
                bulk = [
                    rig.fleet.ready[s] - rig.fleet.published[s] for s in session_ids(have, level)
                ]
                report.bulk_creates.append((level - have, time.monotonic() - created_at, bulk))
            have = level
            ids = session_ids(0, min(level, p.active))
            _enter(rig, report, f"{level:,} live: throughput over {len(ids)} sessions")
            measured = await saturate(f"worker, {level:,} live", rig.channel, rig.worker, ids, p)
            if level >= p.spread and report.spread is None:
                _enter(rig, report, f"{level:,} live: throughput over {p.spread:,} sessions")
                name = f"worker, {level:,} live, speaks over {p.spread:,}"
                report.spread = await saturate(
                    name, rig.channel, rig.worker, session_ids(0, p.spread), p
                )
            _enter(rig, report, f"{level:,} live: latency at {p.rate:g}/s")
            before = await _scrape(rig)
            latency = await _latency(rig, ids, p.rate, p.latency_s)
            if level == p.headline_level:
                report.waits = PathWaits.between(before, await _scrape(rig))
            _enter(rig, report, f"{level:,} live: at rest")
            rest_cores, rest_keepalives, rss = await _rest(rig, p.rest_s)
            report.levels.append(Level(level, measured, latency, rest_cores, rest_keepalives, rss))
            if level == p.headline_level:
                if report.relay and report.peer and report.skeleton:
                    bare = (report.relay.rate, report.peer.rate, report.skeleton.rate)
                    report.rounds.append(Round(*bare, measured.rate))
                    for index in range(2, p.rounds + 1):
                        _enter(rig, report, f"round {index} of relay, peer, skeleton and worker")
                        report.rounds.append(await _round(rig, ids, p, log_dir, index))
                _enter(rig, report, f"{level:,} live: latency at {p.low_rate:g}/s")
                report.low_rate_latency_s = await _latency(rig, ids, p.low_rate, p.latency_s)
                _enter(rig, report, "simulator round trip")
                report.simulator_rtt_s = await simulator_round_trip(rig, p)
                if p.profile:
                    _enter(rig, report, "profiling the worker under the same load (py-spy)")
                    report.profile = await _profiled(rig, ids, p, log_dir)
        samples = await _scrape(rig)
        buckets = stats.histogram_buckets(samples, "heygen_worker_keepalive_lateness_seconds")
        report.keepalive_p99_s = stats.histogram_quantile(buckets, 0.99)
        report.keepalives = stats.by_label(samples, "heygen_worker_keepalives_total", "outcome")


async def _round(rig: Rig, ids: list[str], p: SpeakParams, log_dir: Path, index: int) -> Round:
    """The four targets' throughput once more, back to back (the worker's rig idles meanwhile:
    keep-alives only)."""
    relay, peer, skeleton = [
        (await bare_target(kind, p, log_dir, tag=f"-{index}", paced=False)).rate
        for kind in ("relay", "peer", "skeleton")
    ]
    worker = await saturate(f"worker, round {index}", rig.channel, rig.worker, ids, p)
    return Round(relay, peer, skeleton, worker.rate)


async def _scrape(rig: Rig) -> stats.Samples:
    async with httpx.AsyncClient(timeout=30) as http:
        return stats.scrape((await http.get(f"{rig.metrics_url}/metrics")).text)


async def _profiled(rig: Rig, ids: list[str], p: SpeakParams, log_dir: Path) -> profile.Profile:
    """An extra closed-loop run with py-spy sampling the worker: not part of the figures."""
    spy = asyncio.create_task(
        profile.record(rig.worker.pid, p.warmup_s + p.duration_s, log_dir / "worker-profile.txt")
    )
    await saturate("worker (profiled)", rig.channel, rig.worker, ids, p)
    return await spy


async def run(p: SpeakParams, log_dir: Path | None = None) -> SpeakReport:
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-speak-"))
    report = SpeakReport(
        params=p,
        started=now_utc(),
        revision=revision(p.source),
        machine=machine(),
        rabbitmq_version=await harness.rabbitmq_version(),
        log_dir=log_dir,
    )
    bound = asyncio.timeout(p.deadline_s)
    try:
        async with bound:
            if not p.worker_only:
                report.phase = "ceiling (b): HTTP client to the simulator"
                _progress(report.phase)
                report.http_rps = await http_ceiling(p)
                report.phase = "ceiling (a): bare aio-pika relay"
                _progress(report.phase)
                report.relay = await bare_target("relay", p, log_dir)
                report.phase = "peer: FastStream + httpx"
                _progress(report.phase)
                report.peer = await bare_target("peer", p, log_dir)
                report.phase = "the design's floor: skeleton"
                _progress(report.phase)
                report.skeleton = await bare_target("skeleton", p, log_dir)
            await worker_levels(p, log_dir, report)
    except TimeoutError:
        if not bound.expired():
            raise
        # What was measured so far is still worth printing, marked as cut short.
        report.aborted = f"still {report.phase} after the {p.deadline_s:g} s bound"
    except (harness.ChildExited, RuntimeError) as exc:
        report.aborted = f"{report.phase}: {exc}"
    return report


def _enter(rig: Rig, report: SpeakReport, phase: str) -> None:
    report.phase = phase
    rig.enter(phase)


def _progress(what: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def _sigterm_cancels() -> AsyncIterator[None]:
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the child processes are stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    yield


async def _main(p: SpeakParams) -> SpeakReport:
    async with _sigterm_cancels():
        return await run(p)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speak", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds; no record")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument(
        "--worker-only",
        action="store_true",
        help="skip the ceilings and the peer (to compare two trees' workers; no ratios)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    parser.add_argument("--label", default="", help="a note for this run's RESULTS.md title")
    parser.add_argument(
        "--deadline",
        type=float,
        default=SpeakParams.deadline_s,
        help="stop (keeping what was measured) after this many seconds (%(default)s)",
    )
    parser.add_argument("--source", type=Path, default=SpeakParams.source, help="tree to run")
    parser.add_argument(
        "--levels",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=SpeakParams.levels,
        help="live sessions of the cost-growth steps (%(default)s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=SpeakParams.rounds,
        help="rounds of relay, peer and worker for the ratios' medians (%(default)s)",
    )
    args = parser.parse_args(argv)
    p = SMOKE if args.smoke else SpeakParams()
    p = replace(
        p,
        source=args.source.resolve(),
        label=args.label,
        worker_only=args.worker_only,
        profile=p.profile and not args.no_profile and profile.py_spy() is not None,
    )
    if not args.smoke:
        p = replace(p, levels=args.levels, deadline_s=args.deadline, rounds=args.rounds)
    try:
        report = asyncio.run(_main(p))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("speak: interrupted (every process it started is stopped)", file=sys.stderr)
        return 130
    print(report.table())
    if report.aborted:
        print(f"speak: aborted: {report.aborted} (logs in {report.log_dir})", file=sys.stderr)
    if not args.smoke and not args.no_record and report.levels:
        report.plot(plots.PLOTS)
        record_section("speak", report.markdown())
        print("recorded in bench/RESULTS.md")
    if report.aborted:
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
