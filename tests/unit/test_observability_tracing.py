"""Tracing setup, W3C propagation, and the instrumented HeyGen transport (spans and metrics)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from worker.observability.metrics import Metrics
from worker.observability.tracing import (
    consumer_span,
    extract_context,
    inject_context,
    recording,
    setup_tracing,
    shutdown_tracing,
    tracer,
)
from worker.observability.transport import InstrumentedTransport, endpoint_label

API_KEY = "sk-test-0123456789abcdef"
BASE = "https://api.heygen.test"
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    setup_tracing(exporter=exporter)
    yield exporter
    shutdown_tracing()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def client(handler: Handler, registry: CollectorRegistry) -> httpx.AsyncClient:
    transport = InstrumentedTransport(httpx.MockTransport(handler), Metrics(registry))
    return httpx.AsyncClient(base_url=BASE, transport=transport, headers={"X-Api-Key": API_KEY})


def requests_total(registry: CollectorRegistry, endpoint: str, outcome: str) -> float | None:
    return registry.get_sample_value(
        "heygen_worker_heygen_requests_total",
        {"provider": "heygen", "endpoint": endpoint, "outcome": outcome},
    )


def test_inject_then_extract_continues_the_trace(spans: InMemorySpanExporter) -> None:
    headers: dict[str, object] = {}
    with tracer().start_as_current_span("producer") as producer:
        inject_context(headers)
    # AMQP header values arrive as bytes.
    amqp_headers = {key: str(value).encode() for key, value in headers.items()}
    with tracer().start_as_current_span("consumer", context=extract_context(amqp_headers)) as span:
        assert span.get_span_context().trace_id == producer.get_span_context().trace_id
    consumer = spans.get_finished_spans()[-1]
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.get_span_context().span_id


def test_extract_without_headers_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    context = extract_context(None)
    assert not trace.get_current_span(context).get_span_context().is_valid
    assert (
        not trace.get_current_span(extract_context({"traceparent": 5})).get_span_context().is_valid
    )


def test_setup_twice_uses_the_latest_exporter(spans: InMemorySpanExporter) -> None:
    second = InMemorySpanExporter()
    setup_tracing(exporter=second)
    with tracer().start_as_current_span("after"):
        pass
    assert [span.name for span in second.get_finished_spans()] == ["after"]
    assert spans.get_finished_spans() == ()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, list[str]]]:
    """A stand-in OTLP/HTTP collector: its URL and the content types of what it received."""
    received: list[str] = []

    async def traces(request: web.Request) -> web.Response:
        await request.read()
        received.append(request.content_type)
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", received
    await runner.cleanup()


@pytest.mark.parametrize(
    ("env", "exported"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "{url}"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "{url}/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "{url}"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "{url}"}, False),
        ({}, False),
    ],
)
async def test_otlp_export_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    collector: tuple[str, list[str]],
    env: dict[str, str],
    exported: bool,
) -> None:
    url, received = collector
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SDK_DISABLED",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(url=url))
    setup_tracing()
    with tracer().start_as_current_span("exported?"):
        pass
    # The batch exporter posts from its own thread, to the collector served by this loop.
    await asyncio.to_thread(shutdown_tracing)
    assert received == (["application/x-protobuf"] if exported else [])


async def test_transport_span_is_a_child_and_traceparent_is_sent(
    spans: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 100, "message": "success", "data": {"id": 1}})

    async with client(handler, registry) as http:
        with tracer().start_as_current_span("command") as parent:
            response = await http.post("/v1/streaming.task?debug=1", json={"text": "hi"})
    assert response.json()["data"] == {"id": 1}

    heygen, command = spans.get_finished_spans()
    assert heygen.name == "HeyGen POST streaming.task"
    assert heygen.kind is SpanKind.CLIENT
    assert heygen.parent is not None
    assert heygen.parent.span_id == parent.get_span_context().span_id
    assert heygen.context.trace_id == command.context.trace_id
    attributes = dict(heygen.attributes or {})
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.full"] == f"{BASE}/v1/streaming.task"
    assert attributes["http.response.status_code"] == 200
    assert API_KEY not in json.dumps(attributes)
    # The traceparent on the wire names the HeyGen span.
    traceparent = seen[0].headers["traceparent"]
    assert traceparent.startswith(
        f"00-{heygen.context.trace_id:032x}-{heygen.context.span_id:016x}-"
    )


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"code": 100, "message": "success", "data": None}, "ok"),
        (400, {"code": 400006, "message": "Session is not in correct state"}, "session_closed"),
        (400, {"code": 10013, "message": "Concurrent limit reached"}, "capacity"),
        (400, {"code": 40001, "message": "missing parameter"}, "invalid_request"),
        (401, {"code": 400112, "message": "Unauthorized"}, "auth"),
        (429, {"message": "slow down"}, "rate_limited"),
        (500, None, "server"),
        (200, {"code": 40001, "message": "bad"}, "invalid_request"),
    ],
)
async def test_transport_records_outcome_and_keeps_the_body(
    spans: InMemorySpanExporter,
    registry: CollectorRegistry,
    status: int,
    body: dict[str, object] | None,
    outcome: str,
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if body is None:
            return httpx.Response(status, text="<html>oops</html>")
        return httpx.Response(status, json=body)

    async with client(handler, registry) as http:
        response = await http.post("/v1/streaming.task", json={})
    assert response.status_code == status
    assert (response.json() if body is not None else response.text) == (body or "<html>oops</html>")
    assert requests_total(registry, "streaming.task", outcome) == 1
    count = registry.get_sample_value(
        "heygen_worker_heygen_request_duration_seconds_count",
        {"provider": "heygen", "endpoint": "streaming.task"},
    )
    assert count == 1
    (span,) = spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["heygen.outcome"] == outcome
    assert span.status.status_code is (StatusCode.UNSET if outcome == "ok" else StatusCode.ERROR)


async def test_transport_counts_a_timeout_and_reraises(
    spans: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    async with client(handler, registry) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/streaming.keep_alive", json={})
    assert requests_total(registry, "streaming.keep_alive", "timeout") == 1
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


class Hanging(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


async def test_a_request_cancelled_by_the_callers_deadline_counts_as_timeout(
    spans: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    transport = InstrumentedTransport(Hanging(), Metrics(registry))
    async with httpx.AsyncClient(base_url=BASE, transport=transport) as http:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await http.post("/v1/streaming.stop", json={})
    assert requests_total(registry, "streaming.stop", "timeout") == 1
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR


async def test_transport_counts_a_connection_failure(
    spans: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client(handler, registry) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get("/v1/streaming.list")
    assert requests_total(registry, "streaming.list", "transport") == 1


async def test_transport_passes_a_compressed_body_through(
    spans: InMemorySpanExporter, registry: CollectorRegistry
) -> None:
    payload = {"code": 400006, "message": "Session is not in correct state"}

    def handler(request: httpx.Request) -> httpx.Response:
        raw = gzip.compress(json.dumps(payload).encode())
        return httpx.Response(400, headers={"Content-Encoding": "gzip"}, content=raw)

    async with client(handler, registry) as http:
        response = await http.post("/v1/streaming.task", json={})
    assert response.json() == payload
    assert requests_total(registry, "streaming.task", "session_closed") == 1


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("/v1/streaming.new", "streaming.new"),
        ("/v1/streaming.keep_alive", "streaming.keep_alive"),
        ("/v1/streaming.list", "streaming.list"),
        ("/v2/streaming.list", "v2.streaming.list"),
        ("/v1/streaming/avatar.list", "streaming.avatar.list"),
        ("/proxy/heygen/v1/streaming.stop", "streaming.stop"),
        ("/v1/streaming.whatever", "other"),
        ("/", "other"),
        ("/v1/sessions/abc123", "other"),
    ],
)
def test_endpoint_label_is_bounded(path: str, label: str) -> None:
    assert endpoint_label(path) == label


async def test_without_a_provider_the_producers_context_still_reaches_heygen(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_TRACES_EXPORTER",
    ):
        monkeypatch.delenv(name, raising=False)
    setup_tracing()  # no exporter asked for: nothing is recorded
    assert not recording()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 100, "message": "success", "data": None})

    producer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with client(handler, registry) as http:
        with consumer_span("session.speak", {"traceparent": producer.encode()}, "c1", "s1"):
            await http.post("/v1/streaming.task", json={"text": "hi"})
    assert seen[0].headers["traceparent"] == producer
    assert requests_total(registry, "streaming.task", "ok") == 1
