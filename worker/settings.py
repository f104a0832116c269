"""Worker settings, read from environment variables (the table in docs/configuration.md is
generated from them: `python -m docsgen write`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.common import Provider
from worker.bus.connection import split_urls
from worker.observability.logs import LogFormat


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return frozenset(part.strip() for part in value.split(",") if part.strip())
    return value


class WorkerSettings(BaseSettings):
    """Every knob of the worker; the env var name is the alias of each field."""

    # The docstring under each field is its description: the docs' settings table is made of them.
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, use_attribute_docstrings=True
    )

    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"), validation_alias=_env("AMQP_URL")
    )
    """Broker URL; `amqps://` for TLS; the path is the vhost. Several comma-separated URLs name
    the nodes of a cluster: a lost connection comes back on the next one that answers."""
    amqp_ca_file: Path | None = Field(None, validation_alias=_env("AMQP_CA_FILE"))
    """CA bundle that verifies the broker's certificate with `amqps://`."""
    rabbitmq_management_url: str | None = Field(
        None, validation_alias=_env("RABBITMQ_MANAGEMENT_URL")
    )
    """Management API, read to learn which partitions this replica owns; default: the host of
    the node connected to, its AMQP port plus 10,000 (15672 for 5672, 15671 for 5671)."""
    ownership_poll_s: float = Field(5, gt=0, validation_alias=_env("WORKER_OWNERSHIP_POLL_S"))
    """How often partition ownership and the dead-letter depth are read; also paces rebalancing."""
    snapshot_refresh_s: float = Field(300, gt=0, validation_alias=_env("WORKER_SNAPSHOT_REFRESH_S"))
    """Every live session is re-snapshotted this often, spread over the period."""
    state_retention: str = Field(
        "1h", pattern=r"^\d+[YMDhms]$", validation_alias=_env("WORKER_STATE_RETENTION")
    )
    """`x-max-age` of the `avatar.sessions.state` stream (a RabbitMQ duration such as `2h`)."""
    heygen_api_key: SecretStr | None = Field(None, validation_alias=_env("HEYGEN_API_KEY"))
    """HeyGen API key; without it (and without the file) the bundled simulator stands in."""
    heygen_api_key_file: Path | None = Field(None, validation_alias=_env("HEYGEN_API_KEY_FILE"))
    """File holding the key (a Kubernetes secret mount)."""
    heygen_base_url: str = Field("https://api.heygen.com", validation_alias=_env("HEYGEN_BASE_URL"))
    """HeyGen API base URL."""
    heygen_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("HEYGEN_TIMEOUT_S"))
    """Per-request timeout; sync speaks get 1 s more per 4 characters."""
    simulator_port: int = Field(8090, ge=0, le=65535, validation_alias=_env("SIMULATOR_PORT"))
    """Port of the bundled simulator when no key is set."""
    default_provider: Provider = Field(
        Provider.HEYGEN, validation_alias=_env("WORKER_DEFAULT_PROVIDER")
    )
    """Provider of a `session.create` that names none: `heygen` or `liveavatar`."""
    liveavatar_api_key: SecretStr | None = Field(None, validation_alias=_env("LIVEAVATAR_API_KEY"))
    """LiveAvatar API key (not a HeyGen key); without it the bundled simulator stands in."""
    liveavatar_api_key_file: Path | None = Field(
        None, validation_alias=_env("LIVEAVATAR_API_KEY_FILE")
    )
    """File holding the LiveAvatar key (a Kubernetes secret mount)."""
    liveavatar_base_url: str = Field(
        "https://api.liveavatar.com", validation_alias=_env("LIVEAVATAR_BASE_URL")
    )
    """LiveAvatar API base URL."""
    liveavatar_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("LIVEAVATAR_TIMEOUT_S"))
    """Per-request timeout of LiveAvatar calls."""
    liveavatar_lite_event_id_per: Literal["utterance", "chunk"] = Field(
        "utterance", validation_alias=_env("LIVEAVATAR_LITE_EVENT_ID_PER")
    )
    """LITE: the `agent.speak` chunks of one utterance share one `event_id` (`utterance`, as
    pipecat sends them) or each has its own (`chunk`, as LiveKit's plugin); sources disagree."""
    liveavatar_lite_lead_s: float = Field(
        2.0, ge=0.5, le=60, validation_alias=_env("LIVEAVATAR_LITE_LEAD_S")
    )
    """LITE: how far ahead of real time an utterance's audio is sent, in seconds, so a long one
    does not fill LiveAvatar's buffer at once (and an interrupt has little queued to drop)."""
    credits_poll_s: float = Field(60, gt=0, validation_alias=_env("WORKER_CREDITS_POLL_S"))
    """How often each provider's credit balance is read (LiveAvatar's `/v1/users/credits`)."""
    credit_alert_minutes: float = Field(
        60, gt=0, validation_alias=_env("WORKER_CREDIT_ALERT_MINUTES")
    )
    """`CreditsRunningOut` fires when the balance covers fewer minutes than this at the live
    sessions' burn (2 credits a minute in FULL, 1 in LITE)."""
    speech_start_timeout_s: float = Field(
        15, gt=0, validation_alias=_env("WORKER_SPEECH_START_TIMEOUT_S")
    )
    """A speak the avatar has not started this long after its turn is answered `command.failed`
    (`speech_not_started`), never sent again."""

    partitions: int = Field(8, ge=1, le=1024, validation_alias=_env("WORKER_PARTITIONS"))
    """Partition queues; must match across replicas and the existing queues."""
    prefetch: int = Field(64, ge=1, le=10_000, validation_alias=_env("WORKER_PREFETCH"))
    """Unacknowledged commands per partition."""
    http_concurrency: int = Field(
        64, ge=1, le=10_000, validation_alias=_env("WORKER_HTTP_CONCURRENCY")
    )
    """HeyGen requests in flight."""
    max_sessions: int = Field(100, ge=1, validation_alias=_env("WORKER_MAX_SESSIONS"))
    """Live sessions per replica; a create beyond it is rejected with `capacity`."""
    idle_timeout_s: float = Field(300, gt=0, validation_alias=_env("WORKER_IDLE_TIMEOUT_S"))
    """Stop a session after this long without a speak (reason `idle`)."""
    max_duration_s: float = Field(3600, gt=0, validation_alias=_env("WORKER_MAX_DURATION_S"))
    """Stop any session after this long (reason `max_duration`)."""
    keepalive_interval_s: float = Field(
        30, gt=0, validation_alias=_env("WORKER_KEEPALIVE_INTERVAL_S")
    )
    """Keep-alive interval, capped at a third of the session's `activity_idle_timeout`."""
    keepalive_concurrency: int = Field(
        32, ge=1, validation_alias=_env("WORKER_KEEPALIVE_CONCURRENCY")
    )
    """Keep-alives in flight."""
    reconnect_attempts: int = Field(3, ge=0, validation_alias=_env("WORKER_RECONNECT_ATTEMPTS"))
    """Replacement attempts for a session HeyGen closed, before giving up on it."""
    reconcile_interval_s: float = Field(
        60, gt=0, validation_alias=_env("WORKER_RECONCILE_INTERVAL_S")
    )
    """How often the sessions are compared with `streaming.list`."""
    leak_grace_s: float = Field(120, ge=0, validation_alias=_env("WORKER_LEAK_GRACE_S"))
    """How long an unknown HeyGen session may live before it is reaped."""
    orphan_grace_s: float = Field(30, ge=0, validation_alias=_env("WORKER_ORPHAN_GRACE_S"))
    """After taking over a `session.create` cut short by a crash, how long to wait before
    stopping the HeyGen session it may have made."""
    reap_unknown_sessions: bool = Field(
        False, validation_alias=_env("WORKER_REAP_UNKNOWN_SESSIONS")
    )
    """Stop HeyGen sessions this worker does not own (only when one replica uses the key)."""
    shutdown_grace_s: float = Field(25, ge=0, validation_alias=_env("WORKER_SHUTDOWN_GRACE_S"))
    """Drain time for in-flight commands after SIGTERM."""
    stop_sessions_on_shutdown: bool = Field(
        False, validation_alias=_env("WORKER_STOP_SESSIONS_ON_SHUTDOWN")
    )
    """Stop live sessions at shutdown instead of leaving them to the next owner."""
    delivery_limit: int = Field(5, ge=1, validation_alias=_env("WORKER_DELIVERY_LIMIT"))
    """`x-delivery-limit` of the partition queues."""
    publish_timeout_s: float = Field(10, gt=0, validation_alias=_env("WORKER_PUBLISH_TIMEOUT_S"))
    """Bound on every publish, confirm included."""
    dedup_capacity: int = Field(100_000, ge=1, validation_alias=_env("WORKER_DEDUP_CAPACITY"))
    """Command ids remembered for idempotency."""
    max_text_chars: int = Field(2000, ge=1, validation_alias=_env("WORKER_MAX_TEXT_CHARS"))
    """Longest speech text accepted."""
    max_message_bytes: int = Field(
        65_536, ge=1024, validation_alias=_env("WORKER_MAX_MESSAGE_BYTES")
    )
    """Largest command body accepted."""
    admins: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias=_env("WORKER_ADMINS")
    )
    """Comma-separated AMQP users allowed to act on any session."""
    require_user_id: bool = Field(False, validation_alias=_env("WORKER_REQUIRE_USER_ID"))
    """Refuse commands without a broker-validated `user_id` (code `forbidden`)."""
    credits_per_minute: float = Field(0.2, ge=0, validation_alias=_env("WORKER_CREDITS_PER_MINUTE"))
    """Credits per streaming minute, for the usage estimate."""
    worker_id: str = Field(default_factory=_default_worker_id, validation_alias=_env("WORKER_ID"))
    """Names this replica in events and connection names; default `<hostname>-<pid>`."""
    metrics_host: str = Field("0.0.0.0", validation_alias=_env("METRICS_HOST"))
    """Address of the `/metrics`, `/healthz` and `/readyz` server."""
    metrics_port: int = Field(9464, ge=0, le=65535, validation_alias=_env("METRICS_PORT"))
    """Port of that server."""
    _admins = field_validator("admins", mode="before")(_comma_separated)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_urls_parse(cls, value: SecretStr) -> SecretStr:
        split_urls(value.get_secret_value())
        return value

    @property
    def amqp_urls(self) -> list[str]:
        return split_urls(self.amqp_url.get_secret_value())

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_env("LOG_LEVEL")
    )
    """`DEBUG`, `INFO`, `WARNING` or `ERROR`."""
    log_format: LogFormat = Field("auto", validation_alias=_env("LOG_FORMAT"))
    """`auto` (readable lines on a terminal, JSON otherwise), `json` or `console`."""
