"""Integration harness: a real RabbitMQ vhost, the HeyGen simulator and an in-process worker."""

# Every wait here is bounded by a `timeout` argument on purpose: tests must never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from contracts.client import publish_command
from contracts.codec import decode_event, encode_event
from contracts.commands import CommandBase, SessionCreate
from contracts.common import StreamingVersion
from contracts.events import CommandCompleted, Event, SessionCreated
from contracts.topology import (
    COMMANDS_EXCHANGE,
    EVENTS_EXCHANGE,
    event_routing_key,
    partition_queue,
)
from simulator.server import RunningSimulator, running_simulator
from worker.app import Worker
from worker.bus.delivery import HANDOVER_HEADER
from worker.providers.transport import default_transport
from worker.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]
AVATAR = "Wayne_20240711"
PARTITIONS = 2

TERMINAL = {
    "session.create": {"session.ready"},
    "session.start": {"session.ready"},
    "session.speak": {"speech.started"},
    "session.speak_audio": {"command.completed"},
    "session.interrupt": {"speech.interrupted"},
    "session.stop": {"session.stopped"},
    "session.keepalive": {"command.completed"},
    "session.ice": {"command.completed"},
}
ALWAYS_TERMINAL = {"command.rejected", "command.failed"}


def terminal_types(command: CommandBase) -> set[str]:
    """Event types that answer `command` (a v1 create is answered by its SDP offer)."""
    if isinstance(command, SessionCreate) and command.version is StreamingVersion.V1:
        return {"session.created"} | ALWAYS_TERMINAL
    return TERMINAL.get(command.type, set()) | ALWAYS_TERMINAL


def answer_to(command: CommandBase, types: set[str] | None = None) -> Callable[[Event], bool]:
    """Matches the events of `types` (default: the terminal ones) caused by `command`."""
    wanted = terminal_types(command) if types is None else types
    return lambda e: e.causation_id == command.command_id and e.type in wanted


# The simulator takes any non-empty LiveAvatar key; LiveAvatar's avatar ids are uuids.
LIVEAVATAR_KEY = "test-liveavatar-key"
LIVEAVATAR_AVATAR = "2f5b3c6e-9a41-4f4f-8a55-6f2d1c0b7e11"


def create(session_id: str, **kw: Any) -> SessionCreate:
    kw.setdefault("avatar_id", AVATAR)
    return SessionCreate(session_id=session_id, **kw)


def la_create(session_id: str, **kw: Any) -> SessionCreate:
    """A session.create for LiveAvatar (FULL mode unless `mode` says otherwise)."""
    return create(session_id, avatar_id=LIVEAVATAR_AVATAR, provider="liveavatar", **kw)


class EventTap:
    """Every event published on the vhost, in arrival order, with waiting helpers."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = decode_event(message.body, content_type=message.content_type)
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        await message.ack()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = 10) -> Event:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                await self._changed.wait()

    async def wait_count(
        self, predicate: Callable[[Event], bool], n: int, timeout: float = 10
    ) -> list[Event]:
        async with asyncio.timeout(timeout), self._changed:
            while len(found := [e for e in self.events if predicate(e)]) < n:
                await self._changed.wait()
            return found

    async def answers(self, commands: Sequence[CommandBase], timeout: float = 10) -> list[Event]:
        """The terminal event of each command, in the commands' order."""
        return [await self.wait_for(answer_to(c), timeout) for c in commands]

    def of(self, session_id: str) -> list[Event]:
        return [e for e in self.events if e.session_id == session_id]

    def caused_by(self, command: CommandBase) -> list[Event]:
        return [e for e in self.events if e.causation_id == command.command_id]


class Inbox:
    """A producer's private reply queue (for `reply_to`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._messages: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await self._messages.put(message)

    async def next(self, timeout: float = 10) -> AbstractIncomingMessage:
        async with asyncio.timeout(timeout):
            return await self._messages.get()

    def empty(self) -> bool:
        return self._messages.empty()


class Producer:
    """What a producing service does: publish commands, watch events."""

    def __init__(self, channel: AbstractChannel, tap: EventTap) -> None:
        self.channel = channel
        self.tap = tap

    async def send(self, command: CommandBase) -> None:
        await publish_command(self.channel, command)

    async def call(self, command: CommandBase, timeout: float = 10) -> Event:
        """Publish and wait for the command's terminal event."""
        await self.send(command)
        return await self.tap.wait_for(answer_to(command), timeout)

    async def settle(self, timeout: float = 10) -> None:
        """Until every event published so far has reached the tap: a marker event published
        now is queued behind them."""
        marker = CommandCompleted(command_type="test.marker", worker_id="test-tap")
        envelope = encode_event(marker)
        exchange = await self.channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        await exchange.publish(
            aio_pika.Message(envelope.body, **envelope.properties),
            routing_key=event_routing_key(marker),
        )
        await self.tap.wait_for(lambda e: e.event_id == marker.event_id, timeout)

    async def open_session(self, session_id: str, **kw: Any) -> SessionCreated:
        """Create a v2 session and wait until it is ready; returns its session.created."""
        command = create(session_id, **kw)
        ready = await self.call(command)
        assert ready.type == "session.ready", ready
        created = next(e for e in self.tap.caused_by(command) if isinstance(e, SessionCreated))
        return created

    async def publish_raw(self, body: bytes, routing_key: str, **properties: Any) -> None:
        """Publish bytes to avatar.commands as a careless or hostile producer might."""
        exchange = await self.channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
        properties.setdefault("delivery_mode", aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(aio_pika.Message(body, **properties), routing_key=routing_key)

    @contextlib.asynccontextmanager
    async def inbox(self) -> AsyncIterator[Inbox]:
        queue = await self.channel.declare_queue("", exclusive=True, auto_delete=True)
        inbox = Inbox(queue.name)
        await queue.consume(inbox.on_message, no_ack=True)
        yield inbox


def reply_event(message: AbstractIncomingMessage) -> Event:
    return decode_event(message.body, content_type=message.content_type, message_type=message.type)


def assert_seq_contiguous(events: Iterable[Event]) -> None:
    """Per session, seq runs 1..n in arrival order: no gap, no duplicate."""
    by_session: dict[str, list[int | None]] = {}
    for event in events:
        if event.session_id is not None and event.seq is not None:
            by_session.setdefault(event.session_id, []).append(event.seq)
    for session_id, seqs in by_session.items():
        assert seqs == list(range(1, len(seqs) + 1)), (session_id, seqs)


async def queue_depth(connection: AbstractRobustConnection, name: str) -> int:
    """Ready messages of a queue, read on a fresh channel (aio-pika caches declarations)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await channel.close()


async def partitions_depth(connection: AbstractRobustConnection, partitions: int) -> int:
    return sum([await queue_depth(connection, partition_queue(i)) for i in range(partitions)])


async def leftover_commands(
    connection: AbstractRobustConnection, partitions: int, timeout: float = 5
) -> list[AbstractIncomingMessage]:
    """Take what is left in the partition queues once no worker runs, except the wake-up
    messages a released partition keeps for its next owner: commands that were not acked."""
    left: list[AbstractIncomingMessage] = []
    for index in range(partitions):
        name = partition_queue(index)
        expected = await queue_depth(connection, name)
        if not expected:
            continue
        # Consumed, not fetched: basic.get is refused on single-active-consumer quorum queues.
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            async with asyncio.timeout(timeout), queue.iterator(no_ack=True) as messages:
                async for message in messages:
                    if HANDOVER_HEADER not in (message.headers or {}):
                        left.append(message)
                    expected -= 1
                    if not expected:
                        break
        finally:
            await channel.close()
    return left


async def wait_until(
    condition: Callable[[], Any], timeout: float = 10, interval: float = 0.02
) -> None:
    """Poll `condition` (sync or async) until it is truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = condition()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(interval)


async def drained(connection: AbstractRobustConnection, worker: Worker) -> None:
    """Wait until the worker holds no command and its partition queues are empty."""
    assert worker.dispatcher is not None

    async def idle() -> bool:
        assert worker.dispatcher is not None
        return worker.dispatcher.in_flight == 0 and (
            await partitions_depth(connection, worker.settings.partitions) == 0
        )

    await wait_until(idle)


async def take_messages(
    connection: AbstractRobustConnection, queue_name: str, n: int, timeout: float = 10
) -> list[AbstractIncomingMessage]:
    """Consume exactly `n` messages of a queue (acknowledged), waiting at most `timeout`."""
    channel = await connection.channel()
    taken: list[AbstractIncomingMessage] = []
    try:
        queue = await channel.declare_queue(queue_name, passive=True)
        async with asyncio.timeout(timeout):
            while len(taken) < n:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.02)
                else:
                    taken.append(message)
        return taken
    finally:
        await channel.close()


@dataclass(frozen=True)
class HttpExchange:
    endpoint: str
    session_id: str | None
    body: dict[str, Any]
    started: float
    ended: float
    status: int | None


class HttpLog(httpx.AsyncBaseTransport):
    """Pass-through transport recording every HeyGen request the worker sends, in send order."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.exchanges: list[HttpExchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        started = time.monotonic()
        status: int | None = None
        try:
            response = await self._inner.handle_async_request(request)
            status = response.status_code
            return response
        finally:
            self.exchanges.append(
                HttpExchange(
                    endpoint=request.url.path.removeprefix("/v1/"),
                    session_id=body.get("session_id"),
                    body=body,
                    started=started,
                    ended=time.monotonic(),
                    status=status,
                )
            )

    async def aclose(self) -> None:
        await self._inner.aclose()

    def of(self, endpoint: str) -> list[HttpExchange]:
        return [x for x in self.exchanges if x.endpoint == endpoint]


def worker_settings(amqp_url: str, sim: RunningSimulator, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "amqp_url": amqp_url,
        "heygen_api_key": sim.api_key,
        "heygen_base_url": sim.base_url,
        "liveavatar_api_key": LIVEAVATAR_KEY,
        "liveavatar_base_url": sim.base_url,
        "partitions": PARTITIONS,
        "metrics_port": 0,
        "metrics_host": "127.0.0.1",
        "shutdown_grace_s": 5,
        "worker_id": "test-worker",
        **overrides,
    }
    return WorkerSettings.model_validate(values)


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    """Parametrize (or override) to change the simulator's settings (pool tests use it)."""
    return {}


@pytest.fixture
async def simulator(simulator_overrides: dict[str, Any]) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(port=0, **simulator_overrides) as sim:
        yield sim


@pytest.fixture
def worker_overrides() -> dict[str, Any]:
    """Override in a test module (or parametrize a test) to change the worker's settings."""
    return {}


@pytest.fixture
def http_log(worker_overrides: dict[str, Any]) -> HttpLog:
    """The worker's HeyGen traffic, as sent (the real aiohttp transport underneath)."""
    return HttpLog(default_transport(worker_overrides.get("http_concurrency", 64)))


@pytest.fixture
async def worker(
    amqp_url: str,
    simulator: RunningSimulator,
    worker_overrides: dict[str, Any],
    http_log: HttpLog,
) -> AsyncIterator[Worker]:
    worker = Worker(worker_settings(amqp_url, simulator, **worker_overrides), transport=http_log)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.shutdown()


@pytest.fixture
async def connection(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    conn = await aio_pika.connect_robust(amqp_url)
    try:
        yield conn
    finally:
        await conn.close()


async def tapped_producer(connection: AbstractRobustConnection) -> Producer:
    """A producer whose tap sees every event of the vhost (the events exchange must exist)."""
    channel = await connection.channel(publisher_confirms=True)
    tap = EventTap()
    exchange = await channel.declare_exchange(
        EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, routing_key="#")
    await queue.consume(tap.on_message)
    return Producer(channel, tap)


@pytest.fixture
async def producer(connection: AbstractRobustConnection, worker: Worker) -> Producer:
    return await tapped_producer(connection)


# --- the worker as a separate process (signals, exit codes) ----------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_argv() -> list[str]:
    """`heygen-worker run` once the CLI exists, else the library entry point."""
    script = Path(sys.executable).with_name("heygen-worker")
    try:
        import worker.cli as cli

        has_cli = callable(getattr(cli, "main", None))
    except Exception:
        has_cli = False
    if has_cli and script.exists():
        return [str(script), "run"]
    return [sys.executable, "-c", "from worker.cli.serve import run_worker; run_worker()"]


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    log_path: Path
    metrics_port: int
    env: dict[str, str] = field(repr=False)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def readyz(self) -> int | None:
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                url = f"http://127.0.0.1:{self.metrics_port}/readyz"
                return (await http.get(url)).status_code
        except httpx.HTTPError:
            return None

    async def wait_ready(self, timeout: float = 20) -> None:
        async def ready() -> bool:
            if self.process.returncode is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()}")
            return await self.readyz() == 200

        await wait_until(ready, timeout, interval=0.05)

    def sigterm(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 20) -> int:
        async with asyncio.timeout(timeout):
            return await self.process.wait()


@contextlib.asynccontextmanager
async def worker_process(
    amqp_url: str, sim: RunningSimulator, log_path: Path, **env: str
) -> AsyncIterator[WorkerProcess]:
    """Run a worker process against the vhost and the in-test simulator; killed if still up."""
    port = free_port()
    variables = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HEYGEN_", "LIVEAVATAR_", "WORKER_", "AMQP_"))
    }
    variables.update(
        AMQP_URL=amqp_url,
        HEYGEN_API_KEY=sim.api_key,
        HEYGEN_BASE_URL=sim.base_url,
        LIVEAVATAR_API_KEY=LIVEAVATAR_KEY,
        LIVEAVATAR_BASE_URL=sim.base_url,
        METRICS_PORT=str(port),
        METRICS_HOST="127.0.0.1",
        WORKER_PARTITIONS=str(PARTITIONS),
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
        # The code under test, whatever the state of the venv's editable install.
        PYTHONPATH=str(REPO),
    )
    variables.update(env)  # the caller's settings win over the defaults above
    with log_path.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *worker_argv(),
            cwd=REPO,
            env=variables,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    running = WorkerProcess(process, log_path, port, variables)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
