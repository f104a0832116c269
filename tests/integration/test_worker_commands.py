"""Every command end to end: real RabbitMQ, the simulator, an in-process worker."""

from __future__ import annotations

from contracts.commands import (
    SessionCreate,
    SessionKeepalive,
    SessionSpeak,
    SessionStop,
)
from contracts.events import SessionCreated, SessionStopped, SpeechStarted
from tests.integration.conftest import Producer


def create(session_id: str, **kw: object) -> SessionCreate:
    return SessionCreate(session_id=session_id, avatar_id="Wayne_20240711", **kw)


async def test_create_speak_stop(producer: Producer) -> None:
    ready = await producer.call(create("s1"))
    assert ready.type == "session.ready"
    created = next(e for e in producer.tap.of("s1") if isinstance(e, SessionCreated))
    assert created.url and created.access_token and created.heygen_session_id
    started = await producer.call(SessionSpeak(session_id="s1", text="Hello there, how are you?"))
    assert isinstance(started, SpeechStarted)
    assert started.task_id and started.duration_ms and started.duration_ms > 0
    done = await producer.call(SessionKeepalive(session_id="s1"))
    assert done.type == "command.completed"
    stopped = await producer.call(SessionStop(session_id="s1", reason="bye"))
    assert isinstance(stopped, SessionStopped)
    assert stopped.reason == "requested"
    assert stopped.usage.tasks == 1
    assert stopped.usage.characters == len("Hello there, how are you?")
    seqs = [e.seq for e in producer.tap.of("s1")]
    assert seqs == list(range(1, len(seqs) + 1))
