"""LiveAvatar faults over the real RabbitMQ against the simulator: 5xx and timeouts on token and
start, no credits, and a worker SIGKILLed mid-speech. Every command is answered, nothing is
spoken twice, and no LiveAvatar session is left billing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import CommandBase, SessionSpeak, SessionStop
from contracts.events import (
    CommandFailed,
    CommandRejected,
    Event,
    SessionCreated,
    SessionReady,
    SessionReconnected,
    SpeechStarted,
)
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    LIVEAVATAR_AVATAR,
    LIVEAVATAR_KEY,
    Producer,
    answer_to,
    la_create,
    tapped_producer,
    wait_until,
    worker_process,
)
from worker.app import Worker
from worker.providers.base import SessionProfile

WORDS_PER_MINUTE = 3000


@pytest.fixture(autouse=True)
async def fast_speech(simulator: RunningSimulator) -> None:
    await simulator.admin.configure_liveavatar(words_per_minute=WORDS_PER_MINUTE)


@pytest.fixture
def worker_overrides() -> dict[str, Any]:
    return {"liveavatar_timeout_s": 1.0}


async def live_sessions(simulator: RunningSimulator) -> list[str]:
    stats = await simulator.admin.liveavatar_stats()
    return [sid for sid, row in stats.sessions.items() if row.status == "active"]


@pytest.mark.parametrize(
    ("endpoint", "fault", "code"),
    [
        ("sessions.token", {"status": 500}, "server"),
        ("sessions.token", {"hang_s": 3}, "timeout"),
        ("sessions.start", {"status": 503}, "server"),
        ("sessions.start", {"hang_s": 3}, "timeout"),
        # Started, then the answer is lost: LiveAvatar bills a session nobody was told of.
        ("sessions.start", {"reset": True, "apply_first": True}, None),
    ],
)
async def test_a_failed_token_or_start_is_answered_and_leaves_nothing_billing(
    producer: Producer,
    simulator: RunningSimulator,
    endpoint: str,
    fault: dict[str, Any],
    code: str | None,
) -> None:
    await simulator.admin.add_liveavatar_fault(endpoint, count=1, **fault)
    failed = await producer.call(la_create("la-fault"), timeout=20)
    assert isinstance(failed, CommandFailed), failed
    if code is not None:
        assert failed.code == code
    stats = await simulator.admin.liveavatar_stats()
    # Never blindly repeated: at most the one session the failed attempt made, and stopped.
    assert len(stats.sessions) <= 1
    await wait_until(lambda: none_live(simulator), 10)
    # The fault was one-off: the same create goes through now.
    ready = await producer.call(la_create("la-fault"), timeout=20)
    assert isinstance(ready, SessionReady)
    assert len(await live_sessions(simulator)) == 1


async def none_live(simulator: RunningSimulator) -> bool:
    return await live_sessions(simulator) == []


async def test_no_credits_refuses_the_create_with_capacity(
    producer: Producer, simulator: RunningSimulator
) -> None:
    await simulator.admin.set_credits(0)
    rejected = await producer.call(la_create("la-broke"))
    assert isinstance(rejected, CommandRejected)
    assert rejected.code == "capacity"
    assert "liveavatar" in rejected.message
    assert await live_sessions(simulator) == []


@pytest.mark.parametrize("worker_overrides", [{"credits_poll_s": 0.2}])
async def test_the_credit_balance_is_polled_into_a_gauge(
    worker: Worker, producer: Producer, simulator: RunningSimulator
) -> None:
    await simulator.admin.set_credits(1234.5)
    balance = worker.metrics.credits_left.labels("liveavatar")
    await wait_until(lambda: balance._value.get() == 1234.5, 5)

    # The burn follows the live LiveAvatar sessions at 2 credits a minute (FULL), 1 (LITE).
    def burn() -> float | None:
        labels = {"provider": "liveavatar"}
        return worker.registry.get_sample_value("heygen_worker_credit_burn_per_minute", labels)

    assert burn() == 0
    assert isinstance(await producer.call(la_create("la-burn")), SessionReady)
    assert burn() == 2.0
    assert isinstance(await producer.call(la_create("la-burn-lite", mode="LITE")), SessionReady)
    assert burn() == 3.0


# --- a worker SIGKILLed mid-speech -------------------------------------------------------


def terminal(events: Sequence[Event], command: CommandBase) -> list[Event]:
    match = answer_to(command)
    return [e for e in events if match(e)]


async def test_sigkill_mid_speech_loses_nothing_and_speaks_nothing_twice(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    # Speech that is still running when the worker dies, and a slow start: a kill lands in the
    # middle of speaks waiting for their observed start.
    await simulator.admin.configure_liveavatar(words_per_minute=600, speak_start_delay_s=0.2)
    env = {
        "LIVEAVATAR_API_KEY": LIVEAVATAR_KEY,
        "LIVEAVATAR_BASE_URL": simulator.base_url,
        "WORKER_SHUTDOWN_GRACE_S": "2",
    }
    names = [f"la-kill-{i}" for i in range(3)]
    sent: list[CommandBase] = []
    async with worker_process(amqp_url, simulator, tmp_path / "w1.log", **env) as w1:
        await w1.wait_ready()
        producer = await tapped_producer(connection)
        for name in names:
            command = la_create(name)
            sent.append(command)
            assert isinstance(await producer.call(command, timeout=20), SessionReady)
        for round_ in range(4):
            for name in names:
                speak = SessionSpeak(session_id=name, text=f"{name} says {round_} now")
                sent.append(speak)
                await producer.send(speak)
        await asyncio.sleep(0.5)
        w1.process.kill()
        await w1.wait()
    async with worker_process(amqp_url, simulator, tmp_path / "w2.log", **env) as w2:
        await w2.wait_ready()
        # The new owner re-joined the rooms: the sessions speak without a reconnection.
        for name in names:
            speak = SessionSpeak(session_id=name, text=f"{name} after the kill")
            sent.append(speak)
            await producer.send(speak)

        def answered() -> bool:
            return all(terminal(producer.tap.events, c) for c in sent)

        await wait_until(answered, 40)
        for name in names:
            stop = SessionStop(session_id=name)
            sent.append(stop)
            await producer.call(stop, timeout=20)
        assert w2.process.returncode is None, w2.log()

    events = producer.tap.events
    outcomes = Counter(
        f"{c.type}->{t[0].type}:{getattr(t[0], 'code', '')}"
        for c in sent
        if (t := terminal(events, c))
    )
    print(f"outcomes across the kill: {dict(outcomes)}")
    lost = [c for c in sent if not terminal(events, c)]
    assert lost == [], lost
    twice = [c for c in sent if len(terminal(events, c)) > 1]
    assert twice == [], twice
    assert [e for e in events if isinstance(e, SessionReconnected)] == []
    stats = await simulator.admin.liveavatar_stats()
    for name in names:
        created = next(e for e in events if isinstance(e, SessionCreated) and e.session_id == name)
        row = stats.sessions[created.heygen_session_id]
        # Speaks that may have reached the avatar: answered started, or failed (cut mid-call).
        may_have_run = [
            c
            for c in sent
            if isinstance(c, SessionSpeak)
            and c.session_id == name
            and any(isinstance(e, SpeechStarted | CommandFailed) for e in terminal(events, c))
        ]
        assert row.commands <= len(may_have_run), (name, row.commands, len(may_have_run))
        assert row.status != "active"
    after = [c for c in sent if isinstance(c, SessionSpeak) and c.text.endswith("after the kill")]
    assert all(isinstance(terminal(events, c)[0], SpeechStarted) for c in after)


# --- reconciliation with LiveAvatar's active list ----------------------------------------


@pytest.mark.parametrize(
    "worker_overrides",
    [{"reap_unknown_sessions": True, "leak_grace_s": 0.3, "reconcile_interval_s": 0.2}],
)
async def test_a_leaked_liveavatar_session_is_stopped_by_reconciliation(
    producer: Producer, simulator: RunningSimulator, worker: Worker
) -> None:
    owned = await producer.call(la_create("la-owned"))
    assert isinstance(owned, SessionReady)
    assert worker.services is not None
    # A session nobody owns, as a crashed worker would leave behind (live and billing).
    leaked = await worker.services.providers["liveavatar"].create(
        SessionProfile(avatar_id=LIVEAVATAR_AVATAR)
    )

    async def reaped() -> bool:
        rows = (await simulator.admin.liveavatar_stats()).sessions
        return rows[leaked.provider_session_id].status != "active"

    await wait_until(reaped, 10)
    assert await live_sessions(simulator) == [owned.heygen_session_id]
    assert worker.metrics.leaked_sessions_stopped_total._value.get() == 1
