"""/_admin/liveavatar: faults, ending sessions, the end user's voice, credits, config, stats."""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.admin_routes import _error, _json_body, add_fault_routes
from simulator.liveavatar.context import LIVEAVATAR, LiveAvatarSimulator
from simulator.liveavatar.settings import LiveAvatarFault
from simulator.liveavatar.state import Session, Status
from simulator.liveavatar.validation import EndReason

PREFIX = "/_admin/liveavatar"
JSON = "application/json"


class _Admin(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndBody(_Admin):
    end_reason: EndReason = "SERVER_ERROR"


class Utterance(_Admin):
    text: str = Field(min_length=1)
    duration_s: float = Field(default=0.5, ge=0)


class Stall(_Admin):
    seconds: float = Field(gt=0, le=600)


class Credits(_Admin):
    credits: float = Field(ge=0)
    api_key: str | None = None  # None: every account, and the start balance of new ones


M = TypeVar("M", bound=_Admin)


def _live(sim: LiveAvatarSimulator, request: web.Request) -> Session:
    session_id = request.match_info["session_id"]
    session = sim.store.find(session_id)
    if session is None:
        raise web.HTTPNotFound(
            text=f'{{"error": "unknown session {session_id}"}}', content_type=JSON
        )
    if session.status is not Status.ACTIVE:
        raise web.HTTPConflict(
            text=f'{{"error": "session is {session.status.value}"}}', content_type=JSON
        )
    return session


async def _parsed(request: web.Request, model: type[M]) -> M:
    body = await _json_body(request)
    try:
        return model.model_validate(body or {})
    except ValidationError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def end_session(request: web.Request) -> web.Response:
    """End a session as LiveAvatar would (e.g. AVATAR_DELETED, SERVER_ERROR)."""
    sim = request.app[LIVEAVATAR]
    session = _live(sim, request)
    sim.store.end(session, (await _parsed(request, EndBody)).end_reason)
    return web.json_response(sim.store.row(session))


async def utterance(request: web.Request) -> web.Response:
    """The end user speaks: user.speak_started now, then user.speak_ended and
    user.transcription after `duration_s`."""
    sim = request.app[LIVEAVATAR]
    session = _live(sim, request)
    said = await _parsed(request, Utterance)
    room = sim.rooms.get(session.session_id)
    if room is None:
        return _error(409, "only a FULL session has a room")
    sim.store.touch(session)
    room.utterance(said.text, said.duration_s)
    return web.json_response({"session_id": session.session_id, "room_sockets": room.joined})


async def drop_room(request: web.Request) -> web.Response:
    """Cut the room sockets (FULL) or ws_url sockets (LITE) of a session as a network failure
    would; the session lives on."""
    sim = request.app[LIVEAVATAR]
    session_id = _live(sim, request).session_id
    link = sim.rooms.get(session_id) or sim.lite.get(session_id)
    return web.json_response({"dropped": link.drop_sockets() if link else 0})


async def stall_lite(request: web.Request) -> web.Response:
    """A LITE avatar reads nothing for `seconds` (its messages wait; keep-alives do not count)."""
    sim = request.app[LIVEAVATAR]
    avatar = sim.lite.get(_live(sim, request).session_id)
    if avatar is None:
        return _error(409, "only a LITE session has a ws_url")
    avatar.stall((await _parsed(request, Stall)).seconds)
    return web.json_response({"stalled": True})


async def set_credits(request: web.Request) -> web.Response:
    sim = request.app[LIVEAVATAR]
    body = await _parsed(request, Credits)
    sim.store.set_balance(body.api_key, body.credits)
    return web.json_response({"credits": body.credits})


async def get_config(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVEAVATAR].settings.runtime_config())


async def patch_config(request: web.Request) -> web.Response:
    sim = request.app[LIVEAVATAR]
    body: Any = await _json_body(request)
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object of settings to change")
    try:
        sim.reconfigure(body)
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response(sim.settings.runtime_config())


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIVEAVATAR].stats())


async def reset(request: web.Request) -> web.Response:
    request.app[LIVEAVATAR].reset()
    return web.json_response({"reset": True})


def register_admin(app: web.Application) -> None:
    router = app.router
    add_fault_routes(
        router, PREFIX, lambda request: request.app[LIVEAVATAR].faults, LiveAvatarFault
    )
    router.add_post(f"{PREFIX}/sessions/{{session_id}}/end", end_session)
    router.add_post(f"{PREFIX}/sessions/{{session_id}}/utterance", utterance)
    router.add_post(f"{PREFIX}/sessions/{{session_id}}/drop-room", drop_room)
    router.add_post(f"{PREFIX}/sessions/{{session_id}}/stall-lite", stall_lite)
    router.add_put(f"{PREFIX}/credits", set_credits)
    router.add_get(f"{PREFIX}/config", get_config)
    router.add_patch(f"{PREFIX}/config", patch_config)
    router.add_get(f"{PREFIX}/stats", stats)
    router.add_post(f"{PREFIX}/reset", reset)
