"""Builds the worker's providers from its settings: keys, base URLs, instrumented transports.

A provider without a key is an error here: `heygen-worker run` points such a provider at the
bundled simulator (worker/cli/bundled.py) before the worker starts."""

from __future__ import annotations

from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path

import httpx
from pydantic import SecretStr

from worker.observability.logs import register_secret
from worker.observability.metrics import Metrics
from worker.observability.transport import InstrumentedTransport
from worker.providers.base import Provider
from worker.providers.credentials import FILE_VAR, KEY_VAR, ApiKeyError, load_api_key
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.provider import HeyGenProvider
from worker.providers.liveavatar.attached import LiteOptions
from worker.providers.liveavatar.client import LiveAvatarClient
from worker.providers.liveavatar.lite_messages import EventIds
from worker.providers.liveavatar.provider import LiveAvatarProvider
from worker.providers.retry import RetryPolicy
from worker.providers.transport import default_transport
from worker.settings import WorkerSettings

LIVEAVATAR_KEY_VAR = "LIVEAVATAR_API_KEY"
LIVEAVATAR_FILE_VAR = "LIVEAVATAR_API_KEY_FILE"


class ProviderSetup:
    """`setup.providers()` once; everything it opens closes with `stack`."""

    def __init__(
        self,
        settings: WorkerSettings,
        metrics: Metrics,
        stack: AsyncExitStack,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._stack = stack
        self._transport = transport  # tests' seam for HeyGen's traffic

    def providers(self) -> dict[str, Provider]:
        return {"heygen": self._heygen(), "liveavatar": self._liveavatar()}

    def _heygen(self) -> HeyGenProvider:
        s = self._settings
        api_key = _required(heygen_key(s), KEY_VAR, FILE_VAR)
        register_secret(api_key.get_secret_value())  # the log formatter redacts it anywhere
        client = HeyGenClient(
            api_key,
            s.heygen_base_url,
            transport=self._instrumented(self._transport, "heygen"),
            timeout=s.heygen_timeout_s,
            max_concurrency=s.http_concurrency,
            retry=RetryPolicy(on_retry=partial(self._count_retry, "heygen")),
        )
        provider = HeyGenProvider(client)
        self._stack.push_async_callback(provider.aclose)
        return provider

    def _liveavatar(self) -> LiveAvatarProvider:
        s = self._settings
        api_key = _required(liveavatar_key(s), LIVEAVATAR_KEY_VAR, LIVEAVATAR_FILE_VAR)
        register_secret(api_key.get_secret_value())
        client = LiveAvatarClient(
            api_key,
            s.liveavatar_base_url,
            transport=self._instrumented(None, "liveavatar"),
            timeout=s.liveavatar_timeout_s,
            max_concurrency=s.http_concurrency,
            retry=RetryPolicy(on_retry=partial(self._count_retry, "liveavatar")),
        )
        lite = LiteOptions(EventIds(s.liveavatar_lite_event_id_per), s.liveavatar_lite_lead_s)
        provider = LiveAvatarProvider(client, lite=lite)
        self._stack.push_async_callback(provider.aclose)
        return provider

    def _instrumented(
        self, inner: httpx.AsyncBaseTransport | None, provider: str
    ) -> InstrumentedTransport:
        inner = inner or default_transport(self._settings.http_concurrency)
        return InstrumentedTransport(inner, self._metrics, provider=provider)

    def _count_retry(
        self, provider: str, endpoint: str, error: Exception, attempt: int, delay: float
    ) -> None:
        kind = getattr(error, "kind", "other")
        self._metrics.heygen_retries_total.labels(provider, endpoint, kind).inc()


def heygen_key(s: WorkerSettings) -> SecretStr | None:
    return _key(s.heygen_api_key, s.heygen_api_key_file, KEY_VAR, FILE_VAR)


def liveavatar_key(s: WorkerSettings) -> SecretStr | None:
    return _key(
        s.liveavatar_api_key, s.liveavatar_api_key_file, LIVEAVATAR_KEY_VAR, LIVEAVATAR_FILE_VAR
    )


def _required(key: SecretStr | None, key_var: str, file_var: str) -> SecretStr:
    if key is None:
        raise ApiKeyError(
            f"neither {key_var} nor {file_var} is set (`heygen-worker run` starts the bundled "
            "simulator for a provider without a key)"
        )
    return key


def _key(
    value: SecretStr | None, file: Path | None, key_var: str, file_var: str
) -> SecretStr | None:
    """The key from its setting or its file (ApiKeyError names the variable when unusable)."""
    env = {key_var: value.get_secret_value() if value else "", file_var: str(file or "")}
    return load_api_key(env, key_var=key_var, file_var=file_var)
