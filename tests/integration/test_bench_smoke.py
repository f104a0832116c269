"""The benchmarks end to end, small: RabbitMQ, simulator, worker, relay, peer and skeleton
processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench import broker_floor, lite_latency, speak
from bench.keepalive_report import SMOKE
from bench.keepalive_scale import run
from bench.speak_report import SMOKE as SPEAK_SMOKE


async def test_keepalive_benchmark_holds_every_session(tmp_path: Path) -> None:
    started = time.monotonic()
    report = await run(SMOKE, log_dir=tmp_path)

    assert time.monotonic() - started < 40
    assert report.ready == SMOKE.sessions
    assert not report.create_failures
    # The simulator closes a session after 3 intervals without activity: none was lost.
    assert report.lost_idle == 0
    assert report.live_at_end == SMOKE.sessions
    # Kept alive, not merely young: a keep-alive per interval held, for every session.
    assert min(report.keepalives_per_session) >= SMOKE.intervals
    assert report.keepalives_by_outcome.get("ok", 0) >= SMOKE.sessions * SMOKE.intervals
    assert report.passed, report.table()


# Four targets start one after another, twice (the rounds): past the suite's 120 s default.
@pytest.mark.timeout(SPEAK_SMOKE.deadline_s + 30)
async def test_speak_benchmark_measures_every_target(tmp_path: Path) -> None:
    started = time.monotonic()
    report = await speak.run(SPEAK_SMOKE, log_dir=tmp_path)

    assert not report.aborted, report.table()
    assert time.monotonic() - started < SPEAK_SMOKE.deadline_s
    # Ceilings, peer, skeleton and worker each answered every command they were sent, none
    # failed.
    assert report.http_rps > 0
    bare = (report.relay, report.peer, report.skeleton)
    for measured in (*bare, *(lv.throughput for lv in report.levels)):
        assert measured is not None
        assert measured.rate > 0, measured.name
        assert measured.errors == 0, measured.name
        assert len(measured.latency_s) == measured.answered
    assert [lv.live for lv in report.levels] == list(SPEAK_SMOKE.levels)
    for level in report.levels:
        assert len(level.latency_s) == int(SPEAK_SMOKE.rate * SPEAK_SMOKE.latency_s)
        assert level.rss_kib > 0
        assert level.rest_keepalives_per_s >= 0
    assert len(report.create_latency_s) == SPEAK_SMOKE.sequential_creates
    assert report.simulator_rtt_s
    assert len(report.low_rate_latency_s) == int(SPEAK_SMOKE.low_rate * SPEAK_SMOKE.latency_s)
    assert len(report.goals()) == 4
    assert report.spread is not None
    assert report.spread.rate > 0
    assert report.spread.errors == 0
    # The ratios are medians over rounds of the four targets back to back.
    assert len(report.rounds) == SPEAK_SMOKE.rounds
    assert all(min(r.relay, r.peer, r.skeleton, r.worker) > 0 for r in report.rounds)
    # The bare targets' open-loop step at the latency rate, answered in full.
    for measured in bare:
        assert measured is not None
        assert len(measured.paced_latency_s) == int(SPEAK_SMOKE.rate * SPEAK_SMOKE.latency_s)
    assert report.headline is not None
    assert report.rounds[0].worker == report.headline.throughput.rate
    # The worker's metrics timed the broker's part of the latency step's speaks.
    waits = report.waits
    assert waits is not None
    assert waits.delivery.count >= SPEAK_SMOKE.rate * SPEAK_SMOKE.latency_s
    assert waits.event.count >= waits.delivery.count  # speech.started and finished per speak
    assert waits.state.count > 0
    assert 0 < waits.state.mean < 1
    assert waits.heygen.count >= waits.delivery.count
    assert 0 < waits.broker_ms < 1000
    # The report renders (table and markdown), and so do the plots.
    assert "cost growth" in report.table()
    assert "| goal | measured | result |" in report.markdown()
    report.plot(tmp_path)
    assert (tmp_path / "speak-throughput.png").stat().st_size > 0
    assert (tmp_path / "speak-latency.png").stat().st_size > 0


async def test_broker_floor_times_every_step() -> None:
    steps = await broker_floor.measure(rate=500, count=10)
    assert [len(latencies) for latencies in steps.values()] == [10, 10, 5]
    assert all(latency > 0 for latencies in steps.values() for latency in latencies)


async def test_lite_latency_benchmark_times_every_utterance(tmp_path: Path) -> None:
    load = lite_latency.Load(rate=10, seconds=1, sessions=2, part_s=0.5)
    result = await lite_latency.run(load, load.params(deadline_s=60), log_dir=tmp_path)
    assert result.published == result.arrived == 10
    assert len(result.latency_s) == 10
    assert all(0 < latency < 5 for latency in result.latency_s)
    assert result.audio_s == 5.0
    assert result.worker_cpu_s > 0
    assert "| worker CPU per second of audio |" in result.markdown()
