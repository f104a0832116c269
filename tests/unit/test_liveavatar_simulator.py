"""The LiveAvatar simulator over HTTP and its room stand-in's socket: lifecycle, auth, 422s,
pagination, idle and duration ends, credits, speech timing, the user's voice, faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from simulator.liveavatar import LiveAvatarSettings
from simulator.server import RunningSimulator, running_simulator

AVATAR = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"
PERSONA = {"voice_id": "v1", "language": "en"}
KEY = {"X-API-KEY": "la-key"}

Packet = dict[str, Any]


def settings(**overrides: Any) -> LiveAvatarSettings:
    return LiveAvatarSettings(**{"sweep_interval_s": 0.05, "speak_start_delay_s": 0, **overrides})


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(liveavatar=settings()) as running:
        yield running


@pytest.fixture
async def api(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, headers=KEY) as client:
        yield client


def data_of(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["code"], body["message"]) == (1000, "Success")
    return body["data"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_token(api: httpx.AsyncClient, **body: Any) -> dict[str, str]:
    request = {"mode": "FULL", "avatar_id": AVATAR, "avatar_persona": PERSONA, **body}
    data: dict[str, str] = data_of(await api.post("/v1/sessions/token", json=request))
    return data


async def started(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    token = await new_token(api, **body)
    answer = await api.post("/v1/sessions/start", headers=bearer(token["session_token"]))
    data: dict[str, Any] = data_of(answer, 201)
    return {**data, "session_token": token["session_token"]}


async def credits_left(api: httpx.AsyncClient) -> float:
    return float(data_of(await api.get("/v1/users/credits"))["credits_left"])


class Room:
    """The worker's side of the room stand-in, as a test drives it."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket

    async def send(self, event_type: str, **fields: Any) -> str:
        event_id = f"cmd-{time.monotonic_ns()}"
        await self.socket.send_str(
            json.dumps({"event_id": event_id, "event_type": event_type, **fields})
        )
        return event_id

    async def next(self, within: float = 3.0) -> Packet:
        message = await self.socket.receive(timeout=within)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        packet: Packet = json.loads(message.data)
        return packet

    async def until(self, event_type: str) -> Packet:
        while (packet := await self.next())["event_type"] != event_type:
            pass
        return packet


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def join(http: aiohttp.ClientSession, session: dict[str, Any]) -> Room:
    socket = await http.ws_connect(
        session["livekit_url"], headers=bearer(session["livekit_agent_token"])
    )
    return Room(socket)


async def test_full_lifecycle_with_key_and_bearer(api: httpx.AsyncClient) -> None:
    before = await credits_left(api)
    session = await started(api, video_settings={"quality": "very_high"})
    sid = session["session_id"]
    assert session["livekit_url"].startswith("ws://")
    assert session["livekit_client_token"] != session["livekit_agent_token"]
    assert session["max_session_duration"] == 3600
    assert await credits_left(api) == before - 2  # one FULL minute held at start

    data_of(await api.post("/v1/sessions/keep-alive", json={"session_id": sid}))
    data_of(
        await api.post(
            "/v1/sessions/keep-alive",
            json={"session_id": sid},
            headers={"X-API-KEY": "", **bearer(session["session_token"])},
        )
    )
    active = data_of(await api.get("/v1/sessions", params={"type": "active"}))
    assert [row["id"] for row in active["results"]] == [sid]
    row = data_of(await api.get(f"/v1/sessions/{sid}"))
    assert (row["mode"], row["credits_consumed"]) == ("FULL", "2.00")

    data_of(
        await api.post("/v1/sessions/stop", json={"session_id": sid, "reason": "AGENT_HANG_UP"})
    )
    historic = data_of(await api.get("/v1/sessions", params={"type": "historic"}))
    assert historic["results"][0]["end_reason"] == "AGENT_HANG_UP"
    assert historic["results"][0]["end_at"]
    answer = await api.post("/v1/sessions/keep-alive", json={"session_id": sid})
    assert answer.status_code == 400


async def test_success_code_is_configurable(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    await sim.admin.configure_liveavatar(success_code=100)
    body = (await api.get("/v1/users/credits")).json()
    assert body["code"] == 100


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"mode": "FULL", "avatar_persona": PERSONA}, ["body", "avatar_id"]),
        (
            {"mode": "FULL", "avatar_id": "not-a-uuid", "avatar_persona": PERSONA},
            ["body", "avatar_id"],
        ),
        ({"mode": "FULL", "avatar_id": AVATAR}, ["body", "avatar_persona"]),
        ({"mode": "HALF", "avatar_id": AVATAR, "avatar_persona": PERSONA}, ["body", "mode"]),
        (
            {
                "avatar_id": AVATAR,
                "avatar_persona": PERSONA,
                "video_settings": {"quality": "ultra"},
            },
            ["body", "video_settings", "quality"],
        ),
    ],
)
async def test_invalid_token_body_is_422_with_fastapi_detail(
    api: httpx.AsyncClient, body: dict[str, Any], loc: list[str]
) -> None:
    answer = await api.post("/v1/sessions/token", json=body)
    assert answer.status_code == 422
    assert [d["loc"] for d in answer.json()["detail"]] == [loc]


async def test_stop_reason_and_list_query_are_validated(api: httpx.AsyncClient) -> None:
    session = await started(api)
    answer = await api.post(
        "/v1/sessions/stop", json={"session_id": session["session_id"], "reason": "BORED"}
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "reason"]
    answer = await api.get("/v1/sessions", params={"type": "all"})
    assert answer.json()["detail"][0]["loc"] == ["query", "type"]


async def test_start_takes_only_the_session_token(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    token = await new_token(api)
    assert (await api.post("/v1/sessions/start")).status_code == 401
    assert (await api.post("/v1/sessions/start", headers=bearer("forged"))).status_code == 401
    async with httpx.AsyncClient(base_url=sim.base_url) as anonymous:
        assert (await anonymous.post("/v1/sessions/token", json={})).status_code == 401
    first = await started(api)
    answer = await api.post(
        "/v1/sessions/keep-alive",
        json={"session_id": first["session_id"]},
        headers=bearer(token["session_token"]),
    )
    assert answer.status_code == 403  # a session token is for its own session only


async def test_configured_keys_are_enforced() -> None:
    async with (
        running_simulator(liveavatar=settings(api_keys="good")) as sim,
        httpx.AsyncClient(base_url=sim.base_url) as api,
    ):
        assert (await api.get("/v1/users/credits", headers={"X-API-KEY": "bad"})).status_code == 401
        assert (
            await api.get("/v1/users/credits", headers={"X-API-KEY": "good"})
        ).status_code == 200


async def test_active_list_is_paginated(api: httpx.AsyncClient) -> None:
    ids = [(await started(api))["session_id"] for _ in range(5)]
    first = data_of(await api.get("/v1/sessions", params={"type": "active", "page_size": 2}))
    assert first["count"] == 5
    assert first["previous"] is None
    assert "page=2" in first["next"]
    seen = [row["id"] for row in first["results"]]
    page = 2
    while True:
        answer = data_of(
            await api.get("/v1/sessions", params={"type": "active", "page": page, "page_size": 2})
        )
        seen += [row["id"] for row in answer["results"]]
        if answer["next"] is None:
            break
        page += 1
    assert seen == ids[::-1]  # newest first, every session once
    assert page == 3


async def test_idle_sessions_end_and_keep_alive_defers_it(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.configure_liveavatar(idle_timeout_s=0.4)
    kept, idle = (await started(api))["session_id"], (await started(api))["session_id"]
    for _ in range(4):
        await asyncio.sleep(0.15)
        data_of(await api.post("/v1/sessions/keep-alive", json={"session_id": kept}))
    stats = await sim.admin.liveavatar_stats()
    assert stats.sessions[idle].end_reason == "IDLE_TIMEOUT"
    assert stats.sessions[kept].status == "active"
    assert stats.sessions[kept].keep_alives == 4


async def test_max_duration_ends_the_session(
    sim: RunningSimulator, api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    session = await started(api, max_session_duration=1)
    assert session["max_session_duration"] == 1
    room = await join(http, session)
    stopped = await room.until("session.stopped")
    assert stopped["end_reason"] == "MAX_DURATION_REACHED"
    assert (await room.socket.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE


async def test_credits_are_held_billed_and_run_out(
    sim: RunningSimulator, api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    await sim.admin.configure_liveavatar(billing_period_s=0.3)
    await sim.admin.set_credits(5)
    session = await started(api)
    assert await credits_left(api) == 3
    room = await join(http, session)
    stopped = await room.until("session.stopped")
    assert stopped["end_reason"] == "NO_CREDITS"
    row = data_of(await api.get(f"/v1/sessions/{session['session_id']}"))
    assert (row["credits_consumed"], row["end_reason"]) == ("4.00", "NO_CREDITS")
    assert await credits_left(api) == 1
    answer = await api.post(
        "/v1/sessions/start", headers=bearer((await new_token(api))["session_token"])
    )
    assert answer.status_code == 402  # not even the minute held at start


async def test_sandbox_sessions_cost_nothing(api: httpx.AsyncClient) -> None:
    before = await credits_left(api)
    session = await started(api, is_sandbox=True)
    assert session["max_session_duration"] == 60
    assert await credits_left(api) == before


async def test_speech_is_observed_queued_and_interrupted(
    api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    session = await started(api)
    room = await join(http, session)
    first = await room.send(
        "avatar.speak_text", session_id=session["session_id"], text="one two three"
    )
    began = time.monotonic()
    started_packet = await room.next()
    assert started_packet["event_type"] == "avatar.speak_started"
    assert started_packet["source_event_id"] == first
    assert started_packet["session_id"] == session["session_id"]
    assert (await room.next())["text"] == "one two three"  # avatar.transcription
    ended = await room.until("avatar.speak_ended")
    assert ended["source_event_id"] == first
    assert time.monotonic() - began == pytest.approx(1.2, abs=0.3)  # 3 words at 150 a minute

    talk = await room.send("avatar.speak_response", text="hello there")
    queued = await room.send("avatar.speak_text", text="never said at all")
    assert (await room.until("avatar.speak_started"))["source_event_id"] == talk
    assert (await room.next())["text"] == "You said: hello there"
    await room.send("avatar.interrupt")
    cut = await room.next()
    assert (cut["event_type"], cut["source_event_id"]) == ("avatar.speak_ended", talk)
    with pytest.raises(TimeoutError):
        await room.next(within=0.5)  # the queued speech was dropped
    assert queued


async def test_user_utterance_reaches_the_room(
    sim: RunningSimulator, api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    session = await started(api)
    room = await join(http, session)
    await sim.admin.inject_utterance(session["session_id"], "what time is it", duration_s=0.1)
    kinds = [(await room.next())["event_type"] for _ in range(3)]
    assert kinds == ["user.speak_started", "user.speak_ended", "user.transcription"]


async def test_stop_says_session_stopped_and_closes_the_room(
    api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    session = await started(api)
    room = await join(http, session)
    await room.send("avatar.speak_text", text="a long speech " * 20)
    await room.until("avatar.speak_started")
    data_of(await api.post("/v1/sessions/stop", json={"session_id": session["session_id"]}))
    assert (await room.until("avatar.speak_ended"))["event_type"] == "avatar.speak_ended"
    assert (await room.next())["end_reason"] == "USER_CLOSED"
    assert (await room.socket.receive(timeout=2)).type is aiohttp.WSMsgType.CLOSE
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await join(http, session)
    assert refused.value.status == 401  # the agent token died with the session


async def test_server_errors_and_stalls_on_token_and_start(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.add_liveavatar_fault("sessions.token", status=503, count=1)
    assert (await api.post("/v1/sessions/token", json={})).status_code == 503
    await sim.admin.add_liveavatar_fault("sessions.start", hang_s=5, count=1)
    token = await new_token(api)
    with pytest.raises(httpx.ReadTimeout):
        await api.post("/v1/sessions/start", headers=bearer(token["session_token"]), timeout=0.3)


async def test_a_start_whose_answer_is_lost_still_bills(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.add_liveavatar_fault("sessions.start", status=500, apply_first=True, count=1)
    token = await new_token(api)
    answer = await api.post("/v1/sessions/start", headers=bearer(token["session_token"]))
    assert answer.status_code == 500
    stats = await sim.admin.liveavatar_stats()
    assert stats.sessions[token["session_id"]].status == "active"
    data_of(await api.post("/v1/sessions/stop", json={"session_id": token["session_id"]}))


async def test_room_faults_refuse_and_drop_the_socket(
    sim: RunningSimulator, api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    session = await started(api)
    await sim.admin.add_liveavatar_fault("room", status=503, count=1)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await join(http, session)
    assert refused.value.status == 503
    room = await join(http, session)
    assert await sim.admin.drop_room(session["session_id"]) == 1
    message = await room.socket.receive(timeout=2)
    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    again = await join(http, session)  # the session lives on; the worker may join again
    await again.send("avatar.speak_text", text="back")
    assert (await again.next())["event_type"] == "avatar.speak_started"


async def test_reset_and_clearing_faults_cover_liveavatar_too(
    sim: RunningSimulator, api: httpx.AsyncClient, http: aiohttp.ClientSession
) -> None:
    await sim.admin.configure_liveavatar(idle_timeout_s=99)
    await sim.admin.set_credits(7)
    session = await started(api)
    room = await join(http, session)
    await sim.admin.add_liveavatar_fault("users.credits", status=500)
    await sim.admin.clear_faults()
    assert await credits_left(api) == 5
    await sim.admin.reset()
    assert (await room.until("session.stopped"))["end_reason"] == "SERVER_ERROR"
    stats = await sim.admin.liveavatar_stats()
    assert (stats.sessions, stats.calls) == ({}, {})
    assert await credits_left(api) == 1000
    assert (await sim.admin.configure_liveavatar())["idle_timeout_s"] == 300
