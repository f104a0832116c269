"""The simulator's LITE ws_url, driven as a raw WebSocket: what it drops, when it speaks, how it
ends. The worker's side is tested over the bus in tests/integration/test_liveavatar_lite.py."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.server import RunningSimulator, running_simulator
from tests.unit.test_liveavatar_simulator import AVATAR, KEY, bearer, settings

Message = dict[str, Any]


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    lite = settings(lite_connect_delay_s=0.1, speak_start_delay_s=0.02)
    async with running_simulator(liveavatar=lite) as running:
        yield running


async def lite_session(sim: RunningSimulator) -> dict[str, Any]:
    async with aiohttp.ClientSession(base_url=sim.base_url, headers=KEY) as http:
        async with http.post("/v1/sessions/token", json={"mode": "LITE", "avatar_id": AVATAR}) as r:
            token = (await r.json())["data"]
        headers = bearer(token["session_token"])
        async with http.post("/v1/sessions/start", headers=headers) as answer:
            assert answer.status == 201
            data: dict[str, Any] = (await answer.json())["data"]
    assert "livekit_agent_token" not in data
    return data


async def next_of(socket: aiohttp.ClientWebSocketResponse, kind: str) -> Message:
    while True:
        message: Message = await socket.receive_json(timeout=5)
        if message["type"] == kind:
            return message


def speak(event_id: str, seconds: float) -> Message:
    audio = base64.b64encode(bytes(int(seconds * 48_000))).decode()
    return {"type": "agent.speak", "event_id": event_id, "audio": audio}


async def test_early_messages_are_dropped_and_speech_lasts_as_long_as_its_audio(
    sim: RunningSimulator,
) -> None:
    started = await lite_session(sim)
    async with aiohttp.ClientSession() as http, http.ws_connect(started["ws_url"]) as socket:
        assert (await socket.receive_json())["state"] == "connecting"
        await socket.send_json(speak("early", 0.5))  # before `connected`: lost silently
        assert (await next_of(socket, "session.state_updated"))["state"] == "connected"
        await socket.send_json(speak("u1", 0.5))
        await socket.send_json(speak("u1", 0.3))
        await socket.send_json({"type": "agent.speak_end", "event_id": "u1"})
        began = time.monotonic()
        assert (await next_of(socket, "agent.speak_started"))["event_id"] == "u1"
        assert (await next_of(socket, "agent.speak_ended"))["event_id"] == "u1"
        assert time.monotonic() - began >= 0.7  # 0.8 s of audio, less the start delay
    stats = (await sim.admin.liveavatar_stats()).sessions[started["session_id"]].lite
    assert stats is not None
    assert (stats.dropped_early, stats.audio_chunks, stats.speak_ends) == (1, 2, 1)


async def test_interrupt_bad_audio_and_the_wrong_event_ids_are_told_apart(
    sim: RunningSimulator,
) -> None:
    await sim.admin.configure_liveavatar(lite_event_id_per="utterance")
    started = await lite_session(sim)
    async with aiohttp.ClientSession() as http, http.ws_connect(started["ws_url"]) as socket:
        await next_of(socket, "session.state_updated")
        await next_of(socket, "session.state_updated")
        await socket.send_json({"type": "agent.speak", "event_id": "u", "audio": "AAA"})  # odd
        await socket.send_json(speak("u", 1.0))
        await socket.send_json(speak("other", 1.0))  # per utterance: one id for its chunks
        await next_of(socket, "agent.speak_started")
        await socket.send_json({"type": "agent.interrupt", "event_id": "i"})
        assert (await next_of(socket, "agent.speak_interrupted"))["event_id"] == "i"
    stats = (await sim.admin.liveavatar_stats()).sessions[started["session_id"]].lite
    assert stats is not None
    assert (stats.protocol_errors, stats.interrupts, stats.audio_chunks) == (2, 1, 2)


async def test_a_socket_without_keep_alives_is_closed_when_the_session_idles_out(
    sim: RunningSimulator,
) -> None:
    await sim.admin.configure_liveavatar(idle_timeout_s=0.5)
    started = await lite_session(sim)
    async with aiohttp.ClientSession() as http, http.ws_connect(started["ws_url"]) as socket:
        states = [m["state"] async for m in _states(socket)]
    assert states[-2:] == ["closing", "closed"]
    row = (await sim.admin.liveavatar_stats()).sessions[started["session_id"]]
    assert row.end_reason == "IDLE_TIMEOUT"


async def _states(socket: aiohttp.ClientWebSocketResponse) -> AsyncIterator[Message]:
    async for frame in socket:
        if frame.type is aiohttp.WSMsgType.TEXT:
            message: Message = frame.json()
            if message["type"] == "session.state_updated":
                yield message


async def test_the_ws_url_is_refused_once_the_session_ended(sim: RunningSimulator) -> None:
    started = await lite_session(sim)
    async with aiohttp.ClientSession(base_url=sim.base_url, headers=KEY) as http:
        body = {"session_id": started["session_id"]}
        async with http.post("/v1/sessions/stop", json=body) as answer:
            assert answer.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(started["ws_url"])
    assert refused.value.status == 401
