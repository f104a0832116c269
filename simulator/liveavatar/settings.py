"""LiveAvatar simulator settings (environment prefix SIMULATOR_LIVEAVATAR_).

What the reference marks unconfirmed is a setting here: the success `code`, the idle timeout,
the plan's duration cap, how long a billing minute lasts (so tests need not wait 60 s).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from simulator.settings import ANY_ENDPOINT, FaultSpec, _split_list, endpoint_check

# Endpoint names: the path after "/v1/" with "/" as "."; "room" is the room stand-in's socket,
# "lite" a LITE session's ws_url.
ENDPOINTS: tuple[str, ...] = (
    "sessions.token",
    "sessions.start",
    "sessions.keep-alive",
    "sessions.stop",
    "sessions.list",
    "sessions.get",
    "users.credits",
    "room",
    "lite",
)

# What PATCH /_admin/liveavatar/config may change while the simulator runs.
RUNTIME_FIELDS: tuple[str, ...] = (
    "success_code",
    "idle_timeout_s",
    "max_session_duration_s",
    "sandbox_duration_s",
    "billing_period_s",
    "words_per_minute",
    "speak_start_delay_s",
    "concurrency_limit",
    "lite_connect_delay_s",
    "lite_event_id_per",
)


_check_endpoint = endpoint_check(ENDPOINTS, "LiveAvatar")


class LiveAvatarFault(FaultSpec):
    """A fault on a LiveAvatar endpoint; on "room" it refuses the socket (status) or stalls it."""

    endpoint: Annotated[str, AfterValidator(_check_endpoint)] = ANY_ENDPOINT


class LiveAvatarSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIMULATOR_LIVEAVATAR_", extra="ignore")

    # Empty: any non-empty X-API-KEY is accepted. One account (credit balance) per key.
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # The balance each account starts with.
    credits: float = Field(default=1000.0, ge=0)
    # The envelope's success code: 100 in the OpenAPI default, 1000 in the official SDK.
    success_code: int = 1000
    idle_timeout_s: float = Field(default=300.0, gt=0)
    # The plan's cap on max_session_duration (and the default when a session gives none).
    max_session_duration_s: float = Field(default=3600.0, gt=0)
    sandbox_duration_s: float = Field(default=60.0, gt=0)
    # Length of one billed minute: each live session is charged its rate once a period.
    billing_period_s: float = Field(default=60.0, gt=0)
    words_per_minute: float = Field(default=150.0, gt=0)
    # Between a speak packet and avatar.speak_started when the avatar is silent.
    speak_start_delay_s: float = Field(default=0.05, ge=0)
    concurrency_limit: int = Field(default=100, ge=0)
    # LITE: between a ws_url socket's `connecting` and `connected` (messages sent before are lost).
    lite_connect_delay_s: float = Field(default=0.05, ge=0)
    # LITE (unconfirmed): the chunks of one utterance share one event_id, or each has its own.
    lite_event_id_per: Literal["utterance", "chunk"] = "utterance"
    faults: list[LiveAvatarFault] = Field(default_factory=list)
    fault_seed: int | None = None
    sweep_interval_s: float = Field(default=1.0, gt=0)

    _lists = field_validator("api_keys", mode="before")(_split_list)

    def runtime_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json", include=set(RUNTIME_FIELDS))

    def patched(self, changes: dict[str, Any]) -> LiveAvatarSettings:
        """A copy with run-time changes applied and validated; ValueError names a bad field."""
        unknown = sorted(set(changes) - set(RUNTIME_FIELDS))
        if unknown:
            raise ValueError(f"not changeable at run time: {', '.join(unknown)}")
        return LiveAvatarSettings.model_validate({**self.model_dump(), **changes})
