"""The LiveAvatar simulator: LiveAvatar's REST API, the FULL-mode room stand-in and
/_admin/liveavatar, served by the same application as the HeyGen simulator (the paths do not
overlap), so one base URL stands in for both APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from simulator.liveavatar.admin import LiveAvatarAdmin
from simulator.liveavatar.admin_routes import register_admin
from simulator.liveavatar.context import LIVEAVATAR, LiveAvatarSimulator
from simulator.liveavatar.routes import ROOM_PATH, register_routes
from simulator.liveavatar.settings import LiveAvatarFault, LiveAvatarSettings

__all__ = [
    "LIVEAVATAR",
    "ROOM_PATH",
    "LiveAvatarAdmin",
    "LiveAvatarFault",
    "LiveAvatarSettings",
    "LiveAvatarSimulator",
    "add_liveavatar",
]


async def _sweep(sim: LiveAvatarSimulator) -> None:
    # Bills and ends sessions even when no request touches them, so the rooms hear of it.
    while True:
        await asyncio.sleep(sim.settings.sweep_interval_s)
        sim.store.sweep()


def add_liveavatar(app: web.Application, settings: LiveAvatarSettings | None = None) -> None:
    """Serve LiveAvatar from `app` (settings from SIMULATOR_LIVEAVATAR_* when not given)."""
    sim = LiveAvatarSimulator(settings or LiveAvatarSettings())
    app[LIVEAVATAR] = sim
    register_routes(app, sim)
    register_admin(app)

    async def running(_app: web.Application) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(_sweep(sim))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await sim.rooms.aclose()
        await sim.lite.aclose()

    app.cleanup_ctx.append(running)
