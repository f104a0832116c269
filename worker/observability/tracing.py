"""OpenTelemetry tracing: provider setup from the standard OTEL_* variables and W3C propagation."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanContext, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

INSTRUMENTATION_NAME = "worker"
_PROPAGATOR = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def _env_wants_otlp() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    }
    if "none" in exporters:
        return False
    endpoint_set = any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    return "otlp" in exporters or endpoint_set


def setup_tracing(
    service_name: str = "heygen-streaming-worker", *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Make the provider that tracer() uses. `exporter` (tests) gets every span synchronously;
    without it, spans go to OTLP over HTTP when the OTEL_* environment asks for it, and when it
    does not, there is no provider: the API's no-op tracer still passes the producer's trace
    context on (to HeyGen, to events, into logs) at a fraction of the SDK's cost per span.

    Calling it again replaces (and shuts down) the previous provider, so tests can each pass
    their own in-memory exporter. The global provider is set once, for libraries that use it.
    """
    global _provider, _tracer
    if exporter is None and not _env_wants_otlp():
        if _provider is not None:
            _provider.shutdown()
        _provider = None
        _tracer = trace.get_tracer(INSTRUMENTATION_NAME)
        return None
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES; attributes passed here win, so pass the
    # operator's OTEL_SERVICE_NAME rather than overriding it.
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif _env_wants_otlp():
        # Imported here: the exporter pulls in protobuf, which a worker without OTLP never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION_NAME)
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Flush and stop export (call at process exit: the batch processor holds unsent spans)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
        _provider = None
        _tracer = None


def tracer() -> Tracer:
    """The worker's tracer: from setup_tracing()'s provider, else the global (no-op) one."""
    if _tracer is not None:
        return _tracer  # a provider's get_tracer builds a new Tracer each call
    return trace.get_tracer(INSTRUMENTATION_NAME)


def extract_context(headers: Mapping[str, Any] | None) -> Context:
    """The trace context carried by message headers (W3C traceparent/tracestate).

    AMQP header values may be bytes (or absent); keys are matched case-insensitively.
    """
    carrier: dict[str, str] = {}
    for key, value in (headers or {}).items():
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", errors="replace")
        if isinstance(value, str):
            carrier[key.lower()] = value
    return _PROPAGATOR.extract(carrier)


def inject_context(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    """Write the current (or the given) span's traceparent/tracestate into `headers`."""
    _PROPAGATOR.inject(headers, context=context)


@contextmanager
def consumer_span(
    command_type: str, headers: Mapping[str, Any], command_id: str, session_id: str | None
) -> Iterator[Span]:
    """A consumer span per command, continuing the producer's trace from the message headers
    (aio-pika's instrumentation loses it with iterators, so it is done here)."""
    if not recording():
        # What the no-op tracer would do, without its layers: the producer's context current.
        with trace.use_span(trace.NonRecordingSpan(_parent(extract_context(headers)))) as span:
            yield span
        return
    attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation": "process",
        "messaging.message.id": command_id,
        "heygen_worker.command_type": command_type,
        "heygen_worker.session_id": session_id or "",
    }
    with tracer().start_as_current_span(
        f"{command_type} process",
        context=extract_context(headers),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def recording() -> bool:
    """Whether spans are recorded (setup_tracing() made a provider). Without, hot paths skip
    the no-op tracer's layers, a tenth of a HeyGen request's CPU, and only pass context on."""
    return _provider is not None


def _parent(context: Context) -> SpanContext:
    return trace.get_current_span(context).get_span_context()
