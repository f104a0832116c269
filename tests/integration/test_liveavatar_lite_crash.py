"""A worker SIGKILLed mid-utterance (LITE): every part is answered once, what the avatar got is
never sent again, the rest of the utterance fails (`interrupted`), the next one is spoken."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from pathlib import Path

from aio_pika.abc import AbstractRobustConnection

from contracts.commands import CommandBase
from contracts.common import LiveAvatarMode
from contracts.events import (
    CommandCompleted,
    CommandFailed,
    SessionCreated,
    SessionReady,
    SessionReconnected,
    SpeechStarted,
)
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    LIVEAVATAR_KEY,
    answer_to,
    la_create,
    tapped_producer,
    wait_until,
    worker_process,
)
from tests.integration.lite import lite_stats, parts


async def test_sigkill_mid_utterance_sends_no_chunk_twice_and_fails_the_rest(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    tmp_path: Path,
) -> None:
    env = {
        "LIVEAVATAR_API_KEY": LIVEAVATAR_KEY,
        "LIVEAVATAR_BASE_URL": simulator.base_url,
        "LIVEAVATAR_LITE_LEAD_S": "0.5",  # sent about as fast as spoken: the kill lands mid-way
        "WORKER_SHUTDOWN_GRACE_S": "2",
    }
    utterance = parts("lite-kill", "long", [0.5] * 10)
    async with worker_process(amqp_url, simulator, tmp_path / "w1.log", **env) as w1:
        await w1.wait_ready()
        producer = await tapped_producer(connection)
        create = la_create("lite-kill", mode=LiveAvatarMode.LITE)
        assert isinstance(await producer.call(create, timeout=20), SessionReady)
        for part in utterance:
            await producer.send(part)
        await producer.tap.wait_count(lambda e: isinstance(e, CommandCompleted), 3, timeout=20)
        w1.process.kill()
        await w1.wait()
    created = next(e for e in producer.tap.events if isinstance(e, SessionCreated))
    before = await lite_stats(simulator, created.heygen_session_id)
    after_kill = parts("lite-kill", "next", [0.4])
    async with worker_process(amqp_url, simulator, tmp_path / "w2.log", **env) as w2:
        await w2.wait_ready()
        sent: list[CommandBase] = [*utterance, *after_kill]
        await producer.send(after_kill[0])

        def answered() -> bool:
            return all(any(answer_to(c)(e) for e in producer.tap.events) for c in sent)

        await wait_until(answered, 40)
        await producer.tap.wait_for(
            lambda e: isinstance(e, SpeechStarted) and e.task_id == "next", timeout=20
        )
        assert w2.process.returncode is None, w2.log()

    events = producer.tap.events
    # An event re-published by the next owner (its publish was not confirmed) keeps its
    # event_id: consumers deduplicate on it, and so does this count.
    answers = {
        c.command_id: list({e.event_id: e for e in events if answer_to(c)(e)}.values())
        for c in sent
    }
    twice = {
        key: [f"{e.type}:{getattr(e, 'code', '')}" for e in found]
        for key, found in answers.items()
        if len(found) != 1
    }
    assert twice == {}, twice
    outcome = Counter(type(answers[c.command_id][0]).__name__ for c in utterance)
    print(f"parts across the kill: {dict(outcome)}; avatar before the restart: {before}")
    completed = [c for c in utterance if isinstance(answers[c.command_id][0], CommandCompleted)]
    failed = [answers[c.command_id][0] for c in utterance if c not in completed]
    # Completed parts come first; after them, every part fails as interrupted.
    assert utterance[: len(completed)] == completed
    assert failed
    assert all(isinstance(f, CommandFailed) and f.code == "interrupted" for f in failed), failed
    assert isinstance(answers[after_kill[0].command_id][0], CommandCompleted)
    stats = await lite_stats(simulator, created.heygen_session_id)
    assert stats.duplicate_chunks == 0
    # The avatar got the completed parts, and at most the one cut mid-call besides.
    got = stats.audio_bytes - len(base64.b64decode(after_kill[0].audio))
    done = sum(len(base64.b64decode(c.audio)) for c in completed)
    assert done <= got <= done + 24_000
    assert stats.audio_bytes == before.audio_bytes + len(base64.b64decode(after_kill[0].audio))
    # The inherited utterance was ended at the avatar, so the next one was spoken cleanly.
    assert stats.protocol_errors == 0
    assert [e for e in events if isinstance(e, SessionReconnected)] == []
    await asyncio.sleep(0)
