"""LiveAvatarClient on httpx.MockTransport: auth per endpoint, status-first success, the error
mapping, which calls are retried, a failed start's session id, pages, and no secret leaking."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.unit.test_heygen_client import Recorder
from worker.providers.base import (
    AuthenticationError,
    CapacityError,
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitedError,
    ServerError,
    SessionClosedError,
    TransportError,
)
from worker.providers.liveavatar import (
    AvatarPersona,
    InvalidFieldsError,
    LiveAvatarClient,
    SessionConfig,
    SessionStartError,
    VideoSettings,
)
from worker.providers.retry import RetryPolicy

KEY = "la-test-key-7d2b0c"
SESSION_TOKEN = "eyJhbGciOiJIUzI1NiJ9.session.c2lnbmF0dXJl"
AGENT_TOKEN = "agent-token-0b9e"
CLIENT_TOKEN = "client-token-51aa"
SID = "6f1f5c2e-3c55-4bd4-9f7a-8a2f0d4f3c11"
BASE = "https://liveavatar.test"
CONFIG = SessionConfig(
    avatar_id="dd73ea75-1218-4ef3-92ce-606d5f7fbc0a",
    avatar_persona=AvatarPersona(voice_id="v", language="en"),
    video_settings=VideoSettings(quality="very_high"),
)
TOKEN_DATA = {"session_id": SID, "session_token": SESSION_TOKEN}
START_DATA = {
    "session_id": SID,
    "livekit_url": "wss://room.livekit.test",
    "livekit_client_token": CLIENT_TOKEN,
    "livekit_agent_token": AGENT_TOKEN,
    "max_session_duration": 1200,
}


def answer(data: Any = None, status: int = 200, code: Any = 1000, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"code": code, "data": data, "message": "Success"}, headers=headers
    )


def error(status: int, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"code": status, "data": None, "message": message}, headers=headers
    )


async def no_sleep(_: float) -> None:
    return None


FAST = RetryPolicy(sleep=no_sleep, random=lambda: 0.5)


def client(recorder: Recorder, **kwargs: Any) -> LiveAvatarClient:
    kwargs.setdefault("retry", FAST)
    return LiveAvatarClient(SecretStr(KEY), BASE, transport=httpx.MockTransport(recorder), **kwargs)


async def test_token_with_the_key_then_start_with_the_session_token() -> None:
    recorder = Recorder(answer(TOKEN_DATA), answer(START_DATA, status=201, code=100))
    async with client(recorder) as liveavatar:
        started = await liveavatar.open_session(CONFIG)
    token_request, start_request = recorder.requests
    assert token_request.headers["X-API-KEY"] == KEY
    assert "Authorization" not in token_request.headers
    assert json.loads(token_request.content) == {
        "mode": "FULL",
        "avatar_id": CONFIG.avatar_id,
        "avatar_persona": {"voice_id": "v", "language": "en"},
        "video_settings": {"quality": "very_high"},
    }
    assert start_request.headers["Authorization"] == f"Bearer {SESSION_TOKEN}"
    assert "X-API-KEY" not in start_request.headers
    assert json.loads(start_request.content) == {"session_id": SID}
    assert started.session_id == SID
    assert started.livekit_agent_token is not None
    assert started.livekit_agent_token.get_secret_value() == AGENT_TOKEN
    assert started.max_session_duration == 1200


@pytest.mark.parametrize("code", [100, 1000, 0, "whatever", None])
async def test_success_is_the_http_status_whatever_the_code(code: Any) -> None:
    async with client(Recorder(answer({"credits_left": "12.50"}, code=code))) as liveavatar:
        assert await liveavatar.credits_left() == 12.5


async def test_a_422_names_the_fields() -> None:
    detail = [
        {
            "loc": ["body", "avatar_persona", "voice_id"],
            "msg": "Input should be a valid UUID",
            "type": "uuid",
        },
        {"loc": ["body", "mode"], "msg": "Input should be 'FULL' or 'LITE'", "type": "literal"},
    ]
    recorder = Recorder(httpx.Response(422, json={"detail": detail}))
    async with client(recorder) as liveavatar:
        with pytest.raises(InvalidFieldsError) as raised:
            await liveavatar.create_token(CONFIG)
    assert raised.value.fields == ("avatar_persona.voice_id", "mode")
    assert "avatar_persona.voice_id: Input should be a valid UUID" in str(raised.value)
    assert isinstance(raised.value, InvalidRequestError)
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (error(401, "Invalid API key"), AuthenticationError),
        (error(403, "Forbidden"), ForbiddenError),
        (error(402, "Insufficient credits"), CapacityError),
        (error(400, "Not enough credits to start a session"), CapacityError),
        (error(429, "Concurrent session limit reached"), CapacityError),
        (error(404, "Session not found"), SessionClosedError),
        (error(400, "Session abc is not active"), SessionClosedError),
        (error(400, "Bad thing"), InvalidRequestError),
        (error(503, "Service Unavailable"), ServerError),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError),
    ],
)
async def test_errors_are_typed(reply: httpx.Response, kind: type[ProviderError]) -> None:
    async with client(Recorder(reply), retry=RetryPolicy(max_attempts=1)) as liveavatar:
        with pytest.raises(kind) as raised:
            await liveavatar.keep_alive(SID)
    assert raised.value.endpoint == "sessions.keep-alive"
    assert raised.value.http_status == reply.status_code
    if kind is SessionClosedError:
        assert isinstance(raised.value, SessionClosedError)
        assert raised.value.closed


async def test_rate_limit_waits_retry_after_then_succeeds() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    recorder = Recorder(error(429, "Too many requests", **{"Retry-After": "2"}), answer(TOKEN_DATA))
    retry = RetryPolicy(sleep=sleep, random=lambda: 0.0)
    async with client(recorder, retry=retry) as liveavatar:
        token = await liveavatar.create_token(CONFIG)  # refused before any work: safe to repeat
    assert token.session_id == SID
    assert waits == [2.0]


async def test_a_rate_limit_is_typed_with_its_retry_after() -> None:
    reply = error(429, "Too many requests", **{"Retry-After": "7"})
    async with client(Recorder(reply), retry=RetryPolicy(max_attempts=1)) as liveavatar:
        with pytest.raises(RateLimitedError) as raised:
            await liveavatar.credits_left()
    assert raised.value.retry_after == 7.0


@pytest.mark.parametrize(
    "call",
    ["keep_alive", "stop", "get_session"],
)
async def test_idempotent_calls_are_retried_on_server_errors(call: str) -> None:
    row = {"id": SID, "credits_consumed": "4.00"}
    recorder = Recorder(error(503, "busy"), error(500, "oops"), answer(row))
    async with client(recorder) as liveavatar:
        await getattr(liveavatar, call)(SID)
    assert len(recorder.requests) == 3


async def test_token_creation_is_never_repeated_blindly() -> None:
    recorder = Recorder(error(503, "busy"))
    async with client(recorder) as liveavatar:
        with pytest.raises(ServerError):
            await liveavatar.create_token(CONFIG)
    assert len(recorder.requests) == 1


async def test_a_request_that_never_left_is_retried_even_for_token() -> None:
    recorder = Recorder(httpx.ConnectError("refused"), answer(TOKEN_DATA))
    async with client(recorder) as liveavatar:
        assert (await liveavatar.create_token(CONFIG)).session_id == SID
    assert len(recorder.requests) == 2


async def test_an_ambiguous_start_exposes_the_billed_session() -> None:
    recorder = Recorder(answer(TOKEN_DATA), httpx.ReadTimeout("slow"))
    async with client(recorder) as liveavatar:
        with pytest.raises(SessionStartError) as raised:
            await liveavatar.open_session(CONFIG)
    paths = [r.url.path for r in recorder.requests]
    assert paths == ["/v1/sessions/token", "/v1/sessions/start"]  # start not repeated
    assert raised.value.session_id == SID
    assert raised.value.billed
    assert isinstance(raised.value.cause, ProviderTimeoutError)


async def test_a_refused_start_is_not_billed() -> None:
    recorder = Recorder(answer(TOKEN_DATA), error(402, "Insufficient credits"))
    async with client(recorder) as liveavatar:
        with pytest.raises(SessionStartError) as raised:
            await liveavatar.open_session(CONFIG)
    assert not raised.value.billed
    assert isinstance(raised.value.cause, CapacityError)


async def test_retries_stay_inside_the_deadline() -> None:
    recorder = Recorder(error(503, "busy"))
    retry = RetryPolicy(base_delay=1.0, random=lambda: 1.0, max_attempts=10)
    async with client(recorder, retry=retry) as liveavatar:
        began = time.monotonic()
        with pytest.raises(ServerError):
            await liveavatar.keep_alive(SID, deadline=time.monotonic() + 0.5)
    assert time.monotonic() - began < 0.5
    assert len(recorder.requests) == 1  # the first backoff (1 s) would end past the deadline


async def test_a_passed_deadline_sends_nothing() -> None:
    recorder = Recorder(answer())
    async with client(recorder) as liveavatar:
        with pytest.raises(ProviderTimeoutError):
            await liveavatar.keep_alive(SID, deadline=time.monotonic() - 1)
    assert recorder.requests == []


async def test_a_slow_answer_times_out() -> None:
    async def slow(_: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return answer()

    transport = httpx.MockTransport(slow)
    async with LiveAvatarClient(
        SecretStr(KEY), BASE, transport=transport, timeout=0.1
    ) as liveavatar:
        with pytest.raises(ProviderTimeoutError):
            await liveavatar.create_token(CONFIG)


async def test_stop_sends_the_reason() -> None:
    recorder = Recorder(answer())
    async with client(recorder) as liveavatar:
        await liveavatar.stop(SID, "USER_CLOSED")
        await liveavatar.stop(SID)
    assert recorder.bodies() == [{"session_id": SID, "reason": "USER_CLOSED"}, {"session_id": SID}]


async def test_the_active_list_is_read_page_by_page() -> None:
    def page(ids: list[str], more: bool) -> httpx.Response:
        results = [{"id": i, "mode": "FULL", "credits_consumed": "2.00"} for i in ids]
        following = "https://elsewhere.test/v1/sessions?page=9" if more else None
        return answer({"count": 3, "next": following, "previous": None, "results": results})

    recorder = Recorder(page(["a", "b"], True), page(["c"], False))
    async with client(recorder) as liveavatar:
        rows = await liveavatar.list_active()
    assert [row.id for row in rows] == ["a", "b", "c"]
    assert [r.url.host for r in recorder.requests] == ["liveavatar.test"] * 2  # never `next`'s host
    assert [r.url.params["page"] for r in recorder.requests] == ["1", "2"]
    assert recorder.requests[0].url.params["type"] == "active"


async def test_session_row_and_credits_are_numbers() -> None:
    row = {
        "id": SID,
        "credits_consumed": "6.00",
        "end_reason": "NO_CREDITS",
        "end_at": "2026-12-07T10:00:00Z",
    }
    async with client(Recorder(answer(row))) as liveavatar:
        fetched = await liveavatar.get_session(SID)
    assert (fetched.credits_consumed, fetched.end_reason) == (6.0, "NO_CREDITS")


async def test_an_answer_without_the_expected_data_is_a_server_error() -> None:
    async with client(Recorder(answer({"session_id": SID}))) as liveavatar:
        with pytest.raises(ServerError, match="session_token"):
            await liveavatar.create_token(CONFIG)


async def test_no_secret_in_reprs_or_errors() -> None:
    echo = error(500, f"bad key {KEY} and token {SESSION_TOKEN}")
    recorder = Recorder(answer(TOKEN_DATA), echo)
    liveavatar = client(recorder, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(SessionStartError) as raised:
        await liveavatar.open_session(CONFIG)
    token = await client(Recorder(answer(TOKEN_DATA))).create_token(CONFIG)
    started = await client(Recorder(answer(START_DATA))).start(token)
    texts = [repr(liveavatar), repr(token), repr(started), str(raised.value), repr(raised.value)]
    texts += [str(raised.value.cause), repr(raised.value.cause)]
    for text in texts:
        for secret in (KEY, SESSION_TOKEN, AGENT_TOKEN, CLIENT_TOKEN):
            assert secret not in text, text


async def test_a_connection_failure_says_whether_the_request_left() -> None:
    recorder = Recorder(httpx.ReadError("reset"))
    async with client(recorder, retry=RetryPolicy(max_attempts=1)) as liveavatar:
        with pytest.raises(TransportError) as raised:
            await liveavatar.keep_alive(SID)
    assert raised.value.request_sent
