"""The neutral session profile as LiveAvatar's session config (POST /v1/sessions/token)."""

from __future__ import annotations

from worker.providers.base import InvalidRequestError, SessionProfile, UnsupportedError
from worker.providers.liveavatar.models import AvatarPersona, SessionConfig, VideoSettings


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
    if profile.mode != "FULL":
        raise UnsupportedError(
            "liveavatar LITE mode is not supported yet", endpoint="sessions.token"
        )
    video = None
    if profile.quality is not None or profile.video_encoding is not None:
        video = VideoSettings(quality=profile.quality, encoding=profile.video_encoding)
    return SessionConfig(
        mode="FULL",
        avatar_id=profile.avatar_id,
        is_sandbox=profile.is_sandbox,
        video_settings=video,
        max_session_duration=profile.max_duration_s,
        # FULL requires a persona even when every field of it is left to LiveAvatar.
        avatar_persona=AvatarPersona(
            voice_id=profile.voice_id, context_id=profile.context_id, language=profile.language
        ),
        interactivity_type=profile.interactivity_type,
    )
