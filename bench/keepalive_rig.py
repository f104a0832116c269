"""The keep-alive scale benchmark's setup: its processes, its event subscription, its creates.

Everything runs on loopback in a vhost of its own; the worker and simulator are started from
`Params.source`, so a patched copy of the code can be measured the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aio_pika
import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench import harness
from bench.harness import Child
from bench.keepalive_report import Params
from bench.sampler import Prober, Sampler
from contracts.client import publish_command
from contracts.codec import decode_event
from contracts.commands import SessionCreate
from contracts.events import CommandFailed, CommandRejected, SessionStopped
from contracts.topology import EVENTS_EXCHANGE, event_binding_keys
from simulator.admin import SimulatorAdmin

API_KEY = "bench-key"
AVATAR = "Wayne_20240711"
PUBLISHERS = 8
WATCHED_EVENTS = (
    "session.ready",
    "session.stopped",
    "session.reconnecting",
    "session.keepalive_failed",
    "command.rejected",
    "command.failed",
)
# Variables of ours that must not leak in from the caller's environment.
OWN_PREFIXES = (
    "HEYGEN_",
    "LIVEAVATAR_",
    "WORKER_",
    "AMQP_",
    "SIMULATOR_",
    "METRICS_",
    "LOG_LEVEL",
)


class BenchmarkAborted(RuntimeError):
    """The run could not go on (publishing failed, time bound reached)."""


@dataclass
class Fleet:
    """The sessions asked for and what the worker said about them (from routing keys)."""

    expected: int
    slots: asyncio.Semaphore
    published: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    settled: set[str] = field(default_factory=set)
    all_settled: asyncio.Event = field(default_factory=asyncio.Event)
    last_progress: float = field(default_factory=time.monotonic)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        # Routing key: "<event type>.<session id>"; session ids hold no dot.
        event_type, _, session_id = (message.routing_key or "").rpartition(".")
        if event_type == "session.ready":
            self.ready.setdefault(session_id, time.monotonic())
            self._settle(session_id)
            return
        event = decode_event(message.body, content_type=message.content_type)
        if isinstance(event, SessionStopped):
            self.events[f"session.stopped ({event.reason})"] += 1
        else:
            self.events[event_type] += 1
        if isinstance(event, CommandRejected | CommandFailed) and session_id not in self.ready:
            self.failures[session_id] = f"{event.type}: {event.message}"
            self._settle(session_id)

    def _settle(self, session_id: str) -> None:
        if session_id in self.published and session_id not in self.settled:
            self.settled.add(session_id)
            self.last_progress = time.monotonic()
            self.slots.release()
            if len(self.settled) == self.expected:
                self.all_settled.set()


@dataclass
class Rig:
    params: Params
    simulator: Child
    worker: Child
    simulator_url: str
    metrics_url: str
    channel: AbstractChannel
    fleet: Fleet
    sampler: Sampler
    prober: Prober
    phase: str = "starting"
    began: float = field(default_factory=time.monotonic)

    def enter(self, phase: str) -> None:
        """Name what the run is doing now (for progress, and for an abort's message)."""
        self.phase = phase
        print(f"[{time.monotonic() - self.began:6.1f} s] {phase}", file=sys.stderr, flush=True)

    def check_alive(self) -> None:
        self.simulator.check_alive()
        self.worker.check_alive()

    async def wait(self, seconds: float) -> None:
        """Sleep, failing fast if a process dies meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check_alive()
            await asyncio.sleep(min(left, 1.0))


def environment(source: Path, **ours: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
    # The measured tree's packages first (a stale editable install could shadow them).
    path = os.pathsep.join(p for p in (str(source), env.get("PYTHONPATH")) if p)
    return {**env, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **ours}


# Run from the measured tree (cwd first on sys.path), so another checkout can be compared.
SIMULATOR_ARGV = [sys.executable, "-m", "simulator"]
# `heygen-worker run`, as deployed (on uvloop where the tree's CLI chooses it).
WORKER_ARGV = [sys.executable, "-m", "worker", "run"]


async def start_simulator(
    stack: AsyncExitStack, source: Path, log_dir: Path, **settings: str
) -> tuple[Child, str]:
    """The simulator of `source` in a child process (stopped with `stack`), once it answers."""
    port = harness.free_port()
    url = f"http://127.0.0.1:{port}"
    simulator = await stack.enter_async_context(
        harness.child_process(
            "simulator",
            SIMULATOR_ARGV,
            environment(
                source,
                SIMULATOR_HOST="127.0.0.1",
                SIMULATOR_PORT=str(port),
                SIMULATOR_API_KEYS=API_KEY,
                SIMULATOR_LOG_LEVEL="WARNING",
                **settings,
            ),
            log_dir / "simulator.log",
            source,
        )
    )
    admin = await stack.enter_async_context(SimulatorAdmin(url, timeout=120))

    async def simulator_up() -> bool:
        await admin.stats(include_requests=False)
        return True

    await harness.wait_until("simulator", simulator_up, simulator, 30)
    return simulator, url


@contextlib.asynccontextmanager
async def running_rig(params: Params, log_dir: Path) -> AsyncIterator[Rig]:
    """RabbitMQ vhost, simulator, worker, event subscription and sampler; all torn down after."""
    async with AsyncExitStack() as stack:
        amqp_url = await stack.enter_async_context(harness.rabbit_vhost("bench-keepalive"))
        metrics_port = harness.free_port()
        # Room for every request of a slow run (creation spanning many intervals); the report
        # says how much of the log was kept.
        log_size = params.sessions * (40 + 2 * params.intervals)
        simulator, simulator_url = await start_simulator(
            stack,
            params.source,
            log_dir,
            SIMULATOR_CONCURRENCY_LIMIT=str(params.sessions + 100),
            SIMULATOR_IDLE_TIMEOUT_OVERRIDE_S=f"{params.idle_timeout_s:g}",
            SIMULATOR_REQUEST_LOG_SIZE=str(log_size),
            **params.simulator_env,
        )
        worker_env = environment(
            params.source,
            AMQP_URL=amqp_url,
            HEYGEN_API_KEY=API_KEY,
            HEYGEN_BASE_URL=simulator_url,
            LIVEAVATAR_API_KEY=API_KEY,
            LIVEAVATAR_BASE_URL=simulator_url,
            WORKER_MAX_SESSIONS=str(params.sessions + 100),
            WORKER_KEEPALIVE_INTERVAL_S=f"{params.interval_s:g}",
            WORKER_IDLE_TIMEOUT_S="86400",
            WORKER_MAX_DURATION_S="86400",
            WORKER_PARTITIONS="8",
            WORKER_SHUTDOWN_GRACE_S="2",
            WORKER_ID="bench-worker",
            METRICS_HOST="127.0.0.1",
            METRICS_PORT=str(metrics_port),
            LOG_LEVEL="WARNING",
            **params.worker_env,
        )
        worker = await stack.enter_async_context(
            harness.child_process(
                "worker", WORKER_ARGV, worker_env, log_dir / "worker.log", params.source
            )
        )
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))

        async def worker_up() -> bool:
            return (await http.get(f"{metrics_url}/readyz")).status_code == 200

        await harness.wait_until("worker", worker_up, worker, 60)
        connection = await aio_pika.connect_robust(amqp_url)
        stack.push_async_callback(connection.close)
        fleet = Fleet(params.sessions, asyncio.Semaphore(params.create_concurrency))
        events_channel = await connection.channel()
        exchange = await events_channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await events_channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in event_binding_keys(types=WATCHED_EVENTS):
            await queue.bind(exchange, routing_key=key)
        await queue.consume(fleet.on_message, no_ack=True)
        pids = {"worker": worker.pid, "simulator": simulator.pid, "bench": os.getpid()}
        rabbit = harness.find_pid("beam.smp")
        pids["rabbitmq"] = rabbit if rabbit is not None else os.getpid()
        sampler = Sampler("worker", pids)
        channel = await connection.channel(publisher_confirms=True)
        probe_exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)

        async def confirmed_publish() -> object:
            # Routed nowhere; the broker still confirms it: its own answering time.
            return await probe_exchange.publish(aio_pika.Message(b"probe"), "bench.probe")

        prober = Prober(
            {
                "worker": partial(http.get, f"{metrics_url}/healthz"),
                "simulator": partial(http.get, f"{simulator_url}/_admin/config"),
                "rabbitmq": confirmed_publish,
            }
        )
        for task in (asyncio.create_task(sampler.run()), asyncio.create_task(prober.run())):
            stack.callback(task.cancel)
        yield Rig(
            params, simulator, worker, simulator_url, metrics_url, channel, fleet, sampler, prober
        )


def session_ids(first: int, end: int) -> list[str]:
    """The session ids the benchmark creates, in order."""
    return [f"bench-{i:06d}" for i in range(first, end)]


def heygen_create(session_id: str) -> SessionCreate:
    return SessionCreate(session_id=session_id, avatar_id=AVATAR)


async def create_all(
    rig: Rig,
    first: int = 0,
    count: int | None = None,
    make: Callable[[str], SessionCreate] = heygen_create,
) -> None:
    """Publish the session.creates of sessions `first` to `first + count` (all by default),
    at most `create_concurrency` unanswered at a time.

    Creates that get no answer at all stall it: after `stall_s` without one, the unanswered
    are counted as failures and the benchmark goes on with the sessions it has.
    """
    fleet = rig.fleet
    stall_s = max(30.0, 3 * rig.params.interval_s)
    fleet.last_progress = time.monotonic()
    end = rig.params.sessions if count is None else first + count
    fleet.expected = end
    if len(fleet.settled) < end:
        fleet.all_settled.clear()
    ids = iter(session_ids(first, end))

    async def publisher() -> None:
        for session_id in ids:
            await fleet.slots.acquire()
            fleet.published[session_id] = time.monotonic()
            await publish_command(rig.channel, make(session_id))

    publishers = [asyncio.create_task(publisher()) for _ in range(PUBLISHERS)]
    try:
        while not fleet.all_settled.is_set():
            rig.check_alive()
            for task in publishers:
                if task.done() and task.exception() is not None:
                    raise BenchmarkAborted("publishing failed") from task.exception()
            if time.monotonic() - fleet.last_progress > stall_s:
                for session_id in fleet.published.keys() - fleet.settled:
                    fleet.failures[session_id] = f"no answer within {stall_s:g} s"
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fleet.all_settled.wait(), 1.0)
    finally:
        for task in publishers:
            task.cancel()
