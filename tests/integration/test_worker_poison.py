"""Poison input of every kind is dead-lettered with its reason, answered when possible, and
never stops the worker or the commands around it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from contracts.commands import SessionSpeak
from contracts.events import CommandRejected, SpeechStarted
from contracts.topology import DEAD_LETTER_QUEUE
from tests.integration.conftest import (
    HttpLog,
    Producer,
    assert_seq_contiguous,
    drained,
    queue_depth,
    reply_event,
    take_messages,
)
from worker.app import Worker

LIVE = "clean"
MAX_BYTES = 1024

pytestmark = pytest.mark.parametrize("worker_overrides", [{"max_message_bytes": MAX_BYTES}])


def speak_body(**changes: Any) -> dict[str, Any]:
    return {"type": "session.speak", "session_id": LIVE, "text": "hello", **changes}


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Poison:
    name: str
    body: bytes
    reason: str
    # Where the worker can answer: the session's events and/or the AMQP reply_to.
    session_id: str | None = None
    reply: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


POISONS = [
    Poison("non-utf8", b'{"type": "session.speak", "text": "\xff\xfe"}', "undecodable", reply=True),
    Poison("invalid-json", b'{"type": "session.speak", "session_id": "clean", ', "undecodable"),
    Poison("not-an-object", b'["session.speak"]', "undecodable"),
    Poison(
        "text-plain",
        encoded(speak_body()),
        "content_type",
        reply=True,
        properties={"content_type": "text/plain"},
    ),
    Poison(
        "unknown-type", encoded(speak_body(type="session.dance")), "unknown_type", session_id=LIVE
    ),
    Poison(
        "type-mismatch",
        encoded(speak_body()),
        "type_mismatch",
        session_id=LIVE,
        properties={"type": "session.stop"},
    ),
    Poison(
        "voice-rate",
        encoded(
            {
                "type": "session.create",
                "session_id": "never-made",
                "avatar_id": "Wayne_20240711",
                "voice": {"rate": 9},
            }
        ),
        "schema",
        session_id="never-made",
    ),
    Poison("blank-text", encoded(speak_body(text="   ")), "schema", session_id=LIVE),
    Poison("oversized", encoded(speak_body(text="x" * MAX_BYTES)), "oversized", reply=True),
]


async def test_poison_is_dead_lettered_and_traffic_flows(
    producer: Producer,
    worker: Worker,
    http_log: HttpLog,
    connection: AbstractRobustConnection,
) -> None:
    await producer.open_session(LIVE)
    normal: list[SessionSpeak] = []
    async with producer.inbox() as inbox:
        for poison in POISONS:
            properties = {"content_type": "application/json", **poison.properties}
            if poison.reply:
                properties["reply_to"] = inbox.name
            await producer.publish_raw(
                poison.body, LIVE, message_id=poison.name, correlation_id=poison.name, **properties
            )
            command = SessionSpeak(session_id=LIVE, text=f"after {poison.name}")
            await producer.send(command)
            normal.append(command)

        # Normal traffic in between is unaffected, in order.
        answers = await producer.tap.answers(normal)
        assert all(isinstance(a, SpeechStarted) for a in answers), answers
        assert [x.body["text"] for x in http_log.of("streaming.task")] == [c.text for c in normal]

        dead = {
            m.message_id: m
            for m in await take_messages(connection, DEAD_LETTER_QUEUE, len(POISONS))
        }
        assert set(dead) == {p.name for p in POISONS}
        for poison in POISONS:
            message = dead[poison.name]
            headers = message.headers or {}
            assert headers.get("x-dead-letter-reason") == poison.reason, poison.name
            assert headers.get("x-dead-letter-detail"), poison.name
            assert message.body == poison.body, poison.name

        await producer.settle()
        rejections = {
            e.correlation_id: e for e in producer.tap.events if isinstance(e, CommandRejected)
        }
        for poison in POISONS:
            rejected = rejections.get(poison.name)
            if poison.session_id is None and not poison.reply:
                assert rejected is None, poison.name
                continue
            assert isinstance(rejected, CommandRejected), poison.name
            assert (rejected.code, rejected.session_id) == ("validation", poison.session_id)
            assert rejected.causation_id == poison.name
        replies = [reply_event(await inbox.next()) for p in POISONS if p.reply]
        assert sorted(r.correlation_id or "" for r in replies) == sorted(
            p.name for p in POISONS if p.reply
        )

    await drained(connection, worker)
    assert await queue_depth(connection, DEAD_LETTER_QUEUE) == 0
    assert worker.readiness() == (True, "ready")
    # The mismatched "session.stop" body was a speak: the session lives on.
    assert (await producer.call(SessionSpeak(session_id=LIVE, text="still alive"))).type == (
        "speech.started"
    )
    assert_seq_contiguous(producer.tap.events)
