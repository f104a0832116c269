"""Worker settings, read from environment variables (one table in the README)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from contracts.common import Provider
from worker.bus.connection import split_urls


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

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    # Several comma-separated URLs name the nodes of a cluster: see worker/bus/connection.py.
    amqp_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"), validation_alias=_env("AMQP_URL")
    )
    amqp_ca_file: Path | None = Field(None, validation_alias=_env("AMQP_CA_FILE"))
    rabbitmq_management_url: str | None = Field(
        None, validation_alias=_env("RABBITMQ_MANAGEMENT_URL")
    )
    ownership_poll_s: float = Field(5, gt=0, validation_alias=_env("WORKER_OWNERSHIP_POLL_S"))
    snapshot_refresh_s: float = Field(300, gt=0, validation_alias=_env("WORKER_SNAPSHOT_REFRESH_S"))
    state_retention: str = Field(
        "1h", pattern=r"^\d+[YMDhms]$", validation_alias=_env("WORKER_STATE_RETENTION")
    )
    heygen_api_key: SecretStr | None = Field(None, validation_alias=_env("HEYGEN_API_KEY"))
    heygen_api_key_file: Path | None = Field(None, validation_alias=_env("HEYGEN_API_KEY_FILE"))
    heygen_base_url: str = Field("https://api.heygen.com", validation_alias=_env("HEYGEN_BASE_URL"))
    heygen_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("HEYGEN_TIMEOUT_S"))
    simulator_port: int = Field(8090, ge=0, le=65535, validation_alias=_env("SIMULATOR_PORT"))
    default_provider: Provider = Field(
        Provider.HEYGEN, validation_alias=_env("WORKER_DEFAULT_PROVIDER")
    )
    liveavatar_api_key: SecretStr | None = Field(None, validation_alias=_env("LIVEAVATAR_API_KEY"))
    liveavatar_api_key_file: Path | None = Field(
        None, validation_alias=_env("LIVEAVATAR_API_KEY_FILE")
    )
    liveavatar_base_url: str = Field(
        "https://api.liveavatar.com", validation_alias=_env("LIVEAVATAR_BASE_URL")
    )
    liveavatar_timeout_s: float = Field(30.0, gt=0, validation_alias=_env("LIVEAVATAR_TIMEOUT_S"))
    credits_poll_s: float = Field(60, gt=0, validation_alias=_env("WORKER_CREDITS_POLL_S"))
    # The alert fires when the balance covers fewer minutes than this at the live sessions' burn.
    credit_alert_minutes: float = Field(
        60, gt=0, validation_alias=_env("WORKER_CREDIT_ALERT_MINUTES")
    )
    speech_start_timeout_s: float = Field(
        15, gt=0, validation_alias=_env("WORKER_SPEECH_START_TIMEOUT_S")
    )

    partitions: int = Field(8, ge=1, le=1024, validation_alias=_env("WORKER_PARTITIONS"))
    prefetch: int = Field(64, ge=1, le=10_000, validation_alias=_env("WORKER_PREFETCH"))
    http_concurrency: int = Field(
        64, ge=1, le=10_000, validation_alias=_env("WORKER_HTTP_CONCURRENCY")
    )
    max_sessions: int = Field(100, ge=1, validation_alias=_env("WORKER_MAX_SESSIONS"))
    idle_timeout_s: float = Field(300, gt=0, validation_alias=_env("WORKER_IDLE_TIMEOUT_S"))
    max_duration_s: float = Field(3600, gt=0, validation_alias=_env("WORKER_MAX_DURATION_S"))
    keepalive_interval_s: float = Field(
        30, gt=0, validation_alias=_env("WORKER_KEEPALIVE_INTERVAL_S")
    )
    keepalive_concurrency: int = Field(
        32, ge=1, validation_alias=_env("WORKER_KEEPALIVE_CONCURRENCY")
    )
    reconnect_attempts: int = Field(3, ge=0, validation_alias=_env("WORKER_RECONNECT_ATTEMPTS"))
    reconcile_interval_s: float = Field(
        60, gt=0, validation_alias=_env("WORKER_RECONCILE_INTERVAL_S")
    )
    leak_grace_s: float = Field(120, ge=0, validation_alias=_env("WORKER_LEAK_GRACE_S"))
    orphan_grace_s: float = Field(30, ge=0, validation_alias=_env("WORKER_ORPHAN_GRACE_S"))
    reap_unknown_sessions: bool = Field(
        False, validation_alias=_env("WORKER_REAP_UNKNOWN_SESSIONS")
    )
    shutdown_grace_s: float = Field(25, ge=0, validation_alias=_env("WORKER_SHUTDOWN_GRACE_S"))
    stop_sessions_on_shutdown: bool = Field(
        False, validation_alias=_env("WORKER_STOP_SESSIONS_ON_SHUTDOWN")
    )
    delivery_limit: int = Field(5, ge=1, validation_alias=_env("WORKER_DELIVERY_LIMIT"))
    publish_timeout_s: float = Field(10, gt=0, validation_alias=_env("WORKER_PUBLISH_TIMEOUT_S"))
    dedup_capacity: int = Field(100_000, ge=1, validation_alias=_env("WORKER_DEDUP_CAPACITY"))
    max_text_chars: int = Field(2000, ge=1, validation_alias=_env("WORKER_MAX_TEXT_CHARS"))
    max_message_bytes: int = Field(
        65_536, ge=1024, validation_alias=_env("WORKER_MAX_MESSAGE_BYTES")
    )
    admins: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias=_env("WORKER_ADMINS")
    )
    require_user_id: bool = Field(False, validation_alias=_env("WORKER_REQUIRE_USER_ID"))
    credits_per_minute: float = Field(0.2, ge=0, validation_alias=_env("WORKER_CREDITS_PER_MINUTE"))
    worker_id: str = Field(default_factory=_default_worker_id, validation_alias=_env("WORKER_ID"))
    metrics_host: str = Field("0.0.0.0", validation_alias=_env("METRICS_HOST"))
    metrics_port: int = Field(9464, ge=0, le=65535, validation_alias=_env("METRICS_PORT"))
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
