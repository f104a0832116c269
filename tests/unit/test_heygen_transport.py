"""The default aiohttp transport against local servers, and what its failures prove."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.client_reqrep import ConnectionKey
from pydantic import SecretStr

from worker.providers.base import ProviderTimeoutError, TransportError
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.models import TaskResult
from worker.providers.retry import RetryPolicy
from worker.providers.transport import _as_httpx, is_timeout, request_may_have_been_sent

KEY = "hg-transport-key"
Handler = Callable[[web.Request], Awaitable[web.Response]]


_KEY = ConnectionKey("heygen.test", 443, True, True, None, None, None)


@pytest.mark.parametrize(
    ("raised", "sent", "timeout"),
    [
        # Raised while opening a connection, before a byte of the request is written.
        (aiohttp.ConnectionTimeoutError(), False, True),
        (aiohttp.ClientConnectorError(_KEY, OSError(111, "refused")), False, False),
        (aiohttp.InvalidURL("ftp://x"), False, False),
        # A reused keep-alive connection can drop after the request was written.
        (aiohttp.ServerDisconnectedError(), True, False),
        (aiohttp.SocketTimeoutError(), True, True),
        (aiohttp.ClientPayloadError(), True, False),
        (aiohttp.ClientOSError(104, "reset"), True, False),
    ],
)
def test_what_each_aiohttp_failure_proves(
    raised: aiohttp.ClientError, sent: bool, timeout: bool
) -> None:
    exc = _as_httpx(raised)
    assert request_may_have_been_sent(exc) is sent
    assert is_timeout(exc) is timeout


def test_httpx_failures_from_other_transports_are_judged_alike() -> None:
    assert request_may_have_been_sent(httpx.ConnectError("refused")) is False
    assert request_may_have_been_sent(httpx.PoolTimeout("pool")) is False
    assert request_may_have_been_sent(httpx.ReadError("reset")) is True
    assert request_may_have_been_sent(httpx.WriteError("broken pipe")) is True
    assert is_timeout(httpx.ReadTimeout("slow")) is True
    assert is_timeout(httpx.ReadError("reset")) is False


@contextlib.asynccontextmanager
async def serving(
    path: str, handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """A local HTTP(S) server answering POST `path`; yields its base URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


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

    async with serving("/v1/streaming.task", task) as base_url:
        yield base_url, seen


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


async def test_a_server_that_never_answers_is_a_timeout_after_sending() -> None:
    async def read_then_wait(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)

    server = await asyncio.start_server(read_then_wait, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HeyGenClient(
        SecretStr(KEY), f"http://127.0.0.1:{port}", timeout=0.3, retry=RetryPolicy(max_attempts=1)
    )
    async with server, client as heygen:
        with pytest.raises(ProviderTimeoutError):
            await heygen.task("hs", "hi")


async def test_a_compressed_answer_is_decoded() -> None:
    async def task(request: web.Request) -> web.Response:
        payload = {"code": 100, "message": "success", "data": {"task_id": "t1", "duration_ms": 7}}
        response = web.json_response(payload)
        response.enable_compression(web.ContentCoding.gzip)
        return response

    async with (
        serving("/v1/streaming.task", task) as base_url,
        HeyGenClient(SecretStr(KEY), base_url) as heygen,
    ):
        assert await heygen.task("hs", "hi") == TaskResult(task_id="t1", duration_ms=7)


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no public CA signed, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert), *subject],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_tls_is_verified_and_a_bad_certificate_is_provably_unsent(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed
    served = 0

    async def keep_alive(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        return web.json_response({"code": 100, "message": "success", "data": None})

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    retry = RetryPolicy(max_attempts=1)
    async with serving("/v1/streaming.keep_alive", keep_alive, tls) as base_url:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        async with HeyGenClient(SecretStr(KEY), base_url, retry=retry) as heygen:
            with pytest.raises(TransportError) as info:
                await heygen.keep_alive("hs")
        assert info.value.request_sent is False
        assert served == 0
        # Trusted once the operator points SSL_CERT_FILE at it (as httpx does).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        async with HeyGenClient(SecretStr(KEY), base_url, retry=retry) as heygen:
            await heygen.keep_alive("hs")
        assert served == 1
