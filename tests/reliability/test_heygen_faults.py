"""HeyGen misbehaves (429 with Retry-After, 5xx, resets after the effect, hangs past the
timeout, remote closes, concurrency limit, slow answers) with traffic running: every command is
answered, no speak reaches HeyGen twice, and the worker's memory and in-flight stay bounded."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from contracts.commands import SessionCreate
from simulator.server import RunningSimulator
from tests.integration.conftest import WorkerProcess
from tests.reliability.checker import Checker
from tests.reliability.conftest import finish, node_worker
from tests.reliability.rabbit_node import RabbitNode
from tests.reliability.traffic import ResilientProducer, Traffic


async def test_heygen_errors_lose_nothing_and_repeat_no_speak(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    names = [f"hg-{i}" for i in range(6)]
    env = {"HEYGEN_TIMEOUT_S": "1", "WORKER_RECONNECT_ATTEMPTS": "2"}
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w.log", **env) as w:
        await producer.start()
        traffic = Traffic(producer, names, rate_hz=40, interrupts=True)
        await traffic.open_sessions()
        admin = simulator.admin
        await admin.set_fault("streaming.task", rate=0.1, status=429, retry_after=0.2)
        await admin.set_fault("streaming.task", rate=0.05, status=503)
        # The effect happens, the answer is lost: a blind retry would speak twice.
        await admin.set_fault("streaming.task", rate=0.05, reset=True, apply_first=True)
        await admin.set_fault("streaming.task", rate=0.03, hang_s=2)
        await admin.set_fault("streaming.keep_alive", rate=0.2, status=500)
        traffic.start()
        await asyncio.sleep(2)
        # HeyGen drops a session: the worker reconnects it (session.reconnected).
        created = checker.heygen_ids()[names[0]]
        await admin.close_session(next(iter(created)))
        # Until it is replaced: the limit below must count all six live sessions.
        for _ in range(150):
            live = (await admin.stats(include_requests=False)).live_sessions
            if len(checker.heygen_ids()[names[0]]) > 1 and live >= len(names):
                break
            await asyncio.sleep(0.1)
        # HeyGen's concurrent-session limit: further creates are refused with `capacity`.
        await admin.configure(concurrency_limit=len(names))
        extra = SessionCreate(session_id="hg-over-limit", avatar_id="a")
        await producer.send(extra)
        await asyncio.sleep(1)
        await traffic.stop()
        await admin.clear_faults()
        await traffic.close_sessions()
        report = await finish(checker, simulator)
        assert w.process.returncode is None, w.log()
        assert await w.readyz() == 200
    answer = checker.terminals()[extra.command_id][0]
    assert getattr(answer, "code", None) == "capacity", answer
    assert any(e.type == "session.reconnected" for e in checker.events.values())
    assert not report.lost, report.line()
    assert report.duplicate_speaks == 0, report.line()
    assert report.orphans_live == 0, report.line()
    assert not report.unexpected, report.unexpected[:10]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


def rss_bytes(process: WorkerProcess) -> int:
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) * 1024


async def test_slow_heygen_backpressure_bounded(
    rabbit_node: RabbitNode,
    node_url: str,
    simulator: RunningSimulator,
    checker: Checker,
    producer: ResilientProducer,
    tmp_path: Path,
) -> None:
    """A flood of speaks against a HeyGen answering in 0.3-0.5 s: in-flight never exceeds
    partitions x prefetch, and the worker's memory does not grow with the backlog."""
    prefetch, partitions = 8, 2
    env = {"WORKER_PREFETCH": str(prefetch), "WORKER_HTTP_CONCURRENCY": "4"}
    names = [f"bp-{i}" for i in range(8)]
    async with node_worker(rabbit_node, node_url, simulator, tmp_path / "w.log", **env) as w:
        await producer.start()
        traffic = Traffic(producer, names, rate_hz=1000)
        await traffic.open_sessions()
        await simulator.admin.configure(
            latency={"streaming.task": {"fixed_ms": 300, "jitter_ms": 200}}
        )
        baseline = rss_bytes(w)
        traffic.start()
        peak_in_flight, peak_rss = 0.0, baseline
        url = f"http://127.0.0.1:{w.metrics_port}/metrics"
        async with httpx.AsyncClient(timeout=5) as http:
            for _ in range(30):
                await asyncio.sleep(0.25)
                text = (await http.get(url)).text
                peak_in_flight = max(
                    peak_in_flight, metric(text, "heygen_worker_commands_in_flight")
                )
                peak_rss = max(peak_rss, rss_bytes(w))
        await traffic.stop()
        await simulator.admin.configure(latency={})
        await traffic.close_sessions(settle=False)
        report = await finish(checker, simulator, timeout=90)
    growth_mb = (peak_rss - baseline) / 2**20
    print(
        f"backlog {traffic.sent} commands, peak in flight {peak_in_flight:.0f}, "
        f"RSS {baseline / 2**20:.0f} MB -> peak {peak_rss / 2**20:.0f} MB"
    )
    assert peak_in_flight <= partitions * prefetch
    assert peak_in_flight > 0
    assert growth_mb < 40
    assert not report.lost, report.line()
    assert report.duplicate_speaks == 0, report.line()
