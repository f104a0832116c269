"""The load of the speak benchmarks, the same for every target (worker, peer, bare relay).

Speak commands are published raw to `avatar.commands` with publisher confirms (the closed
loop's encoded before any clock starts); a target's answer is recognised on `avatar.events` by
the AMQP `correlation_id`, which is unique per command. Two shapes of load:

- closed loop (`saturate`): at most `in_flight` commands published and not yet answered, for a
  fixed time: the rate a target sustains, with the same number in flight for every target;
- open loop (`paced`): a fixed rate whatever the answers: latency at a steady load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from contracts.codec import encode_command, encode_event
from contracts.commands import SessionSpeak
from contracts.common import TaskMode, TaskType
from contracts.events import SpeechStarted
from contracts.topology import COMMANDS_EXCHANGE, EVENTS_EXCHANGE

TEXT = "Hello, and welcome. How can I help you today?"
ANSWER_TYPE = "speech.started"
# Answers that end a command without a speech.started: counted as errors, never waited for.
FAILURE_TYPES = ("command.rejected", "command.failed")


@dataclass(frozen=True, slots=True)
class Outgoing:
    routing_key: str
    correlation_id: str
    body: bytes
    properties: dict[str, object]


def speaks(session_ids: Sequence[str], count: int) -> Iterator[Outgoing]:
    """`count` speak commands (async, repeat), round-robin over `session_ids`, each encoded as
    it is taken: its `sent_at` is then when it was taken (`list()` them to encode ahead)."""
    for session_id, _ in zip(itertools.cycle(session_ids), range(count), strict=False):
        correlation_id = uuid.uuid4().hex
        command = SessionSpeak(
            session_id=session_id,
            text=TEXT,
            task_type=TaskType.REPEAT,
            task_mode=TaskMode.ASYNC,
            correlation_id=correlation_id,
        )
        envelope = encode_command(command)
        yield Outgoing(session_id, correlation_id, envelope.body, envelope.properties)


def answer_body() -> bytes:
    """A speech.started as the worker encodes it: what the relay and the peer send back."""
    event = SpeechStarted(
        session_id="bench-000000",
        seq=3,
        worker_id="bench-worker",
        causation_id=uuid.uuid4().hex,
        correlation_id=uuid.uuid4().hex,
        task_id=uuid.uuid4().hex,
        duration_ms=3200.0,
        task_type=TaskType.REPEAT,
        task_mode=TaskMode.ASYNC,
        characters=len(TEXT),
    )
    return encode_event(event).body


@dataclass
class Answers:
    """Publish and answer times by correlation id, and the answers' arrival times in order."""

    sent: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    slots: asyncio.Semaphore | None = None

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        key = message.correlation_id or ""
        if key not in self.sent or key in self.done or key in self.failed:
            return
        now = time.monotonic()
        if (message.routing_key or "").startswith(ANSWER_TYPE):
            self.done[key] = now
            self.arrivals.append(now)
        else:
            self.failed[key] = message.routing_key or ""
        if self.slots is not None:
            self.slots.release()

    @property
    def pending(self) -> int:
        return len(self.sent) - len(self.done) - len(self.failed)

    def latencies_s(self) -> list[float]:
        return [self.done[k] - self.sent[k] for k in self.done]

    def rate(self, start: float, end: float) -> float:
        """Answers per second that arrived between two monotonic times."""
        return sum(1 for t in self.arrivals if start <= t < end) / max(end - start, 1e-9)


@contextlib.asynccontextmanager
async def answers(channel: AbstractChannel) -> AsyncIterator[Answers]:
    """Collect answers on an exclusive queue bound to speech.started and failures."""
    collected = Answers()
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    for event_type in (ANSWER_TYPE, *FAILURE_TYPES):
        await queue.bind(exchange, routing_key=f"{event_type}.#")
    tag = await queue.consume(collected.on_message, no_ack=True)
    try:
        yield collected
    finally:
        await queue.cancel(tag)


async def _publish(exchange: AbstractExchange, item: Outgoing, collected: Answers) -> None:
    collected.sent[item.correlation_id] = time.monotonic()
    message = aio_pika.Message(item.body, **item.properties)  # type: ignore[arg-type]
    await exchange.publish(message, routing_key=item.routing_key)


@dataclass(frozen=True)
class Window:
    """What a closed-loop run measured: monotonic bounds of its measured part and its rate."""

    start: float
    end: float
    rate: float
    answered: int
    errors: int


async def saturate(
    channel: AbstractChannel,
    collected: Answers,
    load: Sequence[Outgoing],
    *,
    in_flight: int,
    warmup_s: float,
    duration_s: float,
    drain_s: float = 60.0,
    on_measuring: Callable[[], None] = lambda: None,
    on_measured: Callable[[], None] = lambda: None,
) -> Window:
    """Keep `in_flight` commands unanswered for warmup + duration, then wait for the rest."""
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
    collected.slots = asyncio.Semaphore(in_flight)
    items = iter(load)
    began = time.monotonic()
    start, end = began + warmup_s, began + warmup_s + duration_s

    async def publisher() -> None:
        slots = collected.slots
        assert slots is not None
        for item in items:
            await slots.acquire()
            if time.monotonic() >= end:
                slots.release()  # another publisher may be waiting for it, to stop too
                return
            await _publish(exchange, item, collected)

    # One publisher per slot: each waits for its confirm, so confirms never limit the load.
    tasks = [asyncio.create_task(publisher()) for _ in range(in_flight)]
    try:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        on_measuring()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        on_measured()
        # Publishers stop at their next command; one cut short mid-publish would leave a
        # command that may or may not have gone out.
        async with asyncio.timeout(drain_s):
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    if len(collected.sent) >= len(load):
        raise RuntimeError(f"the load ({len(load)} commands) ran out before the end")
    await drain(collected, drain_s)
    collected.slots = None
    return Window(
        start, end, collected.rate(start, end), len(collected.done), len(collected.failed)
    )


async def paced(
    channel: AbstractChannel, collected: Answers, load: Iterable[Outgoing], rate: float
) -> None:
    """Publish `load` at `rate` commands per second (not waiting for answers), then drain.

    A lazy `load` is encoded as it goes, so each command's `sent_at` is its publish time and
    the worker's queue-delay metric measures the broker's delivery."""
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE, ensure=False)
    loop = asyncio.get_running_loop()
    began = loop.time()
    tasks: set[asyncio.Task[None]] = set()
    items = iter(load)
    for index in itertools.count():
        delay = began + index / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if (item := next(items, None)) is None:  # taken after the sleep: sent_at is now
            break
        task = asyncio.create_task(_publish(exchange, item, collected))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    # A target slower than `rate` has a backlog to work off: its latencies say so.
    await drain(collected, 120.0)


async def drain(collected: Answers, timeout_s: float) -> None:
    """Wait until every published command is answered (or fail after `timeout_s`)."""
    give_up = time.monotonic() + timeout_s
    while collected.pending:
        if time.monotonic() > give_up:
            raise TimeoutError(f"{collected.pending} commands unanswered after {timeout_s:g} s")
        await asyncio.sleep(0.05)


def timeline(arrivals: Sequence[float], since: float, bin_s: float = 0.25) -> list[float]:
    """Answers per second in consecutive bins from `since` (for the throughput plot)."""
    if not arrivals:
        return []
    bins = [0] * (int((max(arrivals) - since) / bin_s) + 1)
    for t in arrivals:
        if t >= since:
            bins[int((t - since) / bin_s)] += 1
    return [n / bin_s for n in bins]
