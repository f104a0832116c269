"""Checks of request bodies and query strings; a bad one raises HeyGen's 400 / 40001."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator.errors import invalid_parameter

QUALITIES = ("high", "medium", "low")
EMOTIONS = ("Excited", "Serious", "Friendly", "Soothing", "Broadcaster")
VIDEO_ENCODINGS = ("H264", "VP8")
TASK_TYPES = ("repeat", "talk", "chat")
TASK_MODES = ("sync", "async")
STT_PROVIDERS = ("deepgram", "gladia")
DEFAULT_IDLE_TIMEOUT_S = 120
MAX_PAGE_SIZE = 100

Body = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class NewSessionParams:
    version: str
    avatar_id: str
    voice_id: str
    voice_rate: float
    quality: str
    video_encoding: str
    activity_idle_timeout: int


@dataclass(frozen=True, slots=True)
class TaskParams:
    session_id: str
    text: str
    task_type: str
    task_mode: str


@dataclass(frozen=True, slots=True)
class PageParams:
    page: int
    page_size: int
    date_from: float | None
    date_to: float | None


def _str(body: Body, name: str, default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid_parameter(f"{name} must be a string")
    return value


def _choice(body: Body, name: str, allowed: tuple[str, ...], default: str) -> str:
    value = _str(body, name, default)
    if value not in allowed:
        raise invalid_parameter(f"{name} must be one of {', '.join(allowed)}")
    return value


def _object(body: Body, name: str) -> Body:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_parameter(f"{name} must be an object")
    return value


def _number(body: Body, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    # bool is an int in Python but not a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise invalid_parameter(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def session_id_of(body: Body) -> str:
    value = body.get("session_id")
    if not isinstance(value, str) or not value:
        raise invalid_parameter("session_id is required")
    return value


def parse_new(body: Body) -> NewSessionParams:
    avatar = _str(body, "avatar_id") or _str(body, "avatar_name")
    if not avatar:
        raise invalid_parameter("avatar_id (or avatar_name) is required")
    version = _str(body, "version", "v1")
    if version not in ("v1", "v2"):
        raise invalid_parameter("version must be v2, or omitted for v1")
    voice = _object(body, "voice")
    rate = _number(voice, "rate", 1.0, 0.5, 1.5)
    if voice.get("emotion") is not None:
        _choice(voice, "emotion", EMOTIONS, "")
    stt = _object(body, "stt_settings")
    if stt.get("provider") is not None:
        _choice(stt, "provider", STT_PROVIDERS, "")
    _object(body, "livekit_settings")
    for name in ("knowledge_base", "knowledge_base_id", "language"):
        _str(body, name)
    idle = _number(body, "activity_idle_timeout", DEFAULT_IDLE_TIMEOUT_S, 30, 3600)
    if idle != int(idle):
        raise invalid_parameter("activity_idle_timeout must be a whole number of seconds")
    return NewSessionParams(
        version=version,
        avatar_id=avatar,
        voice_id=_str(voice, "voice_id") or "",
        voice_rate=rate,
        quality=_choice(body, "quality", QUALITIES, "low"),
        video_encoding=_choice(body, "video_encoding", VIDEO_ENCODINGS, "VP8"),
        activity_idle_timeout=int(idle),
    )


def require_sdp_answer(body: Body) -> None:
    sdp = _object(body, "sdp")
    if sdp.get("type") != "answer" or not isinstance(sdp.get("sdp"), str) or not sdp["sdp"]:
        raise invalid_parameter("sdp {type: answer, sdp} is required for a v1 session")


def require_candidate(body: Body) -> None:
    candidate = _object(body, "candidate")
    if not isinstance(candidate.get("candidate"), str):
        raise invalid_parameter("candidate {candidate, sdpMid, sdpMLineIndex} is required")
    _str(candidate, "sdpMid")
    _str(candidate, "usernameFragment")
    index = candidate.get("sdpMLineIndex")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise invalid_parameter("candidate.sdpMLineIndex must be an integer")


def parse_task(body: Body) -> TaskParams:
    session_id = session_id_of(body)
    text = _str(body, "text")
    if not text or not text.strip():
        raise invalid_parameter("text must be a non-empty string")
    return TaskParams(
        session_id=session_id,
        text=text,
        task_type=_choice(body, "task_type", TASK_TYPES, "repeat"),
        task_mode=_choice(body, "task_mode", TASK_MODES, "sync"),
    )


def _query_number(query: Mapping[str, str], name: str, low: float) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise invalid_parameter(f"{name} must be a number") from None
    if value < low:
        raise invalid_parameter(f"{name} must be at least {low:g}")
    return value


def parse_page(query: Mapping[str, str]) -> PageParams:
    # next_pagination_token is the next page number, as this simulator hands it out.
    page = _query_number(query, "next_pagination_token", 1) or _query_number(query, "page", 1)
    size = _query_number(query, "page_size", 1)
    return PageParams(
        page=int(page or 1),
        page_size=min(int(size or 20), MAX_PAGE_SIZE),
        date_from=_query_number(query, "date_from", 0),
        date_to=_query_number(query, "date_to", 0),
    )
