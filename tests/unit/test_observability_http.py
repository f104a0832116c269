"""The health server: /metrics exposition, /healthz, and /readyz following readiness()."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from worker.observability.http import HealthServer
from worker.observability.metrics import Metrics


class Readiness:
    def __init__(self) -> None:
        self.state = (False, "bus not connected")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
async def http(readiness: Readiness) -> AsyncIterator[httpx.AsyncClient]:
    registry = CollectorRegistry()
    Metrics(registry).partitions.set(8)
    server = HealthServer(registry, readiness, host="127.0.0.1", port=0)
    await server.start()
    assert server.port > 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield client
    finally:
        await server.stop()


async def test_metrics_are_exposed(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "heygen_worker_partitions 8.0" in response.text


async def test_metrics_speak_openmetrics_when_asked(http: httpx.AsyncClient) -> None:
    response = await http.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


async def test_healthz_is_always_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert (response.status_code, response.text) == (200, "ok")


async def test_readyz_follows_readiness(http: httpx.AsyncClient, readiness: Readiness) -> None:
    response = await http.get("/readyz")
    assert (response.status_code, response.text) == (503, "bus not connected")
    readiness.state = (True, "")
    response = await http.get("/readyz")
    assert (response.status_code, response.text) == (200, "ready")


async def test_stop_frees_the_port() -> None:
    server = HealthServer(CollectorRegistry(), lambda: (True, "ok"), host="127.0.0.1", port=0)
    await server.start()
    port = server.port
    await server.stop()
    with pytest.raises(RuntimeError):
        _ = server.port
    again = HealthServer(CollectorRegistry(), lambda: (True, "ok"), host="127.0.0.1", port=port)
    await again.start()
    await again.stop()
