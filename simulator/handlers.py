"""The HeyGen Streaming API endpoints: request body in, answer body out (HTTP is in app.py)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulator.context import Simulator
from simulator.errors import SUCCESS_CODE, SUCCESS_MESSAGE, invalid_parameter
from simulator.state import CloseReason, Session
from simulator.validation import (
    Body,
    parse_new,
    parse_page,
    parse_task,
    require_candidate,
    require_sdp_answer,
    session_id_of,
)

# A pre-encoded answer (the hot path) or a JSON object to encode.
Reply = bytes | dict[str, Any]


@dataclass(slots=True)
class Call:
    api_key: str
    body: Body
    query: Mapping[str, str]
    # Recorded in the request log; streaming.new fills in the session it created.
    session_id: str | None = None


Handler = Callable[[Simulator, Call], Awaitable[Reply]]

OK_NO_DATA = json.dumps(
    {"code": SUCCESS_CODE, "message": SUCCESS_MESSAGE, "data": None}, separators=(",", ":")
).encode()


def ok(data: Any) -> dict[str, Any]:
    return {"code": SUCCESS_CODE, "message": SUCCESS_MESSAGE, "data": data}


def _fake_jwt(session_id: str) -> str:
    # Shaped like a LiveKit token so clients that split or log-redact JWTs behave as in production.
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    claims = part({"video": {"room": session_id, "roomJoin": True}, "sub": "simulator"})
    return f"{header}.{claims}.{secrets.token_urlsafe(32)}"


def _sdp_offer(session_id: str) -> str:
    return "\r\n".join(
        (
            "v=0",
            f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0 1",
            f"a=msid-semantic: WMS {session_id}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "c=IN IP4 0.0.0.0",
            "a=mid:0",
            "a=sendonly",
            "a=rtpmap:111 opus/48000/2",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "c=IN IP4 0.0.0.0",
            "a=mid:1",
            "a=sendonly",
            "a=rtpmap:96 VP8/90000",
            "",
        )
    )


async def new_session(sim: Simulator, call: Call) -> Reply:
    params = parse_new(call.body)
    session = sim.store.create(call.api_key, params)
    sid = call.session_id = session.session_id
    if params.version == "v2":
        return ok(
            {
                "session_id": sid,
                "url": sim.settings.livekit_url,
                "access_token": _fake_jwt(sid),
                "realtime_endpoint": f"wss://realtime.simulator.invalid/v1/ws/{sid}",
                "session_duration_limit": sim.settings.session_duration_limit_s,
                "is_paid": sim.settings.is_paid,
            }
        )
    turn = {
        "urls": ["turn:turn.simulator.invalid:3478?transport=udp"],
        "username": secrets.token_hex(8),
        "credential": secrets.token_hex(12),
        "credentialType": "password",
    }
    return ok(
        {
            "session_id": sid,
            "sdp": {"type": "offer", "sdp": _sdp_offer(sid)},
            "ice_servers": ["stun:stun.simulator.invalid:3478"],
            "ice_servers2": [turn],
        }
    )


def _session(sim: Simulator, call: Call) -> Session:
    return sim.store.live(call.api_key, session_id_of(call.body))


async def start(sim: Simulator, call: Call) -> Reply:
    session = _session(sim, call)
    if session.params.version == "v1":
        require_sdp_answer(call.body)
    sim.store.start(session)
    return OK_NO_DATA


async def ice(sim: Simulator, call: Call) -> Reply:
    session = _session(sim, call)
    if session.params.version != "v1":
        raise invalid_parameter("streaming.ice applies to v1 sessions only")
    require_candidate(call.body)
    sim.store.add_ice(session)
    return OK_NO_DATA


async def task(sim: Simulator, call: Call) -> Reply:
    params = parse_task(call.body)
    session = sim.store.live(call.api_key, params.session_id)
    spoken = sim.store.speak(session, params.text)
    if params.task_mode == "sync" and sim.settings.sync_waits_for_speech:
        # Answers at the end of this task's speech, or earlier on interrupt, stop or close.
        await sim.waiters.wait(session.session_id, spoken.ends_at)
    return ok({"duration_ms": spoken.duration_ms, "task_id": spoken.task_id})


async def interrupt(sim: Simulator, call: Call) -> Reply:
    sim.store.interrupt(_session(sim, call))
    return OK_NO_DATA


async def stop(sim: Simulator, call: Call) -> Reply:
    sim.store.close(_session(sim, call), CloseReason.STOPPED)
    return OK_NO_DATA


async def keep_alive(sim: Simulator, call: Call) -> Reply:
    sim.store.keep_alive(_session(sim, call))
    return OK_NO_DATA


async def list_sessions(sim: Simulator, call: Call) -> Reply:
    sessions = [
        {
            "session_id": s.session_id,
            "status": sim.store.status(s).value,
            "created_at": int(s.created_wall),
        }
        for s in sim.store.live_sessions(call.api_key)
    ]
    return ok({"sessions": sessions})


async def list_history(sim: Simulator, call: Call) -> Reply:
    """GET /v2/streaming.list: paginated history, fields at the top level as HeyGen documents."""
    page = parse_page(call.query)
    history = [
        s
        for s in sim.store.history(call.api_key)
        if (page.date_from is None or s.created_wall >= page.date_from)
        and (page.date_to is None or s.created_wall <= page.date_to)
    ]
    first = (page.page - 1) * page.page_size
    chosen = history[first : first + page.page_size]
    now = sim.clock()
    items = [
        {
            "session_id": s.session_id,
            "status": sim.store.status(s).value,
            "created_at": int(s.created_wall),
            "api_key_type": "api_key",
            "duration": round(
                (s.closed_wall if s.closed_wall is not None else sim.store.wall_time(now))
                - s.created_wall
            ),
            "avatar_id": s.params.avatar_id,
            "voice_name": s.params.voice_id,
        }
        for s in chosen
    ]
    more = first + page.page_size < len(history)
    return {
        "code": SUCCESS_CODE,
        "message": SUCCESS_MESSAGE,
        "total": len(history),
        "page": page.page,
        "page_size": page.page_size,
        "next_pagination_token": str(page.page + 1) if more else None,
        "data": items,
    }


async def create_token(sim: Simulator, call: Call) -> Reply:
    # This endpoint uses HeyGen's newer envelope.
    return {"error": None, "data": {"token": secrets.token_urlsafe(48)}}


async def avatar_list(sim: Simulator, call: Call) -> Reply:
    avatars = [
        {
            "avatar_id": avatar_id,
            "created_at": 1_720_000_000,
            "default_voice": f"voice-{index:04d}",
            "is_public": True,
            "normal_preview": f"https://files.simulator.invalid/avatars/{avatar_id}.webp",
            "pose_name": avatar_id.replace("_", " "),
            "status": "ACTIVE",
        }
        for index, avatar_id in enumerate(sim.settings.avatars)
    ]
    return ok(avatars)


# (method, path, endpoint name, handler)
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", "/v1/streaming.new", "streaming.new", new_session),
    ("POST", "/v1/streaming.start", "streaming.start", start),
    ("POST", "/v1/streaming.ice", "streaming.ice", ice),
    ("POST", "/v1/streaming.task", "streaming.task", task),
    ("POST", "/v1/streaming.interrupt", "streaming.interrupt", interrupt),
    ("POST", "/v1/streaming.stop", "streaming.stop", stop),
    ("POST", "/v1/streaming.keep_alive", "streaming.keep_alive", keep_alive),
    ("GET", "/v1/streaming.list", "streaming.list", list_sessions),
    ("GET", "/v2/streaming.list", "v2/streaming.list", list_history),
    ("POST", "/v1/streaming.create_token", "streaming.create_token", create_token),
    ("GET", "/v1/streaming/avatar.list", "streaming/avatar.list", avatar_list),
)
