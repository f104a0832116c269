"""HeyGenClient end to end against the in-process simulator: every endpoint, every error class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from simulator.server import RunningSimulator, running_simulator
from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
    TransportError,
)
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.models import IceCandidate, NewSessionRequest, SdpAnswer, Voice
from worker.providers.retry import RetryPolicy

AVATAR = "Wayne_20240711"
ONCE = RetryPolicy(max_attempts=1)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(sync_waits_for_speech=False) as running:
        yield running


def client(sim: RunningSimulator, key: str | None = None, **kwargs: Any) -> HeyGenClient:
    return HeyGenClient(SecretStr(key or sim.api_key), sim.base_url, **kwargs)


async def test_v2_flow_through_every_endpoint(sim: RunningSimulator) -> None:
    request = NewSessionRequest(
        avatar_id=AVATAR, voice=Voice(rate=1.1, emotion="Friendly"), quality="low"
    )
    async with client(sim) as heygen:
        session = await heygen.new_session(request)
        assert session.url
        assert session.access_token
        assert session.session_duration_limit
        await heygen.start_session(session.session_id)
        spoken = await heygen.task(session.session_id, "one two three four five", task_mode="sync")
        assert spoken.task_id
        assert spoken.duration_ms is not None
        assert spoken.duration_ms > 0
        await heygen.interrupt(session.session_id)
        await heygen.keep_alive(session.session_id)
        listed = await heygen.list_sessions()
        assert session.session_id in {s.session_id for s in listed}
        assert await heygen.create_token()
        assert AVATAR in {a.avatar_id for a in await heygen.list_avatars()}
        await heygen.stop(session.session_id)
        with pytest.raises(SessionClosedError) as info:
            await heygen.task(session.session_id, "too late")
    assert info.value.code == 400006
    stats = await sim.admin.stats()
    assert stats.sessions[session.session_id].keep_alives == 1
    assert stats.live_sessions == 0


async def test_v1_flow_with_sdp_and_ice(sim: RunningSimulator) -> None:
    async with client(sim) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR, version="v1"))
        assert session.sdp is not None
        assert session.sdp.type == "offer"
        assert session.ice_servers2
        await heygen.start_session(session.session_id, SdpAnswer(sdp="v=0\r\n"))
        await heygen.ice(session.session_id, IceCandidate(candidate="candidate:1", sdp_mid="0"))
        await heygen.stop(session.session_id)
    stats = await sim.admin.stats()
    assert stats.sessions[session.session_id].ice_candidates == 1


async def test_wrong_key_is_an_authentication_error() -> None:
    async with (
        running_simulator(api_keys=[SecretStr("right-key")]) as sim,
        client(sim, "wrong-key", retry=ONCE) as heygen,
    ):
        with pytest.raises(AuthenticationError) as info:
            await heygen.list_sessions()
    assert (info.value.http_status, info.value.code) == (401, 400112)


async def test_key_without_api_access_is_forbidden() -> None:
    async with (
        running_simulator(forbidden_keys=[SecretStr("no-access")]) as sim,
        client(sim, "no-access") as heygen,
    ):
        with pytest.raises(ForbiddenError):
            await heygen.list_avatars()


async def test_task_before_the_viewer_joined_is_wrong_state_not_closed() -> None:
    async with running_simulator(connect_delay_s=30) as sim, client(sim) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await heygen.start_session(session.session_id)
        with pytest.raises(SessionClosedError) as info:
            await heygen.task(session.session_id, "hello")
        await heygen.stop(session.session_id)
    assert info.value.closed is False


async def test_closed_message_sets_closed(sim: RunningSimulator) -> None:
    await sim.admin.set_fault(
        "streaming.keep_alive", status=400, message="session state wrong: closed"
    )
    async with client(sim) as heygen:
        with pytest.raises(SessionClosedError) as info:
            await heygen.keep_alive("any")
    assert info.value.closed is True


async def test_invalid_request(sim: RunningSimulator) -> None:
    async with client(sim) as heygen:
        with pytest.raises(InvalidRequestError) as info:
            await heygen.task("s", "hi", task_mode="later")  # type: ignore[arg-type]
    assert info.value.code == 40001


async def test_concurrent_session_limit_is_a_capacity_error() -> None:
    async with running_simulator(concurrency_limit=1) as sim, client(sim) as heygen:
        first = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        with pytest.raises(CapacityError):
            await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await heygen.stop(first.session_id)
        stats = await sim.admin.stats()
    assert stats.calls["streaming.new"] == 2


async def test_rate_limit_with_retry_after(sim: RunningSimulator) -> None:
    await sim.admin.set_fault("streaming.new", status=429, retry_after=2, count=1)
    async with client(sim, retry=ONCE) as heygen:
        with pytest.raises(RateLimitedError) as info:
            await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
    assert info.value.retry_after == 2.0


async def test_rate_limited_new_session_is_retried_after_the_wait(sim: RunningSimulator) -> None:
    await sim.admin.set_fault("streaming.new", status=429, retry_after=0.05, count=1)
    async with client(sim) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await heygen.stop(session.session_id)
    assert (await sim.admin.stats()).calls["streaming.new"] == 2


async def test_server_error_retried_on_keep_alive_not_on_new(sim: RunningSimulator) -> None:
    fast = RetryPolicy(base_delay=0.001)
    async with client(sim, retry=fast) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await sim.admin.set_fault("streaming.keep_alive", status=500, count=2)
        await heygen.keep_alive(session.session_id)
        await sim.admin.set_fault("streaming.new", status=503, count=1)
        with pytest.raises(ServerError):
            await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await heygen.stop(session.session_id)
    stats = await sim.admin.stats()
    assert (stats.calls["streaming.keep_alive"], stats.calls["streaming.new"]) == (3, 2)


async def test_hang_is_a_timeout(sim: RunningSimulator) -> None:
    await sim.admin.set_fault("streaming.list", hang_s=5, count=1)
    async with client(sim, timeout=0.2, retry=ONCE) as heygen:
        with pytest.raises(ProviderTimeoutError):
            await heygen.list_sessions()


async def test_reset_after_the_effect_is_not_retried_for_a_task(sim: RunningSimulator) -> None:
    async with client(sim) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id=AVATAR))
        await heygen.start_session(session.session_id)
        await sim.admin.set_fault("streaming.task", reset=True, apply_first=True, count=1)
        with pytest.raises(TransportError) as info:
            await heygen.task(session.session_id, "said once")
        await heygen.stop(session.session_id)
    assert info.value.request_sent is True
    stats = await sim.admin.stats()
    assert stats.count("streaming.task", session.session_id) == 1
    assert stats.sessions[session.session_id].tasks == 1
