"""Every Prometheus metric family of the worker, registered on an injected registry."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from itertools import product

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)

# Tens of milliseconds to minutes: prometheus-client's defaults stop at 10 s, and HeyGen calls
# and sync speech (the answer waits for the speech) take longer.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
SESSION_DURATION_BUCKETS = (60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200, 10800, 14400)
KEEPALIVE_LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# Known label values. Series for them exist from the first scrape, so rate() and increase() see
# the first event and alerts need no absent() guards. Other values are allowed where the worker
# chooses them (bounded by code); values that come from the outside go through bounded().
OTHER = "other"
COMMAND_TYPES = (
    "session.create",
    "session.start",
    "session.ice",
    "session.speak",
    "session.interrupt",
    "session.stop",
    "session.keepalive",
    "sessions.list",
)
COMMAND_OUTCOMES = ("ok", "rejected", "failed", "dead_lettered", "duplicate", "requeued")
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
SESSION_STATES = ("creating", "ready", "speaking", "stopping", "reconnecting")
SESSION_CREATE_OUTCOMES = ("ok", "capacity", "failed")
STOP_REASONS = ("requested", "idle", "max_duration", "expired_remotely", "shutdown", "error")
TASK_TYPES = ("repeat", "talk")
TASK_MODES = ("sync", "async")
KEEPALIVE_OUTCOMES = ("ok", "session_closed", "failed")
RECONNECT_OUTCOMES = ("ok", "failed")
EVENT_TYPES = (
    "session.created",
    "session.ready",
    "speech.started",
    "speech.finished",
    "speech.interrupted",
    "session.keepalive_failed",
    "session.reconnecting",
    "session.reconnected",
    "session.stopped",
    "command.rejected",
    "command.failed",
)
DEAD_LETTER_REASONS = ("malformed", "unknown_type", "delivery_limit", "poison")
BUS_CONNECTIONS = ("consume", "publish")


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """`value` if it is one of `allowed`, else "other": keeps producer-chosen text out of labels."""
    return value if value is not None and value in allowed else OTHER


def _version() -> str:
    try:
        return metadata.version("heygen-streaming-worker")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The worker's metric families. Use the attributes directly (`m.commands_total.labels(...)`);
    the few methods exist where one event touches several families or labels need bounding."""

    def __init__(self, registry: CollectorRegistry, *, version: str | None = None) -> None:
        # _created series double the series count; Prometheus 2 stores them as plain gauges.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream

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
            "requeued.",
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
            'HeyGen HTTP requests, by endpoint and outcome ("ok" or an error kind).',
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.heygen_request_duration_seconds = Histogram(
            "heygen_worker_heygen_request_duration_seconds",
            "HeyGen HTTP request latency, body read included.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.heygen_retries_total = Counter(
            "heygen_worker_heygen_retries_total",
            "HeyGen calls repeated after an error, by the error kind that caused the retry.",
            ["endpoint", "kind"],
            registry=registry,
        )

        # Sessions.
        self.sessions = Gauge(
            "heygen_worker_sessions", "Live sessions, by state.", ["state"], registry=registry
        )
        self.sessions_created_total = Counter(
            "heygen_worker_sessions_created_total",
            "session.create attempts, by outcome: ok, capacity, failed.",
            ["outcome"],
            registry=registry,
        )
        self.sessions_stopped_total = Counter(
            "heygen_worker_sessions_stopped_total",
            "Sessions ended, by reason.",
            ["reason"],
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
            "Session time HeyGen bills (per started minute).",
            registry=registry,
        )
        self.credits_estimated_total = Counter(
            "heygen_worker_credits_estimated_total",
            "HeyGen credits spent, as estimated by the worker.",
            registry=registry,
        )
        self.speech_tasks_total = Counter(
            "heygen_worker_speech_tasks_total",
            "streaming.task calls accepted by HeyGen.",
            ["task_type", "task_mode"],
            registry=registry,
        )
        self.speech_characters_total = Counter(
            "heygen_worker_speech_characters_total",
            "Characters of text sent to be spoken.",
            registry=registry,
        )
        self.keepalives_total = Counter(
            "heygen_worker_keepalives_total",
            "Keep-alives sent, by outcome: ok, session_closed, failed.",
            ["outcome"],
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
            "Replacement HeyGen sessions created for a closed one, by outcome.",
            ["outcome"],
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
            "Command partitions this replica has a consumer on.",
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
        self.build = Info("heygen_worker_build", "Worker build.", registry=registry)
        self.build.info({"version": version or _version(), "python": platform.python_version()})
        # process_cpu_seconds_total, process_resident_memory_bytes, process_start_time_seconds...
        ProcessCollector(registry=registry)

        self._preset()

    def _preset(self) -> None:
        """Create the series of every known label value (at zero)."""
        command_types = (*COMMAND_TYPES, OTHER)  # "other": what a producer got wrong
        for command_type in command_types:
            self.commands_received_total.labels(command_type)
            self.command_duration_seconds.labels(command_type)
            self.command_queue_delay_seconds.labels(command_type)
        for command_type, outcome in product(command_types, COMMAND_OUTCOMES):
            self.commands_total.labels(command_type, outcome)
        for endpoint in HEYGEN_ENDPOINTS:
            self.heygen_request_duration_seconds.labels(endpoint)
        for endpoint, outcome in product(HEYGEN_ENDPOINTS, HEYGEN_OUTCOMES):
            self.heygen_requests_total.labels(endpoint, outcome)
        for endpoint, kind in product(HEYGEN_ENDPOINTS, RETRIED_KINDS):
            self.heygen_retries_total.labels(endpoint, kind)
        for task_type, task_mode in product(TASK_TYPES, TASK_MODES):
            self.speech_tasks_total.labels(task_type, task_mode)
        for reason in STOP_REASONS:
            self.sessions_stopped_total.labels(reason)
            self.session_duration_seconds.labels(reason)
        presets = (
            (self.sessions, SESSION_STATES),
            (self.sessions_created_total, SESSION_CREATE_OUTCOMES),
            (self.keepalives_total, KEEPALIVE_OUTCOMES),
            (self.reconnects_total, RECONNECT_OUTCOMES),
            (self.events_published_total, EVENT_TYPES),
            (self.dead_letters_total, DEAD_LETTER_REASONS),
            (self.bus_connected, BUS_CONNECTIONS),
        )
        for family, values in presets:
            for value in values:
                family.labels(value)

    @staticmethod
    def command_type(raw: str | None) -> str:
        """The label for a command type; unknown (producer-chosen) types become "other"."""
        return bounded(raw, COMMAND_TYPES)

    def observe_heygen(self, endpoint: str, outcome: str, seconds: float) -> None:
        """One finished HeyGen HTTP request."""
        endpoint = bounded(endpoint, HEYGEN_ENDPOINTS)
        self.heygen_requests_total.labels(endpoint, bounded(outcome, HEYGEN_OUTCOMES)).inc()
        self.heygen_request_duration_seconds.labels(endpoint).observe(seconds)

    def observe_heygen_retry(self, endpoint: str, kind: str) -> None:
        """A HeyGen call about to be repeated after an error of `kind`."""
        self.heygen_retries_total.labels(
            bounded(endpoint, HEYGEN_ENDPOINTS), bounded(kind, HEYGEN_ERROR_KINDS)
        ).inc()

    def observe_received(self, command_type: str | None, queue_delay: float | None) -> None:
        """A command taken from the bus; `queue_delay` is None when the publish time is unknown."""
        label = self.command_type(command_type)
        self.commands_received_total.labels(label).inc()
        if queue_delay is not None:
            # Producer and worker clocks differ: a negative delay is skew, not time travel.
            self.command_queue_delay_seconds.labels(label).observe(max(queue_delay, 0.0))

    def observe_finished(self, command_type: str | None, outcome: str, seconds: float) -> None:
        """A command settled (acked, rejected, dead-lettered, requeued) `seconds` after receipt."""
        label = self.command_type(command_type)
        self.commands_total.labels(label, outcome).inc()
        self.command_duration_seconds.labels(label).observe(seconds)

    def set_session_counts(self, counts: Mapping[str, int]) -> None:
        """Set the live-session gauge from a {state: count} snapshot (missing states are 0)."""
        for state in {*SESSION_STATES, *counts}:
            self.sessions.labels(state).set(counts.get(state, 0))

    def observe_session_stopped(self, reason: str, duration_s: float) -> None:
        """A session ended (billed seconds and credits are counted separately, as they accrue)."""
        self.sessions_stopped_total.labels(reason).inc()
        self.session_duration_seconds.labels(reason).observe(duration_s)
