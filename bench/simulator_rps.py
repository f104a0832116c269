"""Keep-alive requests/s the HeyGen simulator serves on loopback: `python -m bench.simulator_rps`.

The simulator runs in its own process (as in a benchmark of the worker), so the figure is not
shared with the client's CPU; its CPU time is read from /proc to give requests per CPU-second.
`--client worker` drives the worker's own HeyGen client (its transport, metrics and tracing
wrapper); the client's CPU time per request is printed beside the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from simulator.admin import SimulatorAdmin
from worker.loop import run as run_loop
from worker.observability.metrics import Metrics
from worker.observability.transport import InstrumentedTransport
from worker.providers.heygen.client import HeyGenClient
from worker.providers.transport import default_transport

API_KEY = "bench-key"
Post = Callable[[str, dict[str, str]], Awaitable[int]]


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    server_cpu_s: float
    client_cpu_s: float


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float:
    # utime and stime are fields 14 and 15 of /proc/<pid>/stat (after the command name).
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SIMULATOR_PORT": str(port),
        "SIMULATOR_HOST": "127.0.0.1",
        "SIMULATOR_CONCURRENCY_LIMIT": "100000",
        "SIMULATOR_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen([sys.executable, "-m", "simulator"], env=env)


async def _wait_ready(admin: SimulatorAdmin, deadline_s: float = 15.0) -> None:
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            await admin.stats(include_requests=False)
            return
        except httpx.TransportError:
            if time.monotonic() > give_up:
                raise
            await asyncio.sleep(0.1)


async def _run(
    post: Post, session_ids: list[str], warmup_s: float, duration_s: float, server_pid: int
) -> Result:
    """Both processes' CPU is read over the measured seconds only (not the warm-up)."""
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0}
    start = time.monotonic() + warmup_s
    end = start + duration_s

    async def client(session_id: str) -> None:
        body = {"session_id": session_id}
        while (now := time.monotonic()) < end:
            status = await post("/v1/streaming.keep_alive", body)
            done = time.monotonic()
            if now >= start:
                counts["requests"] += 1
                counts["errors"] += status != 200
                latencies.append((done - now) * 1000)

    async def measure() -> tuple[float, float]:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        began = (time.process_time(), _cpu_seconds(server_pid))
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return time.process_time() - began[0], _cpu_seconds(server_pid) - began[1]

    measuring = asyncio.ensure_future(measure())
    await asyncio.gather(*(client(sid) for sid in session_ids))
    client_cpu, server_cpu = await measuring
    return Result(
        counts["requests"], counts["errors"], duration_s, latencies, server_cpu, client_cpu
    )


async def _bench(args: argparse.Namespace) -> Result:
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    server = _start_server(port)
    headers = {"X-Api-Key": API_KEY}
    try:
        async with (
            SimulatorAdmin(base_url) as admin,
            aiohttp.ClientSession(
                base_url, headers=headers, connector=aiohttp.TCPConnector(limit=args.concurrency)
            ) as raw,
            HeyGenClient(
                SecretStr(API_KEY),
                base_url,
                transport=InstrumentedTransport(
                    default_transport(args.concurrency), Metrics(CollectorRegistry())
                ),
                max_concurrency=args.concurrency,
            ) as heygen,
        ):
            await _wait_ready(admin)

            async def post_aiohttp(path: str, body: dict[str, str]) -> int:
                async with raw.post(path, json=body) as response:
                    await response.read()
                    return response.status

            async def post_worker(path: str, body: dict[str, str]) -> int:
                await heygen.keep_alive(body["session_id"])
                return 200  # anything else raises

            post = post_aiohttp if args.client == "aiohttp" else post_worker
            session_ids = []
            for _ in range(args.concurrency):
                async with raw.post(
                    "/v1/streaming.new", json={"avatar_id": "bench", "version": "v2"}
                ) as response:
                    session_id = (await response.json())["data"]["session_id"]
                await post("/v1/streaming.start", {"session_id": session_id})
                session_ids.append(session_id)
            result = await _run(post, session_ids, args.warmup, args.duration, server.pid)
            stats = await admin.stats(include_requests=False)
            counted = sum(s.keep_alives for s in stats.sessions.values())
            if counted < result.requests - result.errors:
                raise SystemExit(
                    f"simulator counted {counted} keep-alives, client {result.requests}"
                )
            return result
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds (8)")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    parser.add_argument("--concurrency", type=int, default=64, help="concurrent clients (64)")
    parser.add_argument("--client", choices=("aiohttp", "worker"), default="aiohttp")
    args = parser.parse_args()
    result = run_loop(_bench(args))
    rps = result.requests / result.seconds
    cuts = statistics.quantiles(result.latencies_ms, n=100)
    cpu_share = result.server_cpu_s / result.seconds
    print(
        f"simulator keep_alive: {rps:,.0f} req/s over {result.seconds:g} s, "
        f"{args.concurrency} concurrent clients ({args.client} client), "
        f"errors {result.errors}, latency p50 {cuts[49]:.1f} ms p99 {cuts[98]:.1f} ms"
    )
    print(
        f"simulator CPU: {cpu_share:.0%} of one core, "
        f"{result.requests / max(result.server_cpu_s, 1e-9):,.0f} req per CPU-second"
    )
    print(
        f"client CPU: {result.client_cpu_s / result.seconds:.0%} of one core, "
        f"{1e6 * result.client_cpu_s / max(result.requests, 1):.0f} µs per request"
    )


if __name__ == "__main__":
    main()
