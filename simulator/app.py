"""The aiohttp application: HeyGen routes wrapped with latency, faults, auth and bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler as RouteHandler

from simulator import admin_routes
from simulator.context import SIMULATOR, Simulator
from simulator.errors import ApiError, invalid_parameter
from simulator.faults import fault_error
from simulator.handlers import ROUTES, Call, Handler, Reply
from simulator.settings import FaultSpec, SimulatorSettings

log = logging.getLogger("simulator")

JSON_TYPE = "application/json"


def _retry_after_header(seconds: float) -> str:
    # Whole seconds as HTTP wants; a fraction (only if a fault asks for one) as a decimal.
    return str(int(seconds)) if seconds == int(seconds) else f"{seconds:g}"


def _json_response(reply: Reply, status: int = 200) -> web.Response:
    body = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
    return web.Response(body=body, status=status, content_type=JSON_TYPE)


def error_response(error: ApiError) -> web.Response:
    response = _json_response(
        {"code": error.code, "message": error.message, "data": None}, error.status
    )
    if error.retry_after is not None:
        response.headers["Retry-After"] = _retry_after_header(error.retry_after)
    return response


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise invalid_parameter("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid_parameter("the body must be a JSON object")
    return body


def _reset(request: web.Request) -> web.Response:
    """Close the connection without answering; aiohttp drops the response it is given."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


async def _inflict(request: web.Request, fault: FaultSpec) -> web.Response | None:
    """Carry out a fault: an answer to send, or None when it was only a hang."""
    if fault.hang_s:
        await asyncio.sleep(fault.hang_s)
    if fault.reset:
        return _reset(request)
    error = fault_error(fault)
    return None if error is None else error_response(error)


def _route(sim: Simulator, endpoint: str, handler: Handler) -> RouteHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        sim.calls[endpoint] += 1
        session_id: str | None = None
        applied = False
        try:
            body = await _read_body(request) if request.method == "POST" else {}
            candidate = body.get("session_id")
            session_id = candidate if isinstance(candidate, str) else None
            delay = sim.latency_s(endpoint)
            if delay:
                await asyncio.sleep(delay)
            fault = sim.faults.pick(endpoint)
            response = None
            if fault is not None and not fault.apply_first:
                response = await _inflict(request, fault)
            if response is None:
                api_key = sim.authenticate(request.headers.get("X-Api-Key"))
                settings = sim.settings
                if settings.rate_limit_per_s is not None:
                    sim.rate_limiter.take(
                        api_key, settings.rate_limit_per_s, settings.rate_limit_burst
                    )
                call = Call(api_key, body, request.query, session_id)
                reply = await handler(sim, call)
                session_id = call.session_id
                applied = True
                if fault is not None and fault.apply_first:
                    response = await _inflict(request, fault)
                if response is None:
                    response = _json_response(reply)
        except ApiError as error:
            response = error_response(error)
        closed = request.transport is None or request.transport.is_closing()
        sim.record(endpoint, session_id, 0 if closed else response.status, applied)
        return response

    return handle


async def _sweep(sim: Simulator) -> None:
    # Closes idle sessions even when no request arrives, so stats and lists stay current.
    while True:
        await asyncio.sleep(sim.settings.sweep_interval_s)
        closed = sim.store.expire_due()
        if closed:
            log.debug("closed %d idle sessions", closed)


def create_app(settings: SimulatorSettings) -> web.Application:
    """The simulator as an aiohttp application (HeyGen routes plus /_admin)."""
    sim = Simulator(settings)
    app = web.Application()
    app[SIMULATOR] = sim
    for method, path, endpoint, handler in ROUTES:
        app.router.add_route(method, path, _route(sim, endpoint, handler))
    admin_routes.register(app)

    async def sweeper(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(_sweep(sim))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sweeper)
    return app
