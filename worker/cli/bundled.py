"""The bundled simulator beside `heygen-worker run`: a provider without a key talks to it, loudly.

The worker itself never imports the simulator; it is told the simulator's URL and key through its
settings, as it would be told HeyGen's or LiveAvatar's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from simulator.liveavatar import LiveAvatarSettings
from simulator.server import RunningSimulator, running_simulator
from worker.provider_setup import heygen_key, liveavatar_key
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

SIMULATED_LIVEAVATAR_KEY = "simulated-liveavatar-key"


@asynccontextmanager
async def beside_simulator(settings: WorkerSettings) -> AsyncIterator[WorkerSettings]:
    """The settings to run the worker with: each provider without a key points at the bundled
    simulator (HeyGen's and LiveAvatar's APIs), started here when one of them needs it."""
    simulate_heygen = heygen_key(settings) is None
    simulate_liveavatar = liveavatar_key(settings) is None
    if not (simulate_heygen or simulate_liveavatar):
        yield settings
        return
    liveavatar = LiveAvatarSettings()
    async with running_simulator(port=settings.simulator_port, liveavatar=liveavatar) as sim:
        update: dict[str, Any] = {}
        if simulate_heygen:
            _warn(sim, "HeyGen", "HEYGEN_API_KEY (or HEYGEN_API_KEY_FILE)")
            update.update(heygen_api_key=SecretStr(sim.api_key), heygen_base_url=sim.base_url)
        if simulate_liveavatar:
            _warn(sim, "LiveAvatar", "LIVEAVATAR_API_KEY (or LIVEAVATAR_API_KEY_FILE)")
            keys = liveavatar.api_keys
            key = keys[0] if keys else SecretStr(SIMULATED_LIVEAVATAR_KEY)
            update.update(liveavatar_api_key=key, liveavatar_base_url=sim.base_url)
        yield settings.model_copy(update=update)


def _warn(sim: RunningSimulator, product: str, variables: str) -> None:
    log.warning(
        "NO %s KEY SET: %s sessions are SIMULATED by the bundled simulator at %s. Set %s to "
        "talk to %s.",
        product.upper(),
        product,
        sim.base_url,
        variables,
        product,
    )
