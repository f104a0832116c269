"""LITE test helpers: audio, utterances as session.speak_audio parts, the avatar's counts."""

from __future__ import annotations

import base64
import os

from contracts.commands import SessionSpeakAudio
from simulator.liveavatar.admin import LiteStats
from simulator.server import RunningSimulator

BYTES_PER_SECOND = 48_000


def noise(seconds: float) -> bytes:
    """Random PCM: no two chunks alike, so the avatar's duplicate count means what it says."""
    return os.urandom(int(seconds * BYTES_PER_SECOND) // 2 * 2)


def parts(
    session_id: str, utterance_id: str, seconds: list[float], *, final: bool = True
) -> list[SessionSpeakAudio]:
    """An utterance of parts lasting `seconds` each; the last is final unless told otherwise."""
    return [
        SessionSpeakAudio(
            session_id=session_id,
            utterance_id=utterance_id,
            audio=base64.b64encode(noise(length)).decode(),
            final=final and i == len(seconds) - 1,
        )
        for i, length in enumerate(seconds)
    ]


def audio_bytes(commands: list[SessionSpeakAudio]) -> int:
    return sum(len(base64.b64decode(c.audio)) for c in commands)


async def lite_stats(simulator: RunningSimulator, provider_session_id: str) -> LiteStats:
    stats = (await simulator.admin.liveavatar_stats()).sessions[provider_session_id].lite
    assert stats is not None
    return stats
