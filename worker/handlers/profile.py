"""`session.create` to the provider-neutral profile and back to the browser's details."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pydantic import SecretStr

from contracts.commands import SessionCreate
from worker.providers.base import Created, LiveKitRoom, SessionProfile


def profile_of(cmd: SessionCreate) -> SessionProfile:
    """The profile a provider creates a session from; reconnection reuses it."""
    voice, stt, room = cmd.voice, cmd.stt_settings, cmd.livekit_config
    return SessionProfile(
        avatar_id=cmd.avatar_id,
        voice_id=voice.voice_id if voice else None,
        voice_rate=voice.rate if voice else None,
        voice_emotion=voice.emotion.value if voice and voice.emotion else None,
        quality=cmd.quality.value if cmd.quality else None,
        video_encoding=cmd.video_encoding.value if cmd.video_encoding else None,
        language=cmd.language,
        # knowledge_base_id is heygen's name, and liveavatar's legacy name of context_id.
        context_id=cmd.context_id or cmd.knowledge_base_id,
        knowledge_base=cmd.knowledge_base,
        max_duration_s=cmd.max_duration_s,
        version=cmd.version.value,
        activity_idle_timeout=cmd.activity_idle_timeout,
        stt_provider=stt.provider if stt else None,
        stt_confidence=stt.confidence if stt else None,
        mode=cmd.mode.value if cmd.mode else "FULL",
        is_sandbox=cmd.is_sandbox,
        interactivity_type=cmd.interactivity_type.value if cmd.interactivity_type else None,
        livekit_room=None
        if room is None
        else LiveKitRoom(room.livekit_url, room.livekit_room, SecretStr(room.livekit_client_token)),
    )


def connection_fields(created: Created) -> dict[str, Any]:
    """What a client needs to join the stream; shared by session.created and session.reconnected."""
    browser = {k: v for k, v in asdict(created.browser).items() if v is not None}
    return {"heygen_session_id": created.provider_session_id, **browser}
