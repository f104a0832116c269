"""The simulator's admin API: fault injection of every kind, latency, close, reset, stats, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from simulator.server import RunningSimulator, running_simulator


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(fault_seed=11) as running:
        yield running


@pytest.fixture
async def api(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with sim.client() as client:
        yield client


async def new_session(api: httpx.AsyncClient) -> str:
    response = await api.post("/v1/streaming.new", json={"avatar_id": "a", "version": "v2"})
    session_id: str = response.json()["data"]["session_id"]
    assert (await api.post("/v1/streaming.start", json={"session_id": session_id})).is_success
    return session_id


def keep_alive(api: httpx.AsyncClient, session_id: str) -> Any:
    return api.post("/v1/streaming.keep_alive", json={"session_id": session_id})


async def test_fault_rate_fails_about_that_share(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    await sim.admin.set_fault("streaming.keep_alive", rate=0.3)
    statuses = [(await keep_alive(api, sid)).status_code for _ in range(200)]
    assert 30 < statuses.count(500) < 90
    assert set(statuses) == {200, 500}
    assert (await api.get("/v1/streaming.list")).status_code == 200  # other endpoints untouched
    stats = await sim.admin.stats()
    assert stats.sessions[sid].keep_alives == statuses.count(200)
    assert stats.count("streaming.keep_alive", sid, applied=False) == statuses.count(500)


async def test_fault_with_chosen_status_code_and_message(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.set_fault(
        "streaming.new", status=400, code=400014, message="Avatar version is deprecated"
    )
    response = await api.post("/v1/streaming.new", json={"avatar_id": "old"})
    assert response.status_code == 400
    assert response.json() == {
        "code": 400014,
        "message": "Avatar version is deprecated",
        "data": None,
    }
    assert (await sim.admin.stats()).live_sessions == 0


async def test_fault_429_carries_retry_after(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    await sim.admin.set_fault("streaming.task", status=429, retry_after=2)
    await sim.admin.set_fault("streaming.stop", status=429, retry_after=0.5)
    sid = await new_session(api)
    limited = await api.post("/v1/streaming.task", json={"session_id": sid, "text": "hi"})
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
    stop = await api.post("/v1/streaming.stop", json={"session_id": sid})
    assert stop.headers["Retry-After"] == "0.5"


async def test_hang_delays_then_answers_or_times_the_client_out(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    await sim.admin.set_fault("streaming.keep_alive", hang_s=0.3, count=1)
    started = time.monotonic()
    assert (await keep_alive(api, sid)).status_code == 200
    assert time.monotonic() - started >= 0.3
    await sim.admin.set_fault("streaming.keep_alive", hang_s=5, count=1)
    with pytest.raises(httpx.ReadTimeout):
        await api.post(
            "/v1/streaming.keep_alive", json={"session_id": sid}, timeout=httpx.Timeout(0.2)
        )


async def test_reset_closes_the_connection_without_an_answer(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    await sim.admin.set_fault("streaming.keep_alive", reset=True, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        await keep_alive(api, sid)
    assert (await keep_alive(api, sid)).status_code == 200
    stats = await sim.admin.stats()
    assert [r.status for r in stats.requests if r.endpoint == "streaming.keep_alive"] == [0, 200]


async def test_count_limits_how_often_a_fault_fires(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    faults = await sim.admin.set_fault(status=503, count=2)
    assert faults[0]["remaining"] == 2
    statuses = [(await keep_alive(api, sid)).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert await sim.admin.faults() == []


async def test_apply_first_loses_the_answer_after_the_side_effect(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    await sim.admin.set_fault("streaming.task", reset=True, apply_first=True, count=1)
    task = {"session_id": sid, "text": "say it once", "task_mode": "async"}
    with pytest.raises(httpx.RemoteProtocolError):
        await api.post("/v1/streaming.task", json=task)
    assert (await api.post("/v1/streaming.task", json=task)).status_code == 200  # a blind retry
    stats = await sim.admin.stats()
    assert stats.sessions[sid].tasks == 2
    assert stats.count("streaming.task", sid, applied=True) == 2  # the duplicate shows


async def test_clear_faults_and_invalid_faults(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    await sim.admin.set_fault(status=500)
    assert (await api.get("/v1/streaming.list")).status_code == 500
    await sim.admin.clear_faults()
    assert (await api.get("/v1/streaming.list")).status_code == 200
    async with httpx.AsyncClient(base_url=sim.base_url) as raw:
        for bad in ({"endpoint": "streaming.nope"}, {"rate": 2}, {"status": 200}, {"colour": 1}):
            assert (await raw.post("/_admin/faults", json=bad)).status_code == 400
        batch = [{"endpoint": "streaming.new", "status": 500}, {"endpoint": "streaming.stop"}]
        assert len((await raw.post("/_admin/faults", json=batch)).json()["faults"]) == 2


async def test_faults_from_settings() -> None:
    async with (
        running_simulator(
            faults=[{"endpoint": "streaming.list", "status": 502, "count": 1}]
        ) as sim,
        sim.client() as api,
    ):
        assert (await api.get("/v1/streaming.list")).status_code == 502
        assert (await api.get("/v1/streaming.list")).status_code == 200


async def test_latency_per_endpoint(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    config = await sim.admin.configure(
        latency={"streaming.list": {"fixed_ms": 250, "jitter_ms": 50}}
    )
    assert config["latency"]["streaming.list"]["fixed_ms"] == 250
    started = time.monotonic()
    await api.get("/v1/streaming.list")
    assert 0.25 <= time.monotonic() - started < 1
    started = time.monotonic()
    await api.get("/v1/streaming/avatar.list")
    assert time.monotonic() - started < 0.2


async def test_admin_close_drops_a_session(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    sid = await new_session(api)
    closed = await sim.admin.close_session(sid)
    assert (closed.status, closed.closed_reason) == ("closed", "admin")
    response = await keep_alive(api, sid)
    assert (response.status_code, response.json()["code"]) == (400, 400006)
    with pytest.raises(httpx.HTTPStatusError) as again:
        await sim.admin.close_session(sid)
    assert again.value.response.status_code == 409
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        await sim.admin.close_session("nope")
    assert unknown.value.response.status_code == 404


async def test_admin_close_releases_a_pending_sync_answer(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    sid = await new_session(api)
    started = time.monotonic()
    pending = asyncio.create_task(
        api.post("/v1/streaming.task", json={"session_id": sid, "text": "word " * 100})
    )
    await asyncio.sleep(0.2)
    await sim.admin.close_session(sid)
    assert (await pending).status_code == 200
    assert time.monotonic() - started < 1.5


async def test_configure_rejects_bad_and_start_up_only_settings(sim: RunningSimulator) -> None:
    refused_changes: list[dict[str, Any]] = [
        {"concurrency_limit": -1},
        {"port": 1},
        {"latency": {"nope": {}}},
    ]
    for changes in refused_changes:
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await sim.admin.configure(**changes)
        assert refused.value.response.status_code == 400
    config = await sim.admin.configure(idle_timeout_override_s=1.5)
    assert config["idle_timeout_override_s"] == 1.5
    assert (await sim.admin.configure(idle_timeout_override_s=None))[
        "idle_timeout_override_s"
    ] is None


async def test_reset_forgets_everything(sim: RunningSimulator, api: httpx.AsyncClient) -> None:
    sid = await new_session(api)
    await sim.admin.configure(concurrency_limit=1)
    await sim.admin.set_fault("streaming.new", status=500)
    await sim.admin.reset()
    stats = await sim.admin.stats()
    assert (stats.calls, stats.sessions, stats.requests, stats.live_sessions) == ({}, {}, [], 0)
    assert (await keep_alive(api, sid)).json()["code"] == 400006
    await new_session(api)
    await new_session(api)  # the concurrency limit and the fault are gone too


async def test_stats_count_calls_and_log_requests_in_order(
    sim: RunningSimulator, api: httpx.AsyncClient
) -> None:
    first = await new_session(api)
    second = await new_session(api)
    for sid in (first, second, first):
        await keep_alive(api, sid)
    await api.post(
        "/v1/streaming.task", json={"session_id": first, "text": "two words", "task_mode": "async"}
    )
    await api.post("/v1/streaming.stop", json={"session_id": second})
    stats = await sim.admin.stats()
    assert stats.calls == {
        "streaming.new": 2,
        "streaming.start": 2,
        "streaming.keep_alive": 3,
        "streaming.task": 1,
        "streaming.stop": 1,
    }
    assert stats.live_sessions == 1
    assert [(r.endpoint, r.session_id) for r in stats.requests] == [
        ("streaming.new", first),
        ("streaming.start", first),
        ("streaming.new", second),
        ("streaming.start", second),
        ("streaming.keep_alive", first),
        ("streaming.keep_alive", second),
        ("streaming.keep_alive", first),
        ("streaming.task", first),
        ("streaming.stop", second),
    ]
    one = stats.sessions[first]
    assert (one.keep_alives, one.tasks, one.characters, one.status) == (2, 1, 9, "connected")
    two = stats.sessions[second]
    assert (two.status, two.closed_reason) == ("closed", "stopped")
    assert two.closed_at is not None
    assert two.closed_at >= two.created_at
    assert one.api_key_hint.startswith("sha256:")
    short = await sim.admin.stats(include_requests=False)
    assert (short.requests, short.requests_total) == ([], 9)


async def test_stats_never_show_the_api_key() -> None:
    key = "sk-very-secret-heygen-key"
    async with running_simulator(api_keys=[key]) as sim, sim.client() as api:
        await new_session(api)
        async with httpx.AsyncClient(base_url=sim.base_url) as admin_http:
            text = (await admin_http.get("/_admin/stats")).text
        assert key not in text
        assert key[-4:] not in text


async def test_request_log_is_bounded() -> None:
    async with running_simulator(request_log_size=3) as sim, sim.client() as api:
        for _ in range(5):
            await api.get("/v1/streaming.list")
        stats = await sim.admin.stats()
        assert (len(stats.requests), stats.requests_total) == (3, 5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_command_line_serves_until_sigterm() -> None:
    port = _free_port()
    env = {**os.environ, "SIMULATOR_API_KEYS": "cli-key"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "simulator", "--port", str(port), env=env
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(100):
                try:
                    response = await client.get(
                        "/v1/streaming.list", headers={"X-Api-Key": "cli-key"}
                    )
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert response.json()["data"] == {"sessions": []}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
