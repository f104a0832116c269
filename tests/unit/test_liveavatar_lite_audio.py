"""LITE's chunking, pacing and event ids, without a socket."""

from __future__ import annotations

import asyncio
import time

from worker.providers.base import SpeechEnded, SpeechStarted
from worker.providers.liveavatar import lite_messages
from worker.providers.liveavatar.audio import Utterance
from worker.providers.liveavatar.lite_messages import EventIds

SECOND = 48_000


def test_the_first_chunk_is_half_a_second_then_one_second_each() -> None:
    utterance = Utterance("u")
    first = list(utterance.split(bytes(int(2.2 * SECOND))))
    assert [len(c) for c in first] == [SECOND // 2, SECOND, SECOND * 7 // 10]
    for chunk in first:
        utterance.sent(chunk)
    # A later part continues with whole seconds: no second half-second start.
    assert [len(c) for c in utterance.split(bytes(SECOND + 10))] == [SECOND, 10]
    assert utterance.chunks == 3
    assert abs(utterance.sent_s - 2.2) < 1e-9


async def test_pacing_waits_until_within_the_lead_and_an_interrupt_ends_the_wait() -> None:
    utterance = Utterance("u")
    utterance.sent(bytes(3 * SECOND))  # 3 s sent at once
    began = time.monotonic()
    assert await utterance.paced(lead_s=2.8)
    assert 0.15 <= time.monotonic() - began < 1.0
    asyncio.get_running_loop().call_later(0.1, utterance.cut.set)
    began = time.monotonic()
    assert not await utterance.paced(lead_s=0.5)  # would wait ~2.5 s; the cut ends it
    assert time.monotonic() - began < 1.0


def test_event_ids_per_utterance_or_per_chunk_name_the_utterance_back() -> None:
    shared, per_chunk = EventIds("utterance"), EventIds("chunk")
    assert shared.chunk("u:1", 3) == shared.end("u:1") == "u:1"
    assert (per_chunk.chunk("u:1", 3), per_chunk.end("u:1")) == ("u:1:3", "u:1:end")
    started = {"type": "agent.speak_started", "event_id": "u:1:0", "task": {"id": "t"}}
    ended = {"type": "agent.speak_ended", "event_id": "u:1:end"}
    assert lite_messages.observed(started, "s", per_chunk) == SpeechStarted("s", "u:1")
    assert lite_messages.observed(ended, "s", per_chunk) == SpeechEnded("s", "u:1")
    assert lite_messages.observed({"type": "session.state_updated"}, "s", shared) is None


def test_a_chunk_is_base64_pcm_under_its_event_id() -> None:
    message = lite_messages.speak("u", b"\x01\x00\xff\x7f")
    assert message == {"type": "agent.speak", "event_id": "u", "audio": "AQD/fw=="}
