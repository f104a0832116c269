"""The default HTTP transport and what its exceptions prove about a request."""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# Raised by aiohttp while opening a connection, before a byte of the request is written.
_AIOHTTP_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """aiohttp-backed transport: httpx's own pool collapses under concurrency (see DESIGN.md)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return AiohttpTransport(limits=limits)


def request_may_have_been_sent(exc: httpx.TransportError) -> bool:
    """False only when `exc` proves the request never left this process.

    httpx-aiohttp maps every aiohttp.ClientConnectionError to httpx.ConnectTimeout, including
    ServerDisconnectedError on a reused keep-alive connection after the request was written, so
    the aiohttp cause decides, not the httpx class.
    """
    if not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return True
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return not isinstance(cause, _AIOHTTP_NOT_SENT)
    return False


def is_timeout(exc: httpx.TransportError) -> bool:
    """Whether `exc` is a timeout: httpx-aiohttp reports plain disconnects as ConnectTimeout too."""
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    return not isinstance(cause, aiohttp.ClientError) or isinstance(
        cause, aiohttp.ServerTimeoutError
    )
