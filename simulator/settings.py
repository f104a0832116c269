"""Simulator settings (environment prefix SIMULATOR_) and the fault and latency shapes they use."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ANY_ENDPOINT = "*"
# Endpoint names are the URL path without its "/v1/" prefix.
ENDPOINTS: tuple[str, ...] = (
    "streaming.new",
    "streaming.start",
    "streaming.ice",
    "streaming.task",
    "streaming.interrupt",
    "streaming.stop",
    "streaming.keep_alive",
    "streaming.list",
    "v2/streaming.list",
    "streaming.create_token",
    "streaming/avatar.list",
)


# What PATCH /_admin/config may change while the simulator runs.
RUNTIME_FIELDS: tuple[str, ...] = (
    "idle_timeout_override_s",
    "concurrency_limit",
    "latency",
    "sync_waits_for_speech",
    "words_per_minute",
    "connect_delay_s",
    "rate_limit_per_s",
    "rate_limit_burst",
)


def endpoint_check(endpoints: Sequence[str], api: str) -> Callable[[str], str]:
    """A validator of a fault's endpoint: '*' or one of `endpoints` of the `api` simulated."""

    def check(name: str) -> str:
        if name != ANY_ENDPOINT and name not in endpoints:
            raise ValueError(
                f"unknown {api} endpoint {name!r}; expected '*' or one of {', '.join(endpoints)}"
            )
        return name

    return check


_check_endpoint = endpoint_check(ENDPOINTS, "HeyGen")


def _check_latency_keys(value: dict[str, Latency]) -> dict[str, Latency]:
    for name in value:
        _check_endpoint(name)
    return value


EndpointName = Annotated[str, AfterValidator(_check_endpoint)]


class Latency(BaseModel):
    """Delay added before an endpoint answers: fixed plus a uniform random part."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fixed_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)


class FaultSpec(BaseModel):
    """One injected fault. Without status, reset or hang_s it answers 500."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: EndpointName = ANY_ENDPOINT
    rate: float = Field(default=1.0, ge=0, le=1)
    status: int | None = Field(default=None, ge=400, le=599)
    code: int | None = None
    message: str | None = None
    retry_after: float | None = Field(default=None, ge=0)
    hang_s: float = Field(default=0.0, ge=0)
    reset: bool = False
    count: int | None = Field(default=None, ge=1)
    # Carry out the request's effect first, then fail: the answer is lost after the side effect.
    apply_first: bool = False


def _split_list(value: Any) -> Any:
    # Accept "a,b" as well as a JSON list in the environment.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SimulatorSettings(BaseSettings):
    """Everything the simulator can be configured with: SIMULATOR_* (docs/providers.md)."""

    model_config = SettingsConfigDict(env_prefix="SIMULATOR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    # Empty: any non-empty X-Api-Key is accepted.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Keys answered with 403 / 400599 (an account without API access).
    forbidden_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Live sessions allowed per key (HeyGen: 3 on a trial key, up to 100 on an API plan).
    concurrency_limit: int = Field(default=100, ge=0)
    # Replaces every session's activity_idle_timeout (so tests can use 1-2 s).
    idle_timeout_override_s: float | None = Field(default=None, gt=0)
    words_per_minute: float = Field(default=150.0, gt=0)
    sync_waits_for_speech: bool = True
    # Time between streaming.start and "connected"; tasks before it fail with 400006.
    connect_delay_s: float = Field(default=0.0, ge=0)
    session_duration_limit_s: int = Field(default=3600, ge=1)
    enforce_session_duration_limit: bool = False
    is_paid: bool = True
    livekit_url: str = "wss://livekit.simulator.invalid"
    avatars: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Wayne_20240711", "Anna_public_3_20240108", "Tyler-incasualsuit"]
    )

    # Per endpoint name, or "*" for every endpoint without its own entry.
    latency: Annotated[dict[str, Latency], AfterValidator(_check_latency_keys)] = Field(
        default_factory=dict
    )
    faults: list[FaultSpec] = Field(default_factory=list)
    fault_seed: int | None = None
    # Token bucket per key; None disables rate limiting.
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    rate_limit_burst: int = Field(default=20, ge=1)

    sweep_interval_s: float = Field(default=1.0, gt=0)
    request_log_size: int = Field(default=100_000, ge=0)
    closed_sessions_kept: int = Field(default=100_000, ge=0)
    access_log: bool = False
    log_level: str = "INFO"

    _lists = field_validator("api_keys", "forbidden_keys", "avatars", mode="before")(_split_list)

    def runtime_config(self) -> dict[str, Any]:
        """The settings PATCH /_admin/config may change, as JSON."""
        return self.model_dump(mode="json", include=set(RUNTIME_FIELDS))

    def patched(self, changes: dict[str, Any]) -> SimulatorSettings:
        """A copy with run-time changes applied and validated; ValueError names a bad field."""
        unknown = sorted(set(changes) - set(RUNTIME_FIELDS))
        if unknown:
            raise ValueError(f"not changeable at run time: {', '.join(unknown)}")
        return SimulatorSettings.model_validate({**self.model_dump(), **changes})
