"""The default HTTP transport, and what its exceptions prove about a request.

httpx's request and response types stay the seam (tests inject httpx.MockTransport), but
requests go out through aiohttp: httpx's own pool collapses under concurrency (see docs/design.md).
This adapter is ours, not httpx-aiohttp's: that one cost the worker's client more CPU per
request than aiohttp itself (a response stream, a URL parse and header copies per call) and
reported disconnects after the request was written as connect timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import httpx
from yarl import URL

from worker.providers.base import ProviderTimeoutError, TransportError

# Request extension carrying the bounded endpoint name, for transport wrappers (metrics, traces).
ENDPOINT_EXTENSION = "provider_endpoint"
# Opening a connection takes far less than a call's timeout; failing fast there yields a
# provably-unsent error, which even billed calls may retry.
CONNECT_TIMEOUT = 5.0

# The kinds of failure that prove the request never left this process.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp connection pool; each answer is read whole before it is returned."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Opened on first use: aiohttp binds a session to the running loop.
        self._session = aiohttp.ClientSession(
            # httpx's TLS defaults: certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR.
            connector=aiohttp.TCPConnector(
                limit=self._max_connections, ssl=httpx.create_ssl_context()
            ),
            cookie_jar=aiohttp.DummyCookieJar(),  # HeyGen authenticates by key, not cookie
            auto_decompress=False,  # httpx decodes, as for any transport's raw body
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        timeout = request.extensions.get("timeout", {})
        try:
            async with session.request(
                request.method,
                URL(str(request.url), encoded=True),  # httpx has encoded it already
                headers=request.headers.multi_items(),
                data=request.content or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            ) as answer:
                body = await answer.read()
        except aiohttp.ClientError as exc:
            raise _as_httpx(exc) from exc
        return httpx.Response(
            answer.status,
            headers=answer.raw_headers,
            stream=httpx.ByteStream(body),  # as is: decoded (if encoded) when read
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (answer.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _as_httpx(exc: aiohttp.ClientError) -> httpx.TransportError:
    """The httpx exception that says what `exc` proves: only connect-phase failures are
    provably unsent. aiohttp raises ClientConnectorError and ConnectionTimeoutError while
    opening a connection, before a byte of the request is written."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)  # reset, payload cut short: maybe after HeyGen acted


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    return AiohttpTransport(max_connections)


def request_may_have_been_sent(exc: httpx.TransportError) -> bool:
    """False only when `exc` proves the request never left this process."""
    return not isinstance(exc, _NOT_SENT)


def is_timeout(exc: httpx.TransportError) -> bool:
    return isinstance(exc, httpx.TimeoutException)


class Sender:
    """A provider client's way out: its transport, a bound on its requests in flight, and each
    attempt's time budget. What the transport raised becomes the provider's typed error."""

    def __init__(self, transport: httpx.AsyncBaseTransport, max_concurrency: int) -> None:
        self.transport = transport
        self._slots = asyncio.Semaphore(max_concurrency)

    async def aclose(self) -> None:
        await self.transport.aclose()

    @staticmethod
    def budget(endpoint: str, timeout: float, deadline: float | None) -> float:
        """Seconds this attempt may take: the timeout, capped by the time left to `deadline`."""
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise ProviderTimeoutError(
                    "deadline passed before the request was sent", endpoint=endpoint
                )
        return timeout

    @staticmethod
    def timeouts(budget: float) -> dict[str, float]:
        """httpx's per-phase timeouts (the `timeout` request extension) for one attempt."""
        return {
            "connect": min(budget, CONNECT_TIMEOUT),
            "read": budget,
            "write": budget,
            "pool": budget,
        }

    async def send(
        self, endpoint: str, request: httpx.Request, budget: float, redact: Callable[[str], str]
    ) -> httpx.Response:
        """The answer, read whole; `redact` cleans the transport's error text of secrets."""
        holding_slot = False
        try:
            # httpx timeouts are per phase; this bounds the whole attempt, slot wait included.
            async with asyncio.timeout(budget), self._slots:
                holding_slot = True
                response = await self.transport.handle_async_request(request)
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except TimeoutError as exc:
            if not holding_slot:
                raise TransportError(
                    f"no free connection slot within {budget:.3g}s",
                    endpoint=endpoint,
                    request_sent=False,
                ) from exc
            raise ProviderTimeoutError(
                f"no answer within {budget:.3g}s", endpoint=endpoint
            ) from exc
        except httpx.TransportError as exc:
            # Not chained (`from None`): the text is repeated, redacted.
            text = redact(f"{type(exc).__name__}: {exc}")
            sent = request_may_have_been_sent(exc)
            if sent and is_timeout(exc):
                raise ProviderTimeoutError(text, endpoint=endpoint) from None
            raise TransportError(text, endpoint=endpoint, request_sent=sent) from None
        return response
