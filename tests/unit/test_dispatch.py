"""The dispatcher's account of what it is handling (which a handover and a drain wait on), the
chain of steps, and dedupe."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.codec import AmqpEnvelope
from contracts.commands import SessionKeepalive
from worker.bus.delivery import ACK, HANDOVER_HEADER, REQUEUE, Delivery, Disposition
from worker.dispatch import Dispatcher, chain
from worker.events import EventEmitter
from worker.handlers.context import Policy, Services
from worker.ledger import Ledger
from worker.observability.metrics import Metrics
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.provider import HeyGenProvider
from worker.sessions.registry import Registry
from worker.steps import Dedupe, Job, Next, Step


class NoPublisher:
    async def publish_event(self, envelope: AmqpEnvelope, routing_key: str) -> None:
        raise AssertionError("nothing is published here")

    async def publish_reply(self, envelope: AmqpEnvelope, reply_to: str) -> None:
        raise AssertionError("nothing is published here")


def services() -> Services:
    heygen = HeyGenClient(
        SecretStr("k"), transport=httpx.MockTransport(lambda _: httpx.Response(500))
    )
    return Services(
        providers={"heygen": HeyGenProvider(heygen)},
        registry=Registry(10),
        emitter=EventEmitter(NoPublisher(), "w"),
        policy=Policy(idle_timeout_s=60, max_duration_s=600, credits_per_minute=0.2),
        metrics=Metrics(CollectorRegistry()),
    )


def wake_up(partition: int) -> Delivery:
    return Delivery(
        partition=partition,
        body=b"",
        content_type=None,
        message_type=None,
        message_id=None,
        correlation_id=None,
        reply_to=None,
        user_id=None,
        timestamp=None,
        redelivered=False,
        headers={HANDOVER_HEADER: "other"},
    )


async def test_a_delivery_counts_from_its_arrival_not_from_its_command_starting() -> None:
    # A delivery still waiting for its partition's takeover is not running a command yet, but
    # a handover that went ahead without it would have it requeued behind newer commands.
    gate = asyncio.Event()

    async def takeover(job: Job, call_next: Next) -> Disposition:
        await gate.wait()
        return await call_next(job)

    dispatcher = Dispatcher(chain([takeover], acknowledge), Ledger(10))
    handled = asyncio.create_task(dispatcher.handle(wake_up(3)))
    await asyncio.sleep(0)
    partition_idle = asyncio.create_task(dispatcher.wait_partition_idle(3))
    all_idle = asyncio.create_task(dispatcher.wait_idle())
    async with asyncio.timeout(1):
        await dispatcher.wait_partition_idle(4)  # another partition is not held up
    await asyncio.sleep(0.05)
    assert not partition_idle.done()
    assert not all_idle.done()

    gate.set()
    assert await handled is ACK
    async with asyncio.timeout(1):
        await partition_idle
        await all_idle


async def acknowledge(job: Job) -> Disposition:
    return ACK


async def test_the_chain_runs_its_steps_in_order_and_each_may_answer() -> None:
    seen: list[str] = []

    def step(name: str, answer: Disposition | None = None) -> Step:
        async def run(job: Job, call_next: Next) -> Disposition:
            seen.append(name)
            return answer if answer is not None else await call_next(job)

        return run

    handle = chain([step("a"), step("b", REQUEUE), step("c")], acknowledge)
    assert await handle(Job(wake_up(0))) is REQUEUE
    assert seen == ["a", "b"]


async def test_a_command_finished_here_is_not_run_again() -> None:
    ledger = Ledger(10)
    dedupe = Dedupe(services(), ledger)
    runs: list[str] = []

    async def run(job: Job) -> Disposition:
        runs.append(job.command.command_id)
        return ACK

    command = SessionKeepalive(session_id="s")
    for _ in range(2):
        assert await dedupe(Job(wake_up(0), decoded=command), run) is ACK
    assert runs == [command.command_id]
    assert command.command_id in ledger.finished


async def test_a_requeued_command_is_not_remembered_as_finished() -> None:
    ledger = Ledger(10)

    async def requeue(job: Job) -> Disposition:
        return REQUEUE

    command = SessionKeepalive(session_id="s")
    assert await Dedupe(services(), ledger)(Job(wake_up(0), decoded=command), requeue) is REQUEUE
    assert command.command_id not in ledger.finished
