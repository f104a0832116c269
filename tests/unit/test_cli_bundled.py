"""`heygen-worker run` points a provider without a key at the bundled simulator; the worker itself
refuses to start without one."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from worker.cli.bundled import beside_simulator
from worker.observability.metrics import Metrics
from worker.provider_setup import ProviderSetup
from worker.providers.credentials import ApiKeyError
from worker.settings import WorkerSettings


def settings(**values: object) -> WorkerSettings:
    return WorkerSettings.model_validate({"simulator_port": 0, **values})


async def test_a_provider_without_a_key_gets_the_simulator_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("HEYGEN_API_KEY", "HEYGEN_API_KEY_FILE", "SIMULATOR_LIVEAVATAR_API_KEYS"):
        monkeypatch.delenv(name, raising=False)
    given = settings(liveavatar_api_key="real-key", liveavatar_base_url="https://la.example")
    async with beside_simulator(given) as chosen:
        assert chosen.heygen_api_key is not None
        assert chosen.heygen_base_url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=chosen.heygen_base_url) as client:
            answer = await client.get(
                "/v1/streaming.list",
                headers={"X-Api-Key": chosen.heygen_api_key.get_secret_value()},
            )
        assert answer.status_code == 200  # the simulator, and it accepts the key it gave
    assert chosen.liveavatar_base_url == "https://la.example"  # a provider with a key keeps it
    assert "NO HEYGEN KEY SET" in caplog.text
    assert "NO LIVEAVATAR KEY SET" not in caplog.text


async def test_with_every_key_nothing_is_started() -> None:
    given = settings(heygen_api_key="h", liveavatar_api_key="l")
    async with beside_simulator(given) as chosen:
        assert chosen is given


def test_the_worker_alone_refuses_a_provider_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HEYGEN_API_KEY", raising=False)
    monkeypatch.delenv("HEYGEN_API_KEY_FILE", raising=False)
    setup = ProviderSetup(
        settings(liveavatar_api_key=SecretStr("l")),
        Metrics(CollectorRegistry()),
        AsyncExitStack(),
    )
    with pytest.raises(ApiKeyError, match="HEYGEN_API_KEY nor HEYGEN_API_KEY_FILE"):
        setup.providers()
