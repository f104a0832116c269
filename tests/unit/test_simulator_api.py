"""The simulator's HeyGen endpoints over HTTP: flows, envelopes, error codes, timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from simulator.app import create_app
from simulator.context import SIMULATOR
from simulator.server import RunningSimulator, running_simulator
from simulator.settings import SimulatorSettings
from simulator.state import CloseReason
from simulator.validation import parse_new


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(fault_seed=7) as running:
        yield running


@pytest.fixture
async def api(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with sim.client() as client:
        yield client


def assert_error(response: httpx.Response, status: int, code: int) -> None:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code, response.text


async def data_of(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["message"]) == (100, "success")
    return body["data"]


async def new_v2(api: httpx.AsyncClient, *, start: bool = True, **body: Any) -> str:
    data = await data_of(
        await api.post("/v1/streaming.new", json={"avatar_id": "Wayne", "version": "v2", **body})
    )
    session_id: str = data["session_id"]
    if start:
        await data_of(await api.post("/v1/streaming.start", json={"session_id": session_id}))
    return session_id


async def test_v2_flow(api: httpx.AsyncClient) -> None:
    created = await data_of(
        await api.post(
            "/v1/streaming.new",
            json={
                "avatar_id": "Wayne",
                "version": "v2",
                "quality": "high",
                "video_encoding": "H264",
                "voice": {"voice_id": "v1", "rate": 1.2, "emotion": "Friendly"},
                "activity_idle_timeout": 300,
                "knowledge_base": "You are helpful.",
            },
        )
    )
    assert set(created) == {
        "session_id",
        "url",
        "access_token",
        "realtime_endpoint",
        "session_duration_limit",
        "is_paid",
    }
    assert created["url"].startswith("wss://")
    sid = created["session_id"]
    listed = await data_of(await api.get("/v1/streaming.list"))
    assert listed["sessions"][0]["session_id"] == sid
    assert listed["sessions"][0]["status"] == "new"
    assert isinstance(listed["sessions"][0]["created_at"], int)

    assert await data_of(await api.post("/v1/streaming.start", json={"session_id": sid})) is None
    task = await data_of(
        await api.post(
            "/v1/streaming.task",
            json={
                "session_id": sid,
                "text": "one two three",
                "task_type": "repeat",
                "task_mode": "async",
            },
        )
    )
    assert task["duration_ms"] == round(3 * 60_000 / (150 * 1.2))
    assert task["task_id"]
    for endpoint in ("streaming.interrupt", "streaming.keep_alive", "streaming.stop"):
        assert await data_of(await api.post(f"/v1/{endpoint}", json={"session_id": sid})) is None
    assert (await data_of(await api.get("/v1/streaming.list")))["sessions"] == []


async def test_v1_flow_with_sdp_and_ice(api: httpx.AsyncClient) -> None:
    created = await data_of(await api.post("/v1/streaming.new", json={"avatar_name": "Anna"}))
    assert set(created) == {"session_id", "sdp", "ice_servers", "ice_servers2"}
    assert created["sdp"]["type"] == "offer"
    assert created["sdp"]["sdp"].startswith("v=0")
    assert created["ice_servers2"][0]["urls"]
    sid = created["session_id"]
    no_answer = await api.post("/v1/streaming.start", json={"session_id": sid})
    assert_error(no_answer, 400, 40001)
    candidate = {
        "candidate": "candidate:1 1 UDP 1 10.0.0.1 9 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
        "usernameFragment": "abc",
    }
    await data_of(
        await api.post("/v1/streaming.ice", json={"session_id": sid, "candidate": candidate})
    )
    answer = {"type": "answer", "sdp": "v=0\r\n"}
    await data_of(await api.post("/v1/streaming.start", json={"session_id": sid, "sdp": answer}))
    await data_of(
        await api.post("/v1/streaming.ice", json={"session_id": sid, "candidate": candidate})
    )
    bad_ice = await api.post("/v1/streaming.ice", json={"session_id": sid, "candidate": {}})
    assert_error(bad_ice, 400, 40001)
    v2 = await new_v2(api)
    assert_error(
        await api.post("/v1/streaming.ice", json={"session_id": v2, "candidate": candidate}),
        400,
        40001,
    )


async def test_every_call_on_a_closed_or_unknown_session_is_400006(api: httpx.AsyncClient) -> None:
    sid = await new_v2(api)
    await data_of(await api.post("/v1/streaming.stop", json={"session_id": sid}))
    for target, message in (
        (sid, "Session state wrong: closed"),
        ("no-such-session", "Session is not in correct state"),
    ):
        for endpoint, extra in (
            ("streaming.start", {}),
            ("streaming.task", {"text": "hello"}),
            ("streaming.interrupt", {}),
            ("streaming.keep_alive", {}),
            ("streaming.stop", {}),
        ):
            response = await api.post(f"/v1/{endpoint}", json={"session_id": target, **extra})
            assert_error(response, 400, 400006)
            assert response.json()["message"] == message


async def test_task_before_start_fails_and_connect_delay_is_honoured(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.configure(connect_delay_s=0.3)
    sid = await new_v2(api, start=False)
    task = {"session_id": sid, "text": "hi", "task_mode": "async"}
    assert_error(await api.post("/v1/streaming.task", json=task), 400, 400006)
    await data_of(await api.post("/v1/streaming.start", json={"session_id": sid}))
    assert (await data_of(await api.get("/v1/streaming.list")))["sessions"][0]["status"] == (
        "connecting"
    )
    assert_error(await api.post("/v1/streaming.task", json=task), 400, 400006)
    await asyncio.sleep(0.35)
    await data_of(await api.post("/v1/streaming.task", json=task))


async def test_authentication() -> None:
    settings = SimulatorSettings(port=0, api_keys=["good-key"], forbidden_keys=["no-access"])
    async with running_simulator(settings) as sim, httpx.AsyncClient(base_url=sim.base_url) as raw:
        assert sim.api_key == "good-key"
        assert "good-key" not in repr(sim)
        for headers in ({}, {"X-Api-Key": ""}, {"X-Api-Key": "wrong"}):
            response = await raw.get("/v1/streaming.list", headers=headers)
            assert_error(response, 401, 400112)
            assert response.json()["message"] == "Unauthorized"
        assert_error(
            await raw.get("/v1/streaming.list", headers={"X-Api-Key": "no-access"}), 403, 400599
        )
        await data_of(await raw.get("/v1/streaming.list", headers={"X-Api-Key": "good-key"}))


async def test_another_keys_session_is_unknown(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_v2(api)
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"X-Api-Key": "other"}) as other:
        keep = await other.post("/v1/streaming.keep_alive", json={"session_id": sid})
        assert_error(keep, 400, 400006)
        assert (await data_of(await other.get("/v1/streaming.list")))["sessions"] == []


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("streaming.new", {"avatar_id": "a", "quality": "4k"}),
        ("streaming.new", {"avatar_id": "a", "voice": {"rate": 0.4}}),
        ("streaming.new", {"avatar_id": "a", "voice": {"emotion": "Sad"}}),
        ("streaming.new", {"avatar_id": "a", "video_encoding": "H265"}),
        ("streaming.new", {"avatar_id": "a", "activity_idle_timeout": 5}),
        ("streaming.new", {"quality": "low"}),
        ("streaming.keep_alive", {}),
        ("streaming.stop", {"session_id": 5}),
        ("streaming.task", {"session_id": "s", "text": ""}),
        ("streaming.task", {"session_id": "s", "text": "   "}),
        ("streaming.task", {"session_id": "s", "text": "hi", "task_type": "sing"}),
        ("streaming.task", {"session_id": "s", "text": "hi", "task_mode": "later"}),
    ],
)
async def test_invalid_parameters_are_40001(
    api: httpx.AsyncClient, endpoint: str, body: dict[str, Any]
) -> None:
    assert_error(await api.post(f"/v1/{endpoint}", json=body), 400, 40001)


async def test_malformed_bodies_are_40001(api: httpx.AsyncClient) -> None:
    for content in (b"{not json", b"[1, 2]"):
        response = await api.post("/v1/streaming.new", content=content)
        assert_error(response, 400, 40001)


async def test_concurrency_limit(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    await sim.admin.configure(concurrency_limit=2)
    first = await new_v2(api)
    await new_v2(api, start=False)
    refused = await api.post("/v1/streaming.new", json={"avatar_id": "a", "version": "v2"})
    assert_error(refused, 400, 10013)
    assert refused.json()["message"] == "Concurrent session limit reached"
    await data_of(await api.post("/v1/streaming.stop", json={"session_id": first}))
    await new_v2(api)


async def test_create_token_and_avatar_list(api: httpx.AsyncClient) -> None:
    token = (await api.post("/v1/streaming.create_token", json={})).json()
    assert token["error"] is None
    assert len(token["data"]["token"]) > 20
    avatars = await data_of(await api.get("/v1/streaming/avatar.list"))
    assert {"avatar_id", "default_voice", "is_public", "status"} <= set(avatars[0])
    assert avatars[0]["avatar_id"] == "Wayne_20240711"


async def test_v2_list_is_a_paginated_history(api: httpx.AsyncClient) -> None:
    sessions = [await new_v2(api, start=False) for _ in range(5)]
    await data_of(await api.post("/v1/streaming.stop", json={"session_id": sessions[0]}))
    first = (await api.get("/v2/streaming.list", params={"page_size": 2})).json()
    assert (first["code"], first["total"], first["page"], first["page_size"]) == (100, 5, 1, 2)
    assert [s["session_id"] for s in first["data"]] == sessions[:2:-1][:2]
    assert {"status", "created_at", "duration", "avatar_id", "voice_name"} <= set(first["data"][0])
    token = first["next_pagination_token"]
    second = (
        await api.get("/v2/streaming.list", params={"page_size": 2, "next_pagination_token": token})
    ).json()
    assert second["page"] == 2
    last = (await api.get("/v2/streaming.list", params={"page_size": 2, "page": 3})).json()
    assert [s["status"] for s in last["data"]] == ["closed"]
    assert last["next_pagination_token"] is None
    future = (await api.get("/v2/streaming.list", params={"date_from": time.time() + 60})).json()
    assert future["total"] == 0


async def test_rate_limit_answers_429_with_retry_after() -> None:
    async with (
        running_simulator(rate_limit_per_s=1, rate_limit_burst=2) as sim,
        sim.client() as api,
    ):
        statuses = [(await api.get("/v1/streaming.list")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = await api.get("/v1/streaming.list")
        assert limited.headers["Retry-After"] == "1"


async def test_idle_session_closes_and_keep_alive_prevents_it(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.configure(idle_timeout_override_s=0.6)
    idle = await new_v2(api)
    kept = await new_v2(api)
    for _ in range(5):
        await asyncio.sleep(0.2)
        await data_of(await api.post("/v1/streaming.keep_alive", json={"session_id": kept}))
    task = {"session_id": idle, "text": "are you there", "task_mode": "async"}
    assert_error(await api.post("/v1/streaming.task", json=task), 400, 400006)
    stats = await sim.admin.stats()
    assert stats.sessions[idle].closed_reason == "idle"
    assert stats.sessions[kept].status == "connected"
    assert stats.sessions[kept].keep_alives == 5
    assert stats.live_sessions == 1


async def test_sweeper_closes_idle_sessions_without_requests() -> None:
    app = create_app(SimulatorSettings(idle_timeout_override_s=0.2, sweep_interval_s=0.05))
    runner = web.AppRunner(app)
    await runner.setup()  # starts the sweeper; no request will reach the store
    try:
        session = app[SIMULATOR].store.create("key", parse_new({"avatar_id": "a"}))
        await asyncio.sleep(0.4)
        assert session.closed_reason is CloseReason.IDLE
    finally:
        await runner.cleanup()


async def test_sync_task_answers_when_speech_ends(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.configure(words_per_minute=600)  # 5 words: 0.5 s
    sid = await new_v2(api)
    text = "one two three four five"
    started = time.monotonic()
    await data_of(await api.post("/v1/streaming.task", json={"session_id": sid, "text": text}))
    assert 0.45 <= time.monotonic() - started < 1.5
    started = time.monotonic()
    task = {"session_id": sid, "text": text, "task_mode": "async"}
    assert (await data_of(await api.post("/v1/streaming.task", json=task)))["duration_ms"] == 500
    assert time.monotonic() - started < 0.3
    assert (await sim.admin.stats()).sessions[sid].speaking
    await sim.admin.configure(sync_waits_for_speech=False)
    started = time.monotonic()
    await data_of(await api.post("/v1/streaming.task", json={"session_id": sid, "text": text}))
    assert time.monotonic() - started < 0.3


async def test_interrupt_cuts_a_pending_sync_answer_short(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_v2(api)
    long_text = " ".join(["word"] * 50)  # 20 s at 150 words a minute
    started = time.monotonic()
    pending = asyncio.create_task(
        api.post("/v1/streaming.task", json={"session_id": sid, "text": long_text})
    )
    queued = {"session_id": sid, "text": long_text, "task_mode": "async"}
    await asyncio.sleep(0.2)
    await data_of(await api.post("/v1/streaming.task", json=queued))
    await data_of(await api.post("/v1/streaming.interrupt", json={"session_id": sid}))
    answered = await data_of(await pending)
    assert answered["duration_ms"] == 20_000
    assert time.monotonic() - started < 1.5
    session = (await sim.admin.stats()).sessions[sid]
    assert not session.speaking  # queued speech was dropped too
    assert (session.tasks, session.interrupts, session.characters) == (2, 1, 2 * len(long_text))
