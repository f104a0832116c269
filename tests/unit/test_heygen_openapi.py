"""Every body the client sends validates against HeyGen's OpenAPI request schema of its path,
extended with the v2 fields of the reference (heygen-streaming-api.md) and made strict."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from pydantic import SecretStr

from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.models import (
    IceCandidate,
    NewSessionRequest,
    SdpAnswer,
    SttSettings,
    Voice,
)

# HeyGen's file, vendored beside the client (MIT licence, attribution in its header).
OPENAPI = (
    Path(__file__).parents[2] / "worker" / "providers" / "heygen" / "heygen-streaming-openapi.yml"
)

# The reference's streaming.new fields that the v1-era OpenAPI file lacks.
V2_NEW_SESSION_FIELDS: dict[str, Any] = {
    "avatar_id": {"type": "string"},
    "version": {"type": "string", "enum": ["v2"]},
    "video_encoding": {"type": "string", "enum": ["H264", "VP8"]},
    "activity_idle_timeout": {"type": "integer", "minimum": 30, "maximum": 3600},
    "knowledge_base_id": {"type": "string"},
    "language": {"type": "string"},
    "stt_settings": {
        "type": "object",
        "properties": {
            "provider": {"type": "string", "enum": ["deepgram", "gladia"]},
            "confidence": {"type": "number"},
        },
    },
}
# Endpoints the OpenAPI file does not describe, from the reference's endpoint table.
REFERENCE_ONLY: dict[str, dict[str, Any]] = {
    "/v1/streaming.keep_alive": {
        "type": "object",
        "properties": {"session_id": {"type": "string"}},
        "required": ["session_id"],
    },
    "/v1/streaming.create_token": {"type": "object", "properties": {}},
}


def _fix(node: Any) -> Any:
    """OpenAPI 3.0 to JSON Schema: `type: float` becomes number; objects reject unknown fields."""
    if isinstance(node, dict):
        fixed = {key: _fix(value) for key, value in node.items()}
        if fixed.get("type") == "float":
            fixed["type"] = "number"
        if fixed.get("type") == "object" and "properties" in fixed:
            fixed.setdefault("additionalProperties", False)
        return fixed
    if isinstance(node, list):
        return [_fix(item) for item in node]
    return node


def load_schemas() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    new_session = schemas["NewSessionRequest"]["properties"]
    new_session.update(copy.deepcopy(V2_NEW_SESSION_FIELDS))
    new_session["voice"]["properties"]["elevenlabs_settings"] = {"type": "object"}
    task = schemas["TaskRequest"]["properties"]
    task["task_type"]["enum"].append("talk")  # the reference's current name for "chat"
    task["task_mode"]["enum"] = ["sync", "async"]
    components = _fix(doc["components"])
    by_path = {
        path: _fix(item["post"]["requestBody"]["content"]["application/json"]["schema"])
        for path, item in doc["paths"].items()
    }
    by_path.update(_fix(REFERENCE_ONLY))
    return {path: {**schema, "components": components} for path, schema in by_path.items()}


SCHEMAS = load_schemas()


def validate(path: str, body: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[path]).validate(body)


def _answer(request: httpx.Request) -> httpx.Response:
    data: dict[str, Any] = {
        "/v1/streaming.new": {"session_id": "hs"},
        "/v1/streaming.task": {"task_id": "t", "duration_ms": 1},
        "/v1/streaming.create_token": {"token": "tk"},
        "/v1/streaming.list": {"sessions": []},
        "/v1/streaming/avatar.list": [],
    }
    return httpx.Response(200, json={"code": 100, "data": data.get(request.url.path)})


async def sent_requests() -> list[httpx.Request]:
    """Every method called with every field it can send."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _answer(request)

    full_new = NewSessionRequest(
        avatar_id="avatar",
        voice=Voice(voice_id="v", rate=1.5, emotion="Soothing", elevenlabs_settings={"x": 1}),
        quality="medium",
        video_encoding="VP8",
        activity_idle_timeout=3600,
        knowledge_base="prompt",
        knowledge_base_id="kb",
        language="en",
        stt_settings=SttSettings(provider="gladia", confidence=0.5),
    )
    candidate = IceCandidate(
        candidate="candidate:1", sdp_mid="0", sdp_mline_index=0, username_fragment="uf"
    )
    client = HeyGenClient(SecretStr("k"), transport=httpx.MockTransport(handler))
    async with client as heygen:
        await heygen.new_session(full_new)
        await heygen.new_session(full_new.model_copy(update={"version": "v1"}))
        await heygen.new_session(NewSessionRequest())
        await heygen.start_session("hs")
        await heygen.start_session("hs", SdpAnswer(sdp="v=0"))
        await heygen.ice("hs", candidate)
        for task_type in ("repeat", "talk"):
            for task_mode in ("sync", "async"):
                await heygen.task("hs", "hello", task_type=task_type, task_mode=task_mode)
        await heygen.interrupt("hs")
        await heygen.stop("hs")
        await heygen.keep_alive("hs")
        await heygen.create_token()
        await heygen.list_sessions()
        await heygen.list_avatars()
    return seen


async def test_every_body_sent_matches_the_schema_of_its_path() -> None:
    requests = await sent_requests()
    posts = [r for r in requests if r.method == "POST"]
    for request in posts:
        validate(request.url.path, json.loads(request.content))
    assert {r.url.path for r in posts} == set(SCHEMAS)
    assert all(r.content == b"" for r in requests if r.method == "GET")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/streaming.new", {"quality": "ultra"}),
        ("/v1/streaming.new", {"avatarId": "a"}),
        ("/v1/streaming.new", {"voice": {"rate": "fast"}}),
        ("/v1/streaming.new", {"version": "v3"}),
        ("/v1/streaming.task", {"session_id": "s", "text": "t", "task_type": "sing"}),
        ("/v1/streaming.ice", {"session_id": "s", "candidate": {"sdp_mid": "0"}}),
        ("/v1/streaming.start", {"session_id": "s", "sdp": {"type": "answr", "sdp": "v=0"}}),
        ("/v1/streaming.keep_alive", {}),
    ],
)
def test_the_schemas_reject_what_heygen_would_not_accept(path: str, body: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(path, body)
