"""Every Prometheus metric family of the worker, registered on an injected registry."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from importlib import metadata
from itertools import product
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

import contracts
from contracts.codec import DecodeErrorReason
from contracts.common import Provider, SessionState, StopReason, TaskMode, TaskType

# Tens of milliseconds to minutes: prometheus-client's defaults stop at 10 s, and HeyGen calls
# and sync speech (the answer waits for the speech) take longer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
SESSION_DURATION_BUCKETS = (60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400)
KEEPALIVE_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# A confirm takes a millisecond or two on a healthy broker: finer at the bottom.
BROKER_CONFIRM_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.1, 0.5, 2.5)

# Known label values. Series for them exist from the first scrape, so rate() and increase() see
# the first event and alerts need no absent() guards. Other values are allowed where the worker's
# code chooses them (a bounded set); never put text from a message or an answer in a label.
# Vocabularies the contracts define are taken from them, so the two cannot drift apart.
OTHER = "other"
INVALID_COMMAND = "invalid"  # the type label of a command that could not be decoded
COMMAND_TYPES = tuple(contracts.COMMAND_TYPES)
COMMAND_OUTCOMES = (
    "ok",
    "rejected",
    "failed",
    "dead_lettered",
    "duplicate",
    "requeued",
    "forwarded",
)
HEYGEN_ENDPOINTS = (
    "streaming.new",
    "streaming.start",
    "streaming.ice",
    "streaming.task",
    "streaming.interrupt",
    "streaming.stop",
    "streaming.keep_alive",
    "streaming.list",
    "v2.streaming.list",
    "streaming.create_token",
    "streaming.avatar.list",
)
LIVEAVATAR_ENDPOINTS = (
    "sessions.token",
    "sessions.start",
    "sessions.keep-alive",
    "sessions.stop",
    "sessions.list",
    "sessions.get",
    "users.credits",
)
PROVIDERS = tuple(provider.value for provider in Provider)
PROVIDER_ENDPOINTS = {"heygen": HEYGEN_ENDPOINTS, "liveavatar": LIVEAVATAR_ENDPOINTS}
HEYGEN_ERROR_KINDS = (
    "auth",
    "forbidden",
    "session_closed",
    "invalid_request",
    "rate_limited",
    "server",
    "timeout",
    "capacity",
    "transport",
)
HEYGEN_OUTCOMES = ("ok", *HEYGEN_ERROR_KINDS)
RETRIED_KINDS = ("rate_limited", "server", "timeout", "transport", "capacity")
SESSION_STATES = tuple(state.value for state in SessionState if state is not SessionState.STOPPED)
SESSION_CREATE_OUTCOMES = ("ok", "capacity", "failed")
STOP_REASONS = tuple(reason.value for reason in StopReason)
TASK_TYPES = tuple(task_type.value for task_type in TaskType)
TASK_MODES = tuple(task_mode.value for task_mode in TaskMode)
KEEPALIVE_OUTCOMES = ("ok", "closed", "failed")
OBSERVED_KINDS = (
    "speech_started",
    "speech_ended",
    "user_speech_started",
    "user_speech_ended",
    "user_transcription",
    "avatar_transcription",
    "remote_stopped",
    "link_lost",
)
RECONNECT_OUTCOMES = ("ok", "attempt_failed", "gave_up")
EVENT_TYPES = tuple(contracts.EVENT_TYPES)
# Undecodable commands (the codec's reasons) and commands whose handler raised.
DEAD_LETTER_REASONS = (*(reason.value for reason in DecodeErrorReason), "handler_error")
BUS_CONNECTIONS = ("consume", "publish")
# What a confirmed publish carried (the publisher's vocabulary).
PUBLISH_KINDS = ("event", "state", "reply", "forward", "handover", "dead_letter")


M = TypeVar("M", Counter, Gauge, Histogram)


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`, else "other": keeps producer-chosen text out of labels."""
    return value if value is not None and value in allowed else OTHER


def _version() -> str:
    try:
        return metadata.version("heygen-streaming-worker")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The worker's metric families, used through its attributes: `m.commands_total.labels(...)`."""

    def __init__(self, registry: CollectorRegistry, *, version: str | None = None) -> None:
        # _created series double the series count; Prometheus 2 stores them as plain gauges.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        # labels() takes a lock and builds a key each call: a few percent of a speak's CPU.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

        # Commands (RED by type).
        self.commands_received_total = Counter(
            "heygen_worker_commands_received_total",
            "Commands taken from the bus.",
            ["type"],
            registry=registry,
        )
        self.commands_total = Counter(
            "heygen_worker_commands_total",
            "Commands finished, by outcome: ok, rejected, failed, dead_lettered, duplicate, "
            "requeued, forwarded (to the session's home partition).",
            ["type", "outcome"],
            registry=registry,
        )
        self.command_duration_seconds = Histogram(
            "heygen_worker_command_duration_seconds",
            "Time from receiving a command to acknowledging it.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.command_queue_delay_seconds = Histogram(
            "heygen_worker_command_queue_delay_seconds",
            "Time from the producer's publish to the worker receiving the command.",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.commands_in_flight = Gauge(
            "heygen_worker_commands_in_flight",
            "Commands received and not yet acknowledged.",
            registry=registry,
        )

        # HeyGen API.
        self.heygen_requests_total = Counter(
            "heygen_worker_heygen_requests_total",
            'Provider HTTP requests, by provider, endpoint and outcome ("ok" or an error kind).',
            ["provider", "endpoint", "outcome"],
            registry=registry,
        )
        self.heygen_request_duration_seconds = Histogram(
            "heygen_worker_heygen_request_duration_seconds",
            "Provider HTTP request latency, body read included.",
            ["provider", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.heygen_retries_total = Counter(
            "heygen_worker_heygen_retries_total",
            "Provider calls repeated after an error, by the error kind that caused the retry.",
            ["provider", "endpoint", "kind"],
            registry=registry,
        )

        # Sessions.
        self.sessions = Gauge(
            "heygen_worker_sessions",
            "Live sessions, by provider and state.",
            ["provider", "state"],
            registry=registry,
        )
        self.sessions_created_total = Counter(
            "heygen_worker_sessions_created_total",
            "session.create attempts, by provider and outcome: ok, capacity, failed.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.sessions_stopped_total = Counter(
            "heygen_worker_sessions_stopped_total",
            "Sessions ended, by provider and reason.",
            ["provider", "reason"],
            registry=registry,
        )
        self.session_duration_seconds = Histogram(
            "heygen_worker_session_duration_seconds",
            "Lifetime of ended sessions, by stop reason.",
            ["reason"],
            buckets=SESSION_DURATION_BUCKETS,
            registry=registry,
        )
        self.billed_session_seconds_total = Counter(
            "heygen_worker_billed_session_seconds_total",
            "Session time HeyGen bills, counted while sessions run.",
            registry=registry,
        )
        self.credits_estimated_total = Counter(
            "heygen_worker_credits_estimated_total",
            "HeyGen credits spent, as estimated by the worker.",
            registry=registry,
        )
        self.speech_tasks_total = Counter(
            "heygen_worker_speech_tasks_total",
            "Speeches accepted by the provider.",
            ["provider", "task_type", "task_mode"],
            registry=registry,
        )
        self.speech_characters_total = Counter(
            "heygen_worker_speech_characters_total",
            "Characters of text sent to be spoken.",
            registry=registry,
        )
        self.keepalives_total = Counter(
            "heygen_worker_keepalives_total",
            "Keep-alives sent, by provider and outcome: ok, closed, failed.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.keepalive_lateness_seconds = Histogram(
            "heygen_worker_keepalive_lateness_seconds",
            "How late a keep-alive was sent compared with its schedule.",
            buckets=KEEPALIVE_LATENESS_BUCKETS,
            registry=registry,
        )
        self.reconnects_total = Counter(
            "heygen_worker_reconnects_total",
            "Replacement provider sessions created for a closed one, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.credits_left = Gauge(
            "heygen_worker_provider_credits",
            "The provider account's credit balance, as last polled (liveavatar).",
            ["provider"],
            registry=registry,
        )
        self.credit_burn_per_minute = Gauge(
            "heygen_worker_credit_burn_per_minute",
            "Credits a minute the live sessions burn at the provider's published rate.",
            ["provider"],
            registry=registry,
        )
        self.observed_total = Counter(
            "heygen_worker_observed_total",
            "What providers observed on their own (speech, the end user, remote stops), by kind.",
            ["provider", "kind"],
            registry=registry,
        )
        self.leaked_sessions_stopped_total = Counter(
            "heygen_worker_leaked_sessions_stopped_total",
            "HeyGen sessions found running without an owner and stopped.",
            registry=registry,
        )

        # Bus.
        self.events_published_total = Counter(
            "heygen_worker_events_published_total",
            "Events confirmed by the broker, by type.",
            ["type"],
            registry=registry,
        )
        self.event_publish_failures_total = Counter(
            "heygen_worker_event_publish_failures_total",
            "Event publishes that were not confirmed (nack, timeout, closed channel).",
            registry=registry,
        )
        self.broker_confirm_seconds = Histogram(
            "heygen_worker_broker_confirm_seconds",
            "Time from publishing a message to the broker's confirm, by what it carried.",
            ["kind"],
            buckets=BROKER_CONFIRM_BUCKETS,
            registry=registry,
        )
        self.dead_letters_total = Counter(
            "heygen_worker_dead_letters_total",
            "Commands sent to the dead-letter queue.",
            ["reason"],
            registry=registry,
        )
        self.bus_connected = Gauge(
            "heygen_worker_bus_connected",
            "1 while the AMQP connection (consume or publish) is open.",
            ["connection"],
            registry=registry,
        )
        self.partitions_owned = Gauge(
            "heygen_worker_partitions_owned",
            "Command partitions on which this replica's consumer is the active one.",
            registry=registry,
        )
        self.broker_api_up = Gauge(
            "heygen_worker_broker_api_up",
            "1 when the RabbitMQ management API answered the last ownership poll; partitions"
            " owned and the dead-letter depth are stale while it is 0.",
            registry=registry,
        )
        self.dead_letter_queue_messages = Gauge(
            "heygen_worker_dead_letter_queue_messages",
            "Messages waiting in avatar.commands.dead, including those the broker dead-lettered"
            " at the delivery limit.",
            registry=registry,
        )
        self.partitions = Gauge(
            "heygen_worker_partitions", "Command partitions configured.", registry=registry
        )
        self.max_sessions = Gauge(
            "heygen_worker_max_sessions",
            "Live sessions this replica accepts at most.",
            registry=registry,
        )
        self.credit_alert_seconds = Gauge(
            "heygen_worker_credit_alert_seconds",
            "WORKER_CREDIT_ALERT_MINUTES, in seconds: CreditsRunningOut fires when the credit "
            "left lasts less than this at the live sessions' burn.",
            registry=registry,
        )
        self.build = Info("heygen_worker_build", "Worker build.", registry=registry)
        self.build.info({"version": version or _version(), "python": platform.python_version()})
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds...
        ProcessCollector(registry=registry)

        self._preset()

    def _preset(self) -> None:
        """Create the series of every known label value (at zero)."""
        command_types = (*COMMAND_TYPES, INVALID_COMMAND)
        for command_type in command_types:
            self.commands_received_total.labels(command_type)
            self.command_duration_seconds.labels(command_type)
            self.command_queue_delay_seconds.labels(command_type)
        for command_type, outcome in product(command_types, COMMAND_OUTCOMES):
            self.commands_total.labels(command_type, outcome)
        for provider, endpoints in PROVIDER_ENDPOINTS.items():
            for endpoint in endpoints:
                self.heygen_request_duration_seconds.labels(provider, endpoint)
            for endpoint, outcome in product(endpoints, HEYGEN_OUTCOMES):
                self.heygen_requests_total.labels(provider, endpoint, outcome)
            for endpoint, kind in product(endpoints, RETRIED_KINDS):
                self.heygen_retries_total.labels(provider, endpoint, kind)
        for provider, task_type, task_mode in product(PROVIDERS, TASK_TYPES, TASK_MODES):
            self.speech_tasks_total.labels(provider, task_type, task_mode)
        for provider, reason in product(PROVIDERS, STOP_REASONS):
            self.sessions_stopped_total.labels(provider, reason)
        for reason in STOP_REASONS:
            self.session_duration_seconds.labels(reason)
        by_provider: tuple[tuple[Counter | Gauge, tuple[str, ...]], ...] = (
            (self.sessions, SESSION_STATES),
            (self.sessions_created_total, SESSION_CREATE_OUTCOMES),
            (self.keepalives_total, KEEPALIVE_OUTCOMES),
            (self.reconnects_total, RECONNECT_OUTCOMES),
            (self.observed_total, OBSERVED_KINDS),
        )
        for family_by_provider, values in by_provider:
            for provider, value in product(PROVIDERS, values):
                family_by_provider.labels(provider, value)
        for provider in PROVIDERS:
            self.credit_burn_per_minute.labels(provider)
            # 0 until the first poll, which runs at start: with no burn, no alert divides by it.
            self.credits_left.labels(provider)
        presets: tuple[tuple[Counter | Gauge | Histogram, tuple[str, ...]], ...] = (
            (self.events_published_total, EVENT_TYPES),
            (self.dead_letters_total, DEAD_LETTER_REASONS),
            (self.bus_connected, BUS_CONNECTIONS),
            (self.broker_confirm_seconds, PUBLISH_KINDS),
        )
        for family, values in presets:
            for value in values:
                family.labels(value)

    def child(self, family: M, *values: str) -> M:
        """`family.labels(*values)`, cached: label values are a bounded set (see above)."""
        key = (id(family), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = family.labels(*values)
        return found

    def observe_request(self, provider: str, endpoint: str, outcome: str, seconds: float) -> None:
        """One finished provider HTTP request."""
        endpoint = bounded(endpoint, PROVIDER_ENDPOINTS.get(provider, ()))
        outcome = bounded(outcome, HEYGEN_OUTCOMES)
        self.child(self.heygen_requests_total, provider, endpoint, outcome).inc()
        self.child(self.heygen_request_duration_seconds, provider, endpoint).observe(seconds)

    def observe_confirm(self, kind: str, seconds: float) -> None:
        """One publish the broker confirmed; `kind` is one of PUBLISH_KINDS."""
        self.child(self.broker_confirm_seconds, kind).observe(seconds)
