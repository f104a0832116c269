"""HeyGenClient on httpx.MockTransport: requests, answers, envelope, errors, retries, limits."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

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
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.models import (
    Avatar,
    IceCandidate,
    NewSession,
    NewSessionRequest,
    RemoteSession,
    SdpAnswer,
    TaskResult,
    Voice,
)
from worker.providers.retry import RetryPolicy
from worker.providers.transport import ENDPOINT_EXTENSION

KEY = "hg-test-key-4f1c9e7a"
BASE = "https://heygen.test"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


def envelope(data: Any = None, code: Any = 100, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


class Recorder:
    """A MockTransport handler that answers from a list (the last answer repeats) and records."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def ok(data: Any = None, **kw: Any) -> httpx.Response:
    return httpx.Response(200, json=envelope(data, **kw))


def fail(status: int, code: int | None, message: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message}, headers=headers)


async def _no_sleep(_: float) -> None:
    return None


def client_for(handler: Handler, **kwargs: Any) -> HeyGenClient:
    kwargs.setdefault("retry", RetryPolicy(sleep=_no_sleep))
    return HeyGenClient(SecretStr(KEY), BASE, transport=httpx.MockTransport(handler), **kwargs)


# --- every method: request sent and answer parsed -------------------------------------------------


async def test_new_session_v2_request_and_answer() -> None:
    answer = {
        "session_id": "hs-1",
        "url": "wss://livekit.test",
        "access_token": "lk-token-secret",
        "realtime_endpoint": "wss://realtime.test/hs-1",
        "session_duration_limit": 600,
        "is_paid": True,
        "a_field_heygen_added_later": {"x": 1},
    }
    rec = Recorder(ok(answer))
    request = NewSessionRequest(
        avatar_id="Wayne_20240711",
        voice=Voice(voice_id="v1", rate=1.2, emotion="Friendly"),
        quality="high",
        video_encoding="H264",
        activity_idle_timeout=60,
        knowledge_base="You are helpful.",
    )
    async with client_for(rec) as heygen:
        session = await heygen.new_session(request)

    sent = rec.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/v1/streaming.new")
    assert sent.headers["X-Api-Key"] == KEY
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.extensions[ENDPOINT_EXTENSION] == "streaming.new"
    assert rec.bodies()[0] == {
        "avatar_id": "Wayne_20240711",
        "voice": {"voice_id": "v1", "rate": 1.2, "emotion": "Friendly"},
        "quality": "high",
        "video_encoding": "H264",
        "version": "v2",
        "activity_idle_timeout": 60,
        "knowledge_base": "You are helpful.",
    }
    assert session == NewSession(
        session_id="hs-1",
        url="wss://livekit.test",
        access_token="lk-token-secret",
        realtime_endpoint="wss://realtime.test/hs-1",
        session_duration_limit=600,
        is_paid=True,
    )
    assert "lk-token-secret" not in repr(session)


async def test_new_session_v1_omits_version_and_parses_offer() -> None:
    answer = {
        "session_id": "hs-2",
        "sdp": {"type": "offer", "sdp": "v=0\r\n"},
        "ice_servers": ["stun:stun.test:3478"],
        "ice_servers2": [
            {"urls": ["turn:turn.test"], "username": "u", "credential": "turn-pass"},
        ],
    }
    rec = Recorder(ok(answer))
    async with client_for(rec) as heygen:
        session = await heygen.new_session(NewSessionRequest(avatar_id="a", version="v1"))
    assert rec.bodies()[0] == {"avatar_id": "a"}
    assert session.sdp is not None
    assert session.sdp.type == "offer"
    assert session.ice_servers == ["stun:stun.test:3478"]
    assert session.ice_servers2 is not None
    assert session.ice_servers2[0].credential == "turn-pass"
    assert "turn-pass" not in repr(session)


CallFn = Callable[[HeyGenClient], Awaitable[Any]]

SIMPLE_CALLS: list[tuple[str, CallFn, str, str, Any, Any, Any]] = [
    # (id, call, method, path, body sent, data answered, result expected)
    (
        "start-v2",
        lambda h: h.start_session("hs-1"),
        "POST",
        "/v1/streaming.start",
        {"session_id": "hs-1"},
        None,
        None,
    ),
    (
        "start-v1",
        lambda h: h.start_session("hs-1", SdpAnswer(sdp="v=0\r\n")),
        "POST",
        "/v1/streaming.start",
        {"session_id": "hs-1", "sdp": {"type": "answer", "sdp": "v=0\r\n"}},
        None,
        None,
    ),
    (
        "ice",
        lambda h: h.ice(
            "hs-1",
            IceCandidate(candidate="candidate:1 1 UDP 1 1.2.3.4 5 typ host", sdp_mid="0"),
        ),
        "POST",
        "/v1/streaming.ice",
        {
            "session_id": "hs-1",
            "candidate": {"candidate": "candidate:1 1 UDP 1 1.2.3.4 5 typ host", "sdpMid": "0"},
        },
        None,
        None,
    ),
    (
        "task",
        lambda h: h.task("hs-1", "Hello there", task_type="talk", task_mode="sync"),
        "POST",
        "/v1/streaming.task",
        {"session_id": "hs-1", "text": "Hello there", "task_type": "talk", "task_mode": "sync"},
        {"task_id": "t-1", "duration_ms": 812.5},
        TaskResult(task_id="t-1", duration_ms=812.5),
    ),
    (
        "task-defaults",
        lambda h: h.task("hs-1", "Hi"),
        "POST",
        "/v1/streaming.task",
        {"session_id": "hs-1", "text": "Hi", "task_type": "repeat", "task_mode": "async"},
        None,
        TaskResult(),
    ),
    (
        "interrupt",
        lambda h: h.interrupt("hs-1"),
        "POST",
        "/v1/streaming.interrupt",
        {"session_id": "hs-1"},
        None,
        None,
    ),
    (
        "stop",
        lambda h: h.stop("hs-1"),
        "POST",
        "/v1/streaming.stop",
        {"session_id": "hs-1"},
        None,
        None,
    ),
    (
        "keep_alive",
        lambda h: h.keep_alive("hs-1"),
        "POST",
        "/v1/streaming.keep_alive",
        {"session_id": "hs-1"},
        None,
        None,
    ),
    (
        "list",
        lambda h: h.list_sessions(),
        "GET",
        "/v1/streaming.list",
        None,
        {"sessions": [{"session_id": "hs-1", "status": "connected", "created_at": 1700000000}]},
        [
            RemoteSession.model_validate(
                {"session_id": "hs-1", "status": "connected", "created_at": 1700000000}
            )
        ],
    ),
    (
        "create_token",
        lambda h: h.create_token(),
        "POST",
        "/v1/streaming.create_token",
        {},
        {"token": "browser-token"},
        "browser-token",
    ),
    (
        "avatars-list",
        lambda h: h.list_avatars(),
        "GET",
        "/v1/streaming/avatar.list",
        None,
        [{"avatar_id": "a1", "default_voice": "v1", "is_public": True, "status": "ACTIVE"}],
        [Avatar(avatar_id="a1", default_voice="v1", is_public=True, status="ACTIVE")],
    ),
    (
        "avatars-wrapped",
        lambda h: h.list_avatars(),
        "GET",
        "/v1/streaming/avatar.list",
        None,
        {"avatars": [{"avatar_id": "a2"}]},
        [Avatar(avatar_id="a2")],
    ),
]


@pytest.mark.parametrize(
    ("call", "method", "path", "body", "data", "expected"),
    [case[1:] for case in SIMPLE_CALLS],
    ids=[case[0] for case in SIMPLE_CALLS],
)
async def test_method_request_and_answer(
    call: CallFn, method: str, path: str, body: Any, data: Any, expected: Any
) -> None:
    rec = Recorder(ok(data))
    async with client_for(rec) as heygen:
        result = await call(heygen)
    [sent] = rec.requests
    assert (sent.method, sent.url.path, sent.url.host) == (method, path, "heygen.test")
    assert sent.headers["X-Api-Key"] == KEY
    assert sent.extensions[ENDPOINT_EXTENSION] == path.removeprefix("/v1/").replace("/", ".")
    assert rec.bodies() == [body]
    assert result == expected


async def test_create_token_error_envelope() -> None:
    rec = Recorder(httpx.Response(200, json={"error": {"code": 400112, "message": "Unauthorized"}}))
    async with client_for(rec) as heygen:
        with pytest.raises(AuthenticationError):
            await heygen.create_token()


async def test_create_token_answer_in_its_own_shape() -> None:
    rec = Recorder(httpx.Response(200, json={"error": None, "data": {"token": "tk"}}))
    async with client_for(rec) as heygen:
        assert await heygen.create_token() == "tk"


# --- envelope -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 100, "message": "success", "data": {"task_id": "t"}},
        {"code": "100", "message": "", "data": {"task_id": "t"}},
        {"code": 0, "message": "SUCCESS", "data": {"task_id": "t"}},
        {"message": "Success", "data": {"task_id": "t"}},
        {"data": {"task_id": "t"}},
    ],
    ids=["int-100", "string-100", "message-SUCCESS", "message-Success-no-code", "no-code"],
)
async def test_success_envelope_variants(payload: dict[str, Any]) -> None:
    async with client_for(Recorder(httpx.Response(200, json=payload))) as heygen:
        assert await heygen.task("hs", "hi") == TaskResult(task_id="t")


async def test_error_code_inside_http_200_is_an_error() -> None:
    answer = httpx.Response(200, json=envelope(None, 400006, "Session is not in correct state"))
    async with client_for(Recorder(answer)) as heygen:
        with pytest.raises(SessionClosedError) as info:
            await heygen.task("hs", "hi")
    assert (info.value.code, info.value.http_status, info.value.closed) == (400006, 200, False)


# --- errors from answers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "error_class", "kind", "code"),
    [
        (fail(401, 400112, "Unauthorized"), AuthenticationError, "auth", 400112),
        (httpx.Response(401), AuthenticationError, "auth", None),
        (
            fail(403, 400599, "Your account does not have API access"),
            ForbiddenError,
            "forbidden",
            400599,
        ),
        (fail(400, 400562, "forbidden"), ForbiddenError, "forbidden", 400562),
        (
            fail(400, 400006, "Session is not in correct state"),
            SessionClosedError,
            "session_closed",
            400006,
        ),
        (
            fail(400, None, "session state wrong: closed"),
            SessionClosedError,
            "session_closed",
            None,
        ),
        (fail(400, 40001, "missing parameter"), InvalidRequestError, "invalid_request", 40001),
        (fail(400, 400175, "invalid parameter"), InvalidRequestError, "invalid_request", 400175),
        (
            fail(400, 400014, "Avatar version is deprecated"),
            InvalidRequestError,
            "invalid_request",
            400014,
        ),
        (
            fail(400, 10003, "Avatar version is deprecated"),
            InvalidRequestError,
            "invalid_request",
            10003,
        ),
        (fail(400, 10013, "Concurrent session limit reached"), CapacityError, "capacity", 10013),
        (fail(403, None, "limit of concurrent sessions exceeded"), CapacityError, "capacity", None),
        (
            fail(429, None, "Too many requests", **{"Retry-After": "2"}),
            RateLimitedError,
            "rate_limited",
            None,
        ),
        (fail(500, None, "server error"), ServerError, "server", None),
        (httpx.Response(502, text="<html>Bad Gateway</html>"), ServerError, "server", None),
        (httpx.Response(200, text="not json"), ServerError, "server", None),
    ],
)
async def test_error_classes_from_answers(
    response: httpx.Response, error_class: type[ProviderError], kind: str, code: int | None
) -> None:
    policy = RetryPolicy(max_attempts=1)
    async with client_for(Recorder(response), retry=policy) as heygen:
        with pytest.raises(error_class) as info:
            await heygen.task("hs-1", "hi")
    error = info.value
    assert type(error) is error_class
    assert (error.kind, error.code, error.endpoint) == (kind, code, "streaming.task")
    assert error.http_status == response.status_code


async def test_session_closed_flags_closed_only_when_the_message_says_so() -> None:
    policy = RetryPolicy(max_attempts=1)
    closed = fail(400, None, "session state wrong: closed")
    async with client_for(Recorder(closed), retry=policy) as heygen:
        with pytest.raises(SessionClosedError) as info:
            await heygen.keep_alive("hs")
    assert info.value.closed is True


async def test_rate_limited_carries_retry_after() -> None:
    policy = RetryPolicy(max_attempts=1)
    async with client_for(
        Recorder(fail(429, 429, "slow down", **{"Retry-After": "3"})), retry=policy
    ) as heygen:
        with pytest.raises(RateLimitedError) as info:
            await heygen.stop("hs")
    assert info.value.retry_after == 3.0


async def test_malformed_success_answer_is_a_server_error_without_the_token() -> None:
    answer = ok({"url": "wss://x", "access_token": "lk-secret-token"})  # no session_id
    async with client_for(Recorder(answer)) as heygen:
        with pytest.raises(ServerError) as info:
            await heygen.new_session(NewSessionRequest(avatar_id="a"))
    assert "session_id" in str(info.value)
    assert "lk-secret-token" not in str(info.value)
    assert "lk-secret-token" not in repr(info.value)
    assert info.value.__cause__ is None


# --- transport errors and retries through the client ----------------------------------------------


@pytest.mark.parametrize(
    ("exc", "error_class", "request_sent"),
    [
        (httpx.ConnectError("connection refused"), TransportError, False),
        (httpx.ConnectTimeout("connect timed out"), TransportError, False),
        (httpx.PoolTimeout("no connection"), TransportError, False),
        (httpx.ReadError("connection reset"), TransportError, True),
        (httpx.RemoteProtocolError("server disconnected"), TransportError, True),
        (httpx.ReadTimeout("read timed out"), ProviderTimeoutError, None),
        (httpx.WriteTimeout("write timed out"), ProviderTimeoutError, None),
    ],
)
async def test_transport_failures_map_to_errors(
    exc: Exception, error_class: type[ProviderError], request_sent: bool | None
) -> None:
    async with client_for(Recorder(exc), retry=RetryPolicy(max_attempts=1)) as heygen:
        with pytest.raises(error_class) as info:
            await heygen.task("hs", "hi")
    if request_sent is not None:
        assert isinstance(info.value, TransportError)
        assert info.value.request_sent is request_sent
    assert info.value.endpoint == "streaming.task"


async def test_unsent_task_is_retried_but_a_possibly_sent_one_is_not() -> None:
    rec = Recorder(httpx.ConnectError("refused"), ok({"task_id": "t"}))
    async with client_for(rec) as heygen:
        assert await heygen.task("hs", "hi") == TaskResult(task_id="t")
    assert len(rec.requests) == 2

    rec = Recorder(httpx.ReadError("reset"), ok({"task_id": "t"}))
    async with client_for(rec) as heygen:
        with pytest.raises(TransportError):
            await heygen.task("hs", "hi")
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "failure",
    [fail(500, None, "boom"), httpx.ReadTimeout("slow"), httpx.ReadError("reset")],
    ids=["5xx", "timeout", "sent-transport"],
)
async def test_new_session_is_never_retried_blindly(failure: httpx.Response | Exception) -> None:
    rec = Recorder(failure, ok({"session_id": "hs"}))
    async with client_for(rec) as heygen:
        with pytest.raises(ProviderError):
            await heygen.new_session(NewSessionRequest(avatar_id="a"))
    assert len(rec.requests) == 1


async def test_new_session_is_retried_after_429() -> None:
    rec = Recorder(fail(429, None, "slow down"), ok({"session_id": "hs"}))
    async with client_for(rec) as heygen:
        assert (await heygen.new_session(NewSessionRequest(avatar_id="a"))).session_id == "hs"
    assert len(rec.requests) == 2


async def test_idempotent_call_is_retried_and_each_retry_reported() -> None:
    seen: list[tuple[str, str, int, float]] = []
    policy = RetryPolicy(
        sleep=_no_sleep,
        random=lambda: 0.5,
        on_retry=lambda ep, err, attempt, delay: seen.append((ep, err.kind, attempt, delay)),
    )
    rec = Recorder(fail(500, None, "a"), httpx.ReadTimeout("b"), ok())
    async with client_for(rec, retry=policy) as heygen:
        await heygen.keep_alive("hs")
    assert len(rec.requests) == 3
    assert seen == [
        ("streaming.keep_alive", "server", 1, 0.1),
        ("streaming.keep_alive", "timeout", 2, 0.2),
    ]


async def test_retries_stop_after_max_attempts() -> None:
    rec = Recorder(fail(503, None, "unavailable"))
    async with client_for(rec, retry=RetryPolicy(max_attempts=3, sleep=_no_sleep)) as heygen:
        with pytest.raises(ServerError):
            await heygen.stop("hs")
    assert len(rec.requests) == 3


# --- deadline and timeouts ------------------------------------------------------------------------


async def test_past_deadline_sends_nothing() -> None:
    rec = Recorder(ok())
    async with client_for(rec) as heygen:
        with pytest.raises(ProviderTimeoutError):
            await heygen.keep_alive("hs", deadline=time.monotonic() - 0.01)
    assert rec.requests == []


async def test_deadline_caps_the_request_timeout() -> None:
    seen: list[httpx.Request] = []

    async def hang(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(5)
        return ok()

    started = time.monotonic()
    async with client_for(hang, timeout=30.0) as heygen:
        with pytest.raises(ProviderTimeoutError):
            await heygen.task("hs", "hi", deadline=started + 0.15)
    assert time.monotonic() - started < 1.0
    assert 0 < seen[0].extensions["timeout"]["read"] <= 0.15


async def test_request_timeout_override_and_client_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return ok({"task_id": "t", "duration_ms": 1})

    async with client_for(slow, timeout=0.05) as heygen:
        with pytest.raises(ProviderTimeoutError):
            await heygen.task("hs", "hi", task_mode="sync")
        result = await heygen.task("hs", "hi", task_mode="sync", request_timeout=2.0)
    assert result.task_id == "t"


async def test_no_retry_sleeps_past_the_deadline() -> None:
    slept: list[float] = []

    async def record(delay: float) -> None:
        slept.append(delay)

    policy = RetryPolicy(base_delay=1.0, max_delay=1.0, random=lambda: 1.0, sleep=record)
    rec = Recorder(fail(500, None, "boom"))
    async with client_for(rec, retry=policy) as heygen:
        with pytest.raises(ServerError):
            await heygen.keep_alive("hs", deadline=time.monotonic() + 0.5)
    assert (len(rec.requests), slept) == (1, [])


# --- concurrency bound ----------------------------------------------------------------------------


async def test_in_flight_requests_never_exceed_max_concurrency() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return ok()

    async with client_for(handler, max_concurrency=3) as heygen:
        await asyncio.gather(*(heygen.keep_alive(f"hs-{i}") for i in range(20)))
    assert peak == 3


async def test_waiting_for_a_slot_past_the_timeout_is_a_provably_unsent_failure() -> None:
    release = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return ok()

    async with client_for(handler, max_concurrency=1, retry=RetryPolicy(max_attempts=1)) as heygen:
        holder = asyncio.create_task(heygen.keep_alive("a", deadline=time.monotonic() + 5))
        await asyncio.sleep(0.01)
        with pytest.raises(TransportError) as info:
            await heygen.task("b", "hi", deadline=time.monotonic() + 0.05)
        release.set()
        await holder
    assert info.value.request_sent is False


# --- the API key stays secret ---------------------------------------------------------------------


async def test_api_key_never_in_repr_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = fail(401, 400112, f"Unauthorized key {KEY}")
    rec = Recorder(ok({"session_id": "hs"}), echo, httpx.ConnectError(f"cannot reach with {KEY}"))
    errors: list[ProviderError] = []
    async with client_for(rec, retry=RetryPolicy(max_attempts=1)) as heygen:
        texts = [repr(heygen), str(heygen)]
        await heygen.new_session(NewSessionRequest(avatar_id="a"))
        for _ in range(2):
            try:
                await heygen.keep_alive("hs")
            except ProviderError as exc:
                errors.append(exc)
                logging.getLogger("test").exception("call failed")
    assert [type(e) for e in errors] == [AuthenticationError, TransportError]
    texts += [str(e) for e in errors] + [repr(e) for e in errors] + [caplog.text]
    assert all(KEY not in text for text in texts)
    assert "**********" in str(errors[0])
