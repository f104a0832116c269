"""The /_admin API: faults, closing sessions, reset, run-time config and stats (no auth)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from simulator.context import SIMULATOR
from simulator.faults import FaultInjector
from simulator.settings import FaultSpec
from simulator.state import CloseReason


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        return None
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error": "the body is not valid JSON"}', content_type="application/json"
        ) from None


def add_fault_routes(
    router: web.UrlDispatcher,
    prefix: str,
    injector: Callable[[web.Request], FaultInjector],
    model: type[FaultSpec],
) -> None:
    """{prefix}/faults: POST one fault object or a list of them, GET them, DELETE them all."""

    async def add(request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            specs = [
                model.model_validate(item) for item in (body if isinstance(body, list) else [body])
            ]
        except ValidationError as exc:
            return _error(400, str(exc))
        for spec in specs:
            injector(request).add(spec)
        return web.json_response({"faults": injector(request).describe()})

    async def listed(request: web.Request) -> web.Response:
        return web.json_response({"faults": injector(request).describe()})

    async def cleared(request: web.Request) -> web.Response:
        injector(request).clear()
        return web.json_response({"faults": []})

    router.add_post(f"{prefix}/faults", add)
    router.add_get(f"{prefix}/faults", listed)
    router.add_delete(f"{prefix}/faults", cleared)


async def close_session(request: web.Request) -> web.Response:
    """Close a session as if HeyGen dropped it; later calls on it answer 400006."""
    sim = request.app[SIMULATOR]
    session_id = request.match_info["session_id"]
    try:
        session = sim.store.close_by_id(session_id, CloseReason.ADMIN)
    except KeyError:
        return _error(404, f"unknown session {session_id}")
    except ValueError as exc:
        return _error(409, str(exc))
    return web.json_response({"session_id": session_id, **sim.store.describe(session)})


async def reset(request: web.Request) -> web.Response:
    request.app[SIMULATOR].reset()
    return web.json_response({"reset": True})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIMULATOR].settings.runtime_config())


async def patch_config(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    body = await _json_body(request)
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object of settings to change")
    try:
        sim.reconfigure(body)
    except ValueError as exc:  # pydantic's ValidationError included
        return _error(400, str(exc))
    return web.json_response(sim.settings.runtime_config())


async def stats(request: web.Request) -> web.Response:
    """GET /_admin/stats; ?requests=0 leaves out the (long) request log."""
    include = request.query.get("requests", "1").lower() not in ("0", "false", "no")
    return web.json_response(request.app[SIMULATOR].stats(include_requests=include))


def register(app: web.Application) -> None:
    router = app.router
    add_fault_routes(router, "/_admin", lambda request: request.app[SIMULATOR].faults, FaultSpec)
    router.add_post("/_admin/sessions/{session_id}/close", close_session)
    router.add_post("/_admin/reset", reset)
    router.add_get("/_admin/config", get_config)
    router.add_patch("/_admin/config", patch_config)
    router.add_get("/_admin/stats", stats)
