"""Run the simulator inside the current event loop: for tests, benchmarks and the worker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from simulator.app import create_app
from simulator.liveavatar import LiveAvatarAdmin, LiveAvatarSettings, add_liveavatar
from simulator.settings import SimulatorSettings

log = logging.getLogger("simulator")

# Sent by running_simulator's users when the settings accept any key.
DEFAULT_API_KEY = "simulator-api-key"
# Hung and speaking requests are cancelled after this long at shutdown.
SHUTDOWN_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class RunningSimulator:
    base_url: str  # HeyGen's and LiveAvatar's
    admin: LiveAvatarAdmin
    settings: SimulatorSettings
    # A key the simulator accepts; kept out of repr like any API key.
    api_key: str = field(repr=False)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An httpx client for the HeyGen endpoints, sending api_key as X-Api-Key."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers={"X-Api-Key": self.api_key}, **kwargs
        )


def _settings_with(
    settings: SimulatorSettings | None, overrides: dict[str, Any]
) -> SimulatorSettings:
    if settings is None:
        # A free port unless told otherwise.
        return SimulatorSettings(**{"port": 0, **overrides})
    if not overrides:
        return settings
    return SimulatorSettings.model_validate({**settings.model_dump(), **overrides})


def _api_key(settings: SimulatorSettings) -> str:
    if settings.api_keys:
        return settings.api_keys[0].get_secret_value()
    if any(k.get_secret_value() == DEFAULT_API_KEY for k in settings.forbidden_keys):
        raise ValueError(f"{DEFAULT_API_KEY!r} is forbidden; configure api_keys")
    return DEFAULT_API_KEY


@asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings | None = None,
    *,
    liveavatar: LiveAvatarSettings | None = None,
    **overrides: Any,
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator in this event loop until the block ends.

    Without settings it reads SIMULATOR_* from the environment and listens on a free port;
    keyword overrides (e.g. idle_timeout_override_s=1) replace individual settings. LiveAvatar
    is served beside HeyGen, set up by `liveavatar` or SIMULATOR_LIVEAVATAR_*.
    """
    chosen = _settings_with(settings, overrides)
    app = create_app(chosen)
    add_liveavatar(app, liveavatar)
    runner = web.AppRunner(
        app,
        access_log=log if chosen.access_log else None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, chosen.host, chosen.port)
        await site.start()
        port = runner.addresses[0][1]
        host = "127.0.0.1" if chosen.host in ("0.0.0.0", "") else chosen.host
        base_url = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        async with LiveAvatarAdmin(base_url) as admin:
            yield RunningSimulator(base_url, admin, chosen, _api_key(chosen))
    finally:
        await runner.cleanup()


async def serve(settings: SimulatorSettings, stop: asyncio.Event | None = None) -> None:
    """Serve until stop is set (or the task is cancelled)."""
    async with running_simulator(settings) as sim:
        keys = "the configured keys" if settings.api_keys else "any non-empty X-Api-Key"
        log.info(
            "HeyGen and LiveAvatar simulator listening on %s (HeyGen accepting %s)",
            sim.base_url,
            keys,
        )
        await (stop or asyncio.Event()).wait()
