"""One trace from producer to worker to HeyGen to the events, and a full run whose logs, metrics
and spans never show the API key or an access token (issue 5)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.codec import decode_event, encode_command
from contracts.commands import CommandBase, SessionSpeak, SessionSpeakAudio, SessionStop
from contracts.common import TaskMode
from contracts.events import CommandFailed, Event, SessionCreated, SessionReconnected
from contracts.topology import EVENTS_EXCHANGE, command_routing_key
from simulator.server import RunningSimulator
from tests.integration.conftest import (
    LIVEAVATAR_AVATAR,
    HttpLog,
    Producer,
    answer_to,
    create,
    tapped_producer,
    wait_until,
    worker_settings,
)
from worker.app import Worker
from worker.observability.logs import configure_logging
from worker.observability.tracing import setup_tracing, shutdown_tracing
from worker.observability.transport import endpoint_label
from worker.providers.transport import default_transport

# Distinctive, so a search of the output cannot miss it nor match by accident.
API_KEY = "sk-obs-e2e-5f1d2c9a7b3e4d6f8a0b"
PROPAGATOR = TraceContextTextMapPropagator()


@pytest.fixture
def simulator_overrides() -> dict[str, Any]:
    return {"api_keys": [API_KEY], "words_per_minute": 6000}


@pytest.fixture(autouse=True)
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Every span the in-process worker ends (run_worker sets tracing up; tests do it here)."""
    exporter = InMemorySpanExporter()
    setup_tracing(exporter=exporter)
    yield exporter
    shutdown_tracing()


class HeaderLog(HttpLog):
    """The worker's HeyGen traffic with each request's headers (the simulator keeps no headers)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        super().__init__(inner)
        self.headers: list[tuple[str, httpx.Headers]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.headers.append((endpoint_label(request.url.path), request.headers.copy()))
        return await super().handle_async_request(request)


@pytest.fixture
def http_log() -> HeaderLog:
    return HeaderLog(default_transport(8))


class RawEvents:
    """Every message published to avatar.events, as it arrived (headers included)."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        self.messages.append(message)

    def caused_by(self, command: CommandBase) -> list[tuple[Event, AbstractIncomingMessage]]:
        decoded = [(decode_event(m.body, content_type=m.content_type), m) for m in self.messages]
        return [(e, m) for e, m in decoded if e.causation_id == command.command_id]


async def bind_raw_events(connection: AbstractRobustConnection) -> RawEvents:
    channel = await connection.channel()
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    queue = await channel.declare_queue("", exclusive=True)
    await queue.bind(exchange, routing_key="#")
    raw = RawEvents()
    await queue.consume(raw.on_message, no_ack=True)
    return raw


@pytest.fixture
async def raw_events(connection: AbstractRobustConnection, worker: Worker) -> RawEvents:
    return await bind_raw_events(connection)


async def publish_traced(
    producer: Producer, provider: TracerProvider, command: CommandBase
) -> tuple[int, int]:
    """Publish `command` inside a PRODUCER span of the producer's own tracer, its context in
    the traceparent header; returns (trace id, span id) of that span."""
    tracer = provider.get_tracer("producer")
    with tracer.start_as_current_span(f"{command.type} publish", kind=SpanKind.PRODUCER) as span:
        envelope = encode_command(command)
        PROPAGATOR.inject(envelope.properties["headers"])
        await producer.publish_raw(
            envelope.body, command_routing_key(command), **envelope.properties
        )
    context = span.get_span_context()
    return context.trace_id, context.span_id


def traceparent(value: object) -> tuple[int, int]:
    """(trace id, parent span id) of a W3C traceparent header (AMQP may give bytes)."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    version, trace_id, span_id, flags = text.split("-")
    assert version == "00", text
    assert int(flags, 16) & 1, text  # sampled
    return int(trace_id, 16), int(span_id, 16)


def consumer_span(spans: InMemorySpanExporter, command_id: str) -> ReadableSpan | None:
    return next(
        (
            span
            for span in spans.get_finished_spans()
            if span.kind is SpanKind.CONSUMER
            and span.attributes is not None
            and span.attributes.get("messaging.message.id") == command_id
        ),
        None,
    )


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


async def test_one_trace_runs_producer_worker_heygen_events(
    producer: Producer,
    raw_events: RawEvents,
    spans: InMemorySpanExporter,
    http_log: HeaderLog,
) -> None:
    provider = TracerProvider()
    commands = {
        create("traced"): ["streaming.new", "streaming.start"],
        SessionSpeak(session_id="traced", text="follow me", task_mode=TaskMode.SYNC): [
            "streaming.task"
        ],
    }
    for command, endpoints in commands.items():
        trace_id, producer_span = await publish_traced(producer, provider, command)
        (answer,) = await producer.tap.answers([command])
        assert answer.type in {"session.ready", "speech.started"}, answer

        await wait_until(lambda c=command: consumer_span(spans, c.command_id))  # type: ignore[misc]
        consumer = consumer_span(spans, command.command_id)
        assert consumer is not None
        assert consumer.context is not None
        assert consumer.context.trace_id == trace_id
        assert consumer.parent is not None
        assert consumer.parent.is_remote
        assert consumer.parent.span_id == producer_span

        # A CLIENT span per HeyGen request, children of the consumer span, in request order.
        clients = [
            span
            for span in spans.get_finished_spans()
            if span.kind is SpanKind.CLIENT
            and span.parent is not None
            and span.parent.span_id == span_id(consumer)
        ]
        assert [span.attributes and span.attributes["heygen.endpoint"] for span in clients] == (
            endpoints
        )
        assert all(span.context and span.context.trace_id == trace_id for span in clients)

        # Each request went out with its CLIENT span as the parent in traceparent.
        sent = [
            (endpoint, traceparent(headers["traceparent"]))
            for endpoint, headers in http_log.headers
            if "traceparent" in headers and traceparent(headers["traceparent"])[0] == trace_id
        ]
        assert sent == [
            (e, (trace_id, span_id(s))) for e, s in zip(endpoints, clients, strict=True)
        ]

        # Every event of the command continues the trace from the consumer span.
        await wait_until(lambda c=command: len(raw_events.caused_by(c)) >= 2)  # type: ignore[misc]
        for event, message in raw_events.caused_by(command):
            assert "traceparent" in message.headers, event.type
            assert traceparent(message.headers["traceparent"]) == (trace_id, span_id(consumer))


# --- secrets -----------------------------------------------------------------------------


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The worker's JSON logs, as configured in production, at DEBUG (the most output)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream)
    yield stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@contextlib.asynccontextmanager
async def started(worker: Worker) -> AsyncIterator[Worker]:
    try:
        await worker.start()
        yield worker
    finally:
        await worker.shutdown()


async def scrape(worker: Worker) -> str:
    assert worker.health is not None
    async with httpx.AsyncClient() as http:
        return (await http.get(f"http://127.0.0.1:{worker.health.port}/metrics")).text


def log_records(output: str) -> list[dict[str, Any]]:
    """The log lines, each of which must be one JSON object with the context fields."""
    records = []
    for line in output.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        assert {"level", "message", "session_id", "command_id", "trace_id"} <= set(record), line
        records.append(record)
    return records


async def test_no_secret_in_logs_metrics_or_spans(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    http_log: HeaderLog,
    spans: InMemorySpanExporter,
    log_output: io.StringIO,
) -> None:
    worker = Worker(worker_settings(amqp_url, simulator), transport=http_log)
    async with started(worker):
        producer = await tapped_producer(connection)
        raw = await bind_raw_events(connection)
        created = await producer.open_session("secret")
        speak = SessionSpeak(session_id="secret", text="nothing to hide")
        await producer.call(speak)
        # A HeyGen error answer, then a session HeyGen closed: reconnected with a fresh token.
        await simulator.admin.set_fault("streaming.task", status=500, count=1)
        failed = await producer.call(SessionSpeak(session_id="secret", text="boom"))
        assert isinstance(failed, CommandFailed)
        assert failed.code == "server"
        await simulator.admin.close_session(created.heygen_session_id)
        failed = await producer.call(SessionSpeak(session_id="secret", text="anyone there"))
        assert isinstance(failed, CommandFailed)
        assert failed.code == "session_closed"
        stop = SessionStop(session_id="secret")
        assert (await producer.call(stop)).type == "session.stopped"
        metrics = await scrape(worker)
        await wait_until(lambda: len(raw.messages) == len(producer.tap.events))

    connection_events = [
        e for e in producer.tap.of("secret") if isinstance(e, SessionCreated | SessionReconnected)
    ]
    tokens = [e.access_token for e in connection_events]
    assert len(set(tokens)) == 2, tokens
    # Where the tokens belong: the events that hand the viewer the stream.
    for message in raw.messages:
        body = message.body.decode()
        assert API_KEY not in body
        if message.type not in {"session.created", "session.reconnected"}:
            assert not any(token in body for token in tokens if token), message.type

    output = log_output.getvalue()
    span_dump = "\n".join(span.to_json() for span in spans.get_finished_spans())
    for secret in [API_KEY, *tokens]:
        assert secret  # a token of None or "" would make the search vacuous
        assert secret not in output
        assert secret not in metrics
        assert secret not in span_dump

    # The lines logged while handling a command carry its ids and its trace.
    records = log_records(output)
    handled = [r for r in records if r["command_id"] is not None]
    assert created.causation_id is not None
    for command_id in (created.causation_id, speak.command_id, stop.command_id):
        consumer = consumer_span(spans, command_id)
        assert consumer is not None
        assert consumer.context is not None
        lines = [r for r in handled if r["command_id"] == command_id]
        assert lines, command_id
        for record in lines:
            assert record["session_id"] == "secret"
            assert record["trace_id"] == format(consumer.context.trace_id, "032x")


LIVEAVATAR_KEY = "la-obs-e2e-8c2e4a7d1f6b3a9e0c5d"


async def test_no_liveavatar_secret_in_logs_metrics_spans_or_events(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    spans: InMemorySpanExporter,
    log_output: io.StringIO,
) -> None:
    """LiveAvatar's key, the worker's agent token and the browser's client token: only the
    last, and only in the events that hand the viewer the stream."""
    settings = worker_settings(amqp_url, simulator, liveavatar_api_key=LIVEAVATAR_KEY)
    worker = Worker(settings)
    async with started(worker):
        producer = await tapped_producer(connection)
        raw = await bind_raw_events(connection)
        created = await producer.open_session(
            "la-secret", provider="liveavatar", avatar_id=LIVEAVATAR_AVATAR
        )
        assert worker.services is not None
        session = worker.services.registry.get("la-secret")
        assert session is not None
        assert session.resume is not None
        agent_room = session.resume.get_secret_value()  # the agent token and the room URL
        speak = SessionSpeak(session_id="la-secret", text="nothing to hide")
        await producer.call(speak)
        await producer.tap.wait_for(answer_to(speak, {"speech.finished"}))
        # A dropped room: reconnected, with a fresh client token.
        await simulator.admin.drop_room(created.heygen_session_id)
        await producer.tap.wait_for(lambda e: isinstance(e, SessionReconnected), 20)
        stop = SessionStop(session_id="la-secret")
        assert (await producer.call(stop)).type == "session.stopped"
        metrics = await scrape(worker)
        await wait_until(lambda: len(raw.messages) == len(producer.tap.events))

    connection_events = [
        e
        for e in producer.tap.of("la-secret")
        if isinstance(e, SessionCreated | SessionReconnected)
    ]
    tokens = [e.livekit_client_token for e in connection_events]
    assert len(set(tokens)) == 2, tokens
    agent_token = json.loads(agent_room)["token"]
    for message in raw.messages:
        body = message.body.decode()
        assert LIVEAVATAR_KEY not in body
        assert agent_token not in body
        if message.type not in {"session.created", "session.reconnected"}:
            assert not any(token in body for token in tokens if token), message.type

    output = log_output.getvalue()
    span_dump = "\n".join(span.to_json() for span in spans.get_finished_spans())
    for secret in [LIVEAVATAR_KEY, agent_token, *tokens]:
        assert secret  # a token of None or "" would make the search vacuous
        assert secret not in output
        assert secret not in metrics
        assert secret not in span_dump


async def test_no_lite_audio_or_ws_url_in_logs_metrics_spans_or_events(
    amqp_url: str,
    simulator: RunningSimulator,
    connection: AbstractRobustConnection,
    spans: InMemorySpanExporter,
    log_output: io.StringIO,
) -> None:
    """LITE: the producer's audio (good or refused) and the worker's ws_url stay out of every
    log line, metric, span and event."""
    worker = Worker(worker_settings(amqp_url, simulator))
    async with started(worker):
        producer = await tapped_producer(connection)
        raw = await bind_raw_events(connection)
        await producer.open_session(
            "lite-secret", provider="liveavatar", avatar_id=LIVEAVATAR_AVATAR, mode="LITE"
        )
        assert worker.services is not None
        session = worker.services.registry.get("lite-secret")
        assert session is not None
        assert session.resume is not None
        ws_url = json.loads(session.resume.get_secret_value())["ws_url"]
        spoken = base64.b64encode(os.urandom(24_000)).decode()
        part = SessionSpeakAudio(
            session_id="lite-secret", utterance_id="u1", audio=spoken, final=True
        )
        assert (await producer.call(part)).type == "command.completed"
        await producer.tap.wait_for(answer_to(part, {"speech.finished"}))
        # Refused audio (an odd number of bytes) is not echoed either.
        refused_audio = base64.b64encode(os.urandom(3003)).decode()
        body = json.dumps(
            {
                "type": "session.speak_audio",
                "command_id": "bad-audio",
                "session_id": "lite-secret",
                "utterance_id": "u2",
                "audio": refused_audio,
            }
        ).encode()
        await producer.publish_raw(body, "lite-secret", content_type="application/json")
        await producer.tap.wait_for(lambda e: e.causation_id == "bad-audio")
        metrics = await scrape(worker)
        await wait_until(lambda: len(raw.messages) == len(producer.tap.events))

    output = log_output.getvalue()
    span_dump = "\n".join(span.to_json() for span in spans.get_finished_spans())
    bodies = "\n".join(message.body.decode() for message in raw.messages)
    for secret in [ws_url, spoken[:64], spoken[-64:], refused_audio[:64], refused_audio[-64:]]:
        assert secret not in output
        assert secret not in metrics
        assert secret not in span_dump
        assert secret not in bodies
