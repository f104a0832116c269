"""httpx transport wrapper: a CLIENT span and metrics per provider request, traceparent injected.

OpenTelemetry's httpx instrumentation does not wrap custom transports (the aiohttp one), so
this does it. It never records request headers: they carry the X-Api-Key.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from typing import Any

import httpx
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from worker.observability.metrics import HEYGEN_ENDPOINTS, OTHER, Metrics
from worker.observability.tracing import inject_context, recording, tracer
from worker.providers.heygen.errors import error_from_answer
from worker.providers.liveavatar import errors as liveavatar_errors
from worker.providers.transport import ENDPOINT_EXTENSION

_VERSION_SEGMENT = re.compile(r"v\d+")


@functools.lru_cache(maxsize=256)
def endpoint_label(path: str) -> str:
    """The bounded endpoint name of a HeyGen URL path, named like the HeyGen client names it:
    "/v1/streaming.task" -> "streaming.task", "/v1/streaming/avatar.list" ->
    "streaming.avatar.list", "/v2/streaming.list" -> "v2.streaming.list"; anything else "other".
    A path prefix before the version (a proxy in front of HeyGen) is ignored."""
    segments = [segment for segment in path.split("/") if segment]
    versions = [i for i, segment in enumerate(segments) if _VERSION_SEGMENT.fullmatch(segment)]
    if not versions:
        return OTHER
    version = segments[versions[-1]]
    name = ".".join(segments[versions[-1] + 1 :])
    if version != "v1":
        name = f"{version}.{name}"
    return name if name in HEYGEN_ENDPOINTS else OTHER


LARGE_ANSWER = 16_384


def outcome_of(status: int, body: bytes) -> str:
    """ "ok" or the error kind the HeyGen client raises for this answer (same mapping)."""
    if 200 <= status < 300 and len(body) > LARGE_ANSWER and body.lstrip()[:1] == b"{":
        # A big 2xx answer is a list (streaming.list of thousands of sessions): the client
        # parses it anyway; a second full parse here would stall the loop for nothing.
        return "ok"
    try:
        payload: Any = json.loads(body) if body else None
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        if 200 <= status < 300:
            return "server"  # the client rejects a success without a JSON envelope
        payload = {}
    code, message = payload.get("code"), str(payload.get("message") or "")
    error = payload.get("error")
    if isinstance(error, dict):  # create_token's {"error": {...}, "data": ...} shape
        code = code if code is not None else error.get("code")
        message = message or str(error.get("message") or "")
    succeeded = (
        message.strip().lower() == "success"
        or code is None
        or str(code).strip().lower() in {"100", "success"}
    )
    if 200 <= status < 300 and not error and succeeded:
        return "ok"
    try:
        numeric_code: int | None = int(str(code))
    except ValueError:
        numeric_code = None
    answer = error_from_answer(endpoint="", http_status=status, code=numeric_code, message=message)
    return answer.kind


def liveavatar_outcome(status: int, body: bytes) -> str:
    """ "ok" or the error kind the LiveAvatar client raises: success is the HTTP status."""
    if 200 <= status < 300:
        return "ok"
    try:
        payload: Any = json.loads(body) if body else None
    except ValueError:
        payload = None
    error = liveavatar_errors.error_from_answer(
        endpoint="", http_status=status, payload=payload, retry_after=None
    )
    return error.kind


OUTCOMES = {"heygen": outcome_of, "liveavatar": liveavatar_outcome}


def _url_without_query(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"  # netloc has no userinfo


class InstrumentedTransport(httpx.AsyncBaseTransport):
    """Wraps `inner`; pass it as a provider client's transport. `provider` labels the metrics."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, metrics: Metrics, *, provider: str = "heygen"
    ) -> None:
        self._inner = inner
        self._metrics = metrics
        self._provider = provider
        self._outcome = OUTCOMES[provider]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        named = request.extensions.get(ENDPOINT_EXTENSION)
        endpoint = named if isinstance(named, str) else endpoint_label(request.url.path)
        if not recording():
            inject_context(request.headers)  # the caller's trace context, passed on
            return await self._observed(request, endpoint, None)
        attributes = {
            "http.request.method": request.method,
            "url.full": _url_without_query(request.url),
            "server.address": request.url.host,
            "heygen.endpoint": endpoint,
        }
        name = f"HeyGen {request.method} {endpoint}"
        with tracer().start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            inject_context(request.headers)
            return await self._observed(request, endpoint, span)

    async def _observed(
        self, request: httpx.Request, endpoint: str, span: Span | None
    ) -> httpx.Response:
        """Sends `request`, timed and classified into the metrics (and `span`)."""
        started = time.perf_counter()
        outcome = "transport"  # any failure not classified below
        try:
            response = await self._inner.handle_async_request(request)
            # Read here so that its time counts; the client gets the content read once.
            body = await response.aread()
            outcome = self._outcome(response.status_code, body)
            if span is not None:
                span.set_attribute("http.response.status_code", response.status_code)
            return response
        except (httpx.TimeoutException, asyncio.CancelledError):
            # A cancellation here is nearly always the HeyGen client's asyncio.timeout around
            # the attempt, which it reports as a timeout too.
            outcome = "timeout"
            raise
        finally:
            self._metrics.observe_request(
                self._provider, endpoint, outcome, time.perf_counter() - started
            )
            if span is not None:
                span.set_attribute("heygen.outcome", outcome)
                if outcome != "ok":
                    span.set_status(Status(StatusCode.ERROR, outcome))

    async def aclose(self) -> None:
        await self._inner.aclose()
