"""session.create per provider: what each one cannot honour is refused, naming field and
provider; knowledge_base_id is LiveAvatar's context_id under its legacy name."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from contracts.commands import SessionCreate
from contracts.common import Provider
from worker.handlers.profile import profile_of

LIVEAVATAR_AVATAR = "2f5b3c6e-9a41-4f4f-8a55-6f2d1c0b7e11"


def make(**fields: Any) -> SessionCreate:
    return SessionCreate.model_validate({"session_id": "s", "avatar_id": "a", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"voice": {"emotion": "Excited"}},
            "voice.emotion is not supported with provider liveavatar",
        ),
        ({"voice": {"rate": 1.2}}, "voice.rate is not supported with provider liveavatar"),
        ({"version": "v1"}, "version: v1 is not supported with provider liveavatar"),
        (
            {"activity_idle_timeout": 60},
            "activity_idle_timeout is not supported with provider liveavatar",
        ),
        ({"knowledge_base": "be nice"}, "knowledge_base is not supported with provider liveavatar"),
        (
            {"stt_settings": {"provider": "gladia"}},
            "stt_settings is not supported with provider liveavatar",
        ),
        (
            {"mode": "LITE", "voice": {"voice_id": "v"}},
            "voice is not supported with provider liveavatar in mode LITE",
        ),
        (
            {"mode": "LITE", "context_id": "c1"},
            "context_id is not supported with provider liveavatar in mode LITE",
        ),
        (
            {
                "livekit_config": {
                    "livekit_url": "wss://x",
                    "livekit_room": "r",
                    "livekit_client_token": "t",
                }
            },
            "livekit_config is only supported with provider liveavatar in mode LITE",
        ),
        (
            {"context_id": "c1", "knowledge_base_id": "c2"},
            "context_id and knowledge_base_id (its legacy name) differ with provider liveavatar",
        ),
    ],
)
def test_liveavatar_refuses_what_it_cannot_honour(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(provider="liveavatar", **fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "FULL"}, "mode is not supported with provider heygen"),
        ({"is_sandbox": True}, "is_sandbox is not supported with provider heygen"),
        (
            {"interactivity_type": "PUSH_TO_TALK"},
            "interactivity_type is not supported with provider heygen",
        ),
        ({"context_id": "c1"}, "context_id is not supported with provider heygen"),
        ({"quality": "very_high"}, "quality: very_high is not supported with provider heygen"),
    ],
)
def test_heygen_refuses_liveavatar_only_fields(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        make(provider="heygen", **fields)


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        make(provider="liveavatar", version="v1", voice={"emotion": "Serious"})
    text = str(caught.value)
    assert "version: v1" in text
    assert "voice.emotion" in text


def test_without_a_provider_the_workers_default_is_checked_when_filled_in() -> None:
    command = make(is_sandbox=True)  # valid as sent: the provider is not known yet
    assert command.provider is None
    assert command.for_provider(Provider.LIVEAVATAR).provider is Provider.LIVEAVATAR
    with pytest.raises(ValueError, match="is_sandbox is not supported with provider heygen"):
        command.for_provider(Provider.HEYGEN)
    explicit = make(provider="liveavatar")
    assert explicit.for_provider(Provider.HEYGEN).provider is Provider.LIVEAVATAR


def test_a_voice_id_alone_and_common_fields_suit_both() -> None:
    for provider in ("heygen", "liveavatar"):
        make(provider=provider, voice={"voice_id": "v1"}, quality="high", language="de")


def test_knowledge_base_id_is_liveavatars_context_id() -> None:
    command = make(provider="liveavatar", avatar_id=LIVEAVATAR_AVATAR, knowledge_base_id="kb")
    profile = profile_of(command)
    assert profile.context_id == "kb"
    assert profile.knowledge_base is None


def test_the_profile_carries_liveavatar_options_and_the_duration_cap() -> None:
    command = make(
        provider="liveavatar",
        is_sandbox=True,
        interactivity_type="PUSH_TO_TALK",
        context_id="ctx",
        quality="very_high",
        video_encoding="VP8",
        max_duration_s=600,
        voice={"voice_id": "v"},
    )
    profile = profile_of(command)
    assert (profile.mode, profile.is_sandbox, profile.interactivity_type) == (
        "FULL",
        True,
        "PUSH_TO_TALK",
    )
    assert (profile.context_id, profile.quality, profile.video_encoding) == (
        "ctx",
        "very_high",
        "VP8",
    )
    assert (profile.max_duration_s, profile.voice_id) == (600, "v")
