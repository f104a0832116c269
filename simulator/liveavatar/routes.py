"""LiveAvatar's REST endpoints and the room stand-in's socket, as the simulator serves them.

Each route is wrapped like the HeyGen ones (call counts, injected faults, the envelope), with
LiveAvatar's own rules: success codes from the settings, 201 on start, 422 with FastAPI's
`detail` on a bad body, the API key or a session's bearer token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.typedefs import Handler as RouteHandler

from simulator.app import _inflict, error_response
from simulator.errors import ApiError
from simulator.liveavatar.context import LiveAvatarSimulator, unauthorized
from simulator.liveavatar.state import Session, Status, not_found
from simulator.liveavatar.validation import (
    InvalidRequest,
    ListQuery,
    SessionRef,
    StartRequest,
    StopRequest,
    parse,
    parse_token,
)

ROOM_PATH = "/liveavatar-room"
LITE_PATH = "/liveavatar-lite"

Endpoint = Callable[[LiveAvatarSimulator, web.Request], Awaitable[web.StreamResponse]]


def _ok(sim: LiveAvatarSimulator, data: Any, status: int = 200) -> web.Response:
    body = {"code": sim.settings.success_code, "data": data, "message": "Success"}
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(
            [{"loc": ["body"], "msg": "a JSON object is required", "type": "json_invalid"}]
        )
    return body


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _by_key(sim: LiveAvatarSimulator, request: web.Request) -> str:
    return sim.authenticate(request.headers.get("X-API-KEY"))


def _addressed(sim: LiveAvatarSimulator, request: web.Request, session_id: str) -> Session:
    """The session named in the body, authorised by the key or by that session's own token."""
    token = _bearer(request)
    if token is None:
        return sim.store.get(_by_key(sim, request), session_id)
    session = sim.store.by_session_token(token)
    if session is None:
        raise unauthorized("Invalid session token")
    if session.session_id != session_id:
        raise ApiError(403, 403, "The session token is for another session")
    return session


async def token(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    api_key = _by_key(sim, request)
    session = sim.store.create(api_key, parse_token(await _body(request)))
    return _ok(sim, {"session_id": session.session_id, "session_token": session.session_token})


async def start(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    token = _bearer(request)
    if token is None:
        raise unauthorized("start takes the session token as a bearer token")
    body = parse(StartRequest, await _body(request), "body")
    session = sim.store.by_session_token(token)
    if session is None or (body.session_id and str(body.session_id) != session.session_id):
        raise unauthorized("Invalid session token")
    sim.store.start(session)
    sim.started(session)
    own_room = session.request.livekit_config
    data: dict[str, Any] = {
        "session_id": session.session_id,
        "livekit_url": own_room.livekit_url if own_room else f"ws://{request.host}{ROOM_PATH}",
        "livekit_client_token": (
            own_room.livekit_client_token if own_room else session.client_token
        ),
        "max_session_duration": int(session.max_duration_s),
    }
    if session.request.full:
        data["livekit_agent_token"] = session.agent_token
    else:  # the URL carries its own authorisation: the agent token in the path
        data["ws_url"] = f"ws://{request.host}{LITE_PATH}/{session.agent_token}"
    return _ok(sim, data, status=201)


async def keep_alive(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    ref = parse(SessionRef, await _body(request), "body")
    session = _addressed(sim, request, str(ref.session_id))
    sim.store.touch(session)
    session.keep_alives += 1
    return _ok(sim, None)


async def stop(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    body = parse(StopRequest, await _body(request), "body")
    session = _addressed(sim, request, str(body.session_id))
    sim.store.end(session, body.reason or "USER_CLOSED")
    return _ok(sim, None)


async def list_sessions(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    api_key = _by_key(sim, request)
    query = parse(ListQuery, request.query, "query")
    status = Status.ACTIVE if query.type == "active" else Status.ENDED
    found = sim.store.listed(api_key, status)
    first = (query.page - 1) * query.page_size
    page = found[first : first + query.page_size]

    def link(number: int) -> str:
        url = request.url.with_query(type=query.type, page=number, page_size=query.page_size)
        return str(url)

    return _ok(
        sim,
        {
            "count": len(found),
            "next": link(query.page + 1) if first + query.page_size < len(found) else None,
            "previous": link(query.page - 1) if query.page > 1 else None,
            "results": [sim.store.row(s) for s in page],
        },
    )


async def get_session(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    api_key = _by_key(sim, request)
    return _ok(sim, sim.store.row(sim.store.get(api_key, request.match_info["session_id"])))


async def credits(sim: LiveAvatarSimulator, request: web.Request) -> web.Response:
    balance = sim.store.balance(_by_key(sim, request))
    return _ok(sim, {"credits_left": f"{balance:.2f}"})


async def room(sim: LiveAvatarSimulator, request: web.Request) -> web.StreamResponse:
    """The room stand-in: joined with the session's agent token as a bearer token."""
    token = _bearer(request)
    session = sim.store.by_agent_token(token) if token else None
    if session is None:
        raise unauthorized("Invalid agent token")
    live = sim.rooms.get(session.session_id)
    if live is None:
        raise not_found("Room")
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    live.join(socket, request.transport)
    try:
        async for message in socket:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                packet = json.loads(message.data)
            except ValueError:
                continue
            if isinstance(packet, dict) and live.receive(packet):
                session.commands += 1
                sim.store.touch(session)
    except ApiError:
        pass  # the session ended under the socket: the room closes it
    finally:
        live.leave(socket)
    return socket


async def lite(sim: LiveAvatarSimulator, request: web.Request) -> web.StreamResponse:
    """A LITE session's ws_url: the backend's audio in, the avatar's events out."""
    session = sim.store.by_agent_token(request.match_info["token"])
    avatar = sim.lite.get(session.session_id) if session else None
    if avatar is None:
        raise unauthorized("Invalid or expired ws_url")
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    await avatar.serve(socket, request.transport)
    return socket


def _route(sim: LiveAvatarSimulator, name: str, endpoint: Endpoint) -> RouteHandler:
    async def handle(request: web.Request) -> web.StreamResponse:
        sim.calls[name] += 1
        fault = sim.faults.pick(name)
        try:
            if fault is not None and not fault.apply_first:
                failed = await _inflict(request, fault)
                if failed is not None:
                    return failed
            response = await endpoint(sim, request)
            if fault is not None and fault.apply_first:
                return await _inflict(request, fault) or response
        except ApiError as error:
            return error_response(error)
        except InvalidRequest as invalid:
            return web.json_response({"detail": invalid.detail}, status=422)
        return response

    return handle


ROUTES: tuple[tuple[str, str, str, Endpoint], ...] = (
    ("POST", "/v1/sessions/token", "sessions.token", token),
    ("POST", "/v1/sessions/start", "sessions.start", start),
    ("POST", "/v1/sessions/keep-alive", "sessions.keep-alive", keep_alive),
    ("POST", "/v1/sessions/stop", "sessions.stop", stop),
    ("GET", "/v1/sessions", "sessions.list", list_sessions),
    ("GET", "/v1/sessions/{session_id}", "sessions.get", get_session),
    ("GET", "/v1/users/credits", "users.credits", credits),
    ("GET", ROOM_PATH, "room", room),
    ("GET", LITE_PATH + "/{token}", "lite", lite),
)


def register_routes(app: web.Application, sim: LiveAvatarSimulator) -> None:
    for method, path, name, endpoint in ROUTES:
        app.router.add_route(method, path, _route(sim, name, endpoint))
