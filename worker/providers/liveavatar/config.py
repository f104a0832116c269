"""The neutral session profile as LiveAvatar's session config (POST /v1/sessions/token)."""

from __future__ import annotations

from typing import Any

from worker.providers.base import InvalidRequestError, SessionProfile
from worker.providers.liveavatar.models import (
    AvatarPersona,
    LiveKitConfig,
    SessionConfig,
    VideoSettings,
)


def _refuse_heygen_only(profile: SessionProfile) -> None:
    # Validation refuses these before a profile is built; reaching here is the worker's bug.
    heygen_only = {
        "voice.rate": profile.voice_rate is not None,
        "voice.emotion": profile.voice_emotion is not None,
        "knowledge_base": profile.knowledge_base is not None,
        "version": profile.version == "v1",
        "activity_idle_timeout": profile.activity_idle_timeout is not None,
        "stt_settings": profile.stt_provider is not None or profile.stt_confidence is not None,
    }
    refused = [name for name, is_set in heygen_only.items() if is_set]
    if refused:
        raise InvalidRequestError(
            f"liveavatar cannot honour {', '.join(refused)}", endpoint="sessions.token"
        )


def session_config(profile: SessionProfile) -> SessionConfig:
    _refuse_heygen_only(profile)
    video = None
    if profile.quality is not None or profile.video_encoding is not None:
        video = VideoSettings(quality=profile.quality, encoding=profile.video_encoding)
    return SessionConfig(
        avatar_id=profile.avatar_id,
        is_sandbox=profile.is_sandbox,
        video_settings=video,
        max_session_duration=profile.max_duration_s,
        **(_lite(profile) if profile.mode == "LITE" else _full(profile)),
    )


def _full(profile: SessionProfile) -> dict[str, Any]:
    if profile.livekit_room is not None:
        raise InvalidRequestError("livekit_config is LITE's", endpoint="sessions.token")
    return {
        "mode": "FULL",
        # FULL requires a persona even when every field of it is left to LiveAvatar.
        "avatar_persona": AvatarPersona(
            voice_id=profile.voice_id, context_id=profile.context_id, language=profile.language
        ),
        "interactivity_type": profile.interactivity_type,
    }


def _lite(profile: SessionProfile) -> dict[str, Any]:
    """LITE brings its own voice: no persona; optionally the producer's own LiveKit room."""
    full_only = {
        "voice": profile.voice_id,
        "language": profile.language,
        "context_id": profile.context_id,
        "interactivity_type": profile.interactivity_type,
    }
    refused = [name for name, value in full_only.items() if value is not None]
    if refused:
        raise InvalidRequestError(
            f"liveavatar LITE cannot honour {', '.join(refused)}", endpoint="sessions.token"
        )
    room = profile.livekit_room
    if room is None:
        return {"mode": "LITE"}
    config = LiveKitConfig(
        livekit_url=room.url,
        livekit_room=room.room,
        livekit_client_token=room.client_token.get_secret_value(),
    )
    return {"mode": "LITE", "livekit_config": config}
