"""The default aiohttp transport against local servers, and what its failures prove."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web
from httpx_aiohttp.transport import map_aiohttp_exceptions
from pydantic import SecretStr

from worker.heygen import HeyGenClient, RetryPolicy, TaskResult, TransportError
from worker.heygen.transport import is_timeout, request_may_have_been_sent

KEY = "hg-transport-key"


def mapped(exc: Exception) -> httpx.TransportError:
    """`exc` as httpx-aiohttp hands it to httpx."""
    try:
        with map_aiohttp_exceptions():
            raise exc
    except httpx.TransportError as result:
        return result
    raise AssertionError("not mapped")


def test_disconnect_after_sending_is_not_taken_for_a_connect_failure() -> None:
    # httpx-aiohttp calls this a ConnectTimeout, yet the request was already written.
    exc = mapped(aiohttp.ServerDisconnectedError())
    assert isinstance(exc, httpx.ConnectTimeout)
    assert request_may_have_been_sent(exc) is True
    assert is_timeout(exc) is False


def test_real_timeouts_are_timeouts() -> None:
    assert is_timeout(mapped(aiohttp.SocketTimeoutError())) is True
    assert is_timeout(mapped(aiohttp.ConnectionTimeoutError())) is True
    assert is_timeout(httpx.ReadTimeout("slow")) is True
    assert is_timeout(httpx.ReadError("reset")) is False


def test_connect_phase_failures_prove_nothing_was_sent() -> None:
    assert request_may_have_been_sent(mapped(aiohttp.ConnectionTimeoutError())) is False
    assert request_may_have_been_sent(httpx.ConnectError("refused")) is False
    assert request_may_have_been_sent(httpx.PoolTimeout("pool")) is False


def test_other_failures_may_have_been_sent() -> None:
    assert request_may_have_been_sent(mapped(aiohttp.ClientPayloadError())) is True
    assert request_may_have_been_sent(httpx.ReadError("reset")) is True
    assert request_may_have_been_sent(httpx.WriteError("broken pipe")) is True


@pytest.fixture
async def heygen_stub() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def task(request: web.Request) -> web.Response:
        seen.append(request)
        assert request.headers["X-Api-Key"] == KEY
        body = await request.json()
        return web.json_response(
            {"code": 100, "message": "success", "data": {"task_id": body["text"], "duration_ms": 5}}
        )

    app = web.Application()
    app.router.add_post("/v1/streaming.task", task)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_default_transport_round_trip(heygen_stub: tuple[str, list[web.Request]]) -> None:
    base_url, seen = heygen_stub
    async with HeyGenClient(SecretStr(KEY), base_url, max_concurrency=4) as heygen:
        results = await asyncio.gather(*(heygen.task("hs", f"t{i}") for i in range(10)))
    assert results == [TaskResult(task_id=f"t{i}", duration_ms=5) for i in range(10)]
    assert len(seen) == 10


async def test_refused_connection_is_provably_unsent() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    client = HeyGenClient(
        SecretStr(KEY), f"http://127.0.0.1:{port}", retry=RetryPolicy(max_attempts=1)
    )
    async with client as heygen:
        with pytest.raises(TransportError) as info:
            await heygen.task("hs", "hi")
    assert info.value.request_sent is False


async def test_server_dropping_the_connection_after_the_request_is_not_retried() -> None:
    requests = 0

    async def read_then_drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await reader.readuntil(b"\r\n\r\n")
        requests += 1
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(read_then_drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, HeyGenClient(SecretStr(KEY), f"http://127.0.0.1:{port}") as heygen:
        with pytest.raises(TransportError) as info:
            await heygen.task("hs", "hi")
    assert info.value.request_sent is True
    assert requests == 1
