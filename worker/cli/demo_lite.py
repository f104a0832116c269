"""`heygen-worker demo --provider liveavatar --mode lite`: your own audio, lip-synced.

The demo generates a short WAV (a 440 Hz tone: no network TTS), reads its PCM back as a
producer would read a TTS's output, and streams it into `session.speak_audio` in half-second
parts, as a TTS streams its output. The avatar's observed start and end come back as
speech.started and speech.finished for the utterance.
"""

from __future__ import annotations

import array
import base64
import io
import math
import wave
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from contracts.commands import SessionCreate, SessionSpeakAudio, SessionStop
from contracts.common import LiveAvatarMode, Provider
from worker.cli.errors import CliError, ExitCode

if TYPE_CHECKING:  # it runs this script's steps
    from worker.cli.demo_liveavatar import Conversation

SAMPLE_RATE = 24_000
TONE_HZ = 440.0
TONE_S = 2.0
PART_S = 0.5


def tone_wav(seconds: float = TONE_S, hz: float = TONE_HZ) -> bytes:
    """A WAV file: a quiet sine tone, 16-bit mono at 24 kHz (LiveAvatar LITE's format)."""
    samples = array.array(
        "h",
        (
            int(8000 * math.sin(2 * math.pi * hz * n / SAMPLE_RATE))
            for n in range(int(seconds * SAMPLE_RATE))
        ),
    )
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(samples.tobytes())  # WAV is little-endian, as LITE wants
    return out.getvalue()


def pcm_of(wav_file: bytes) -> bytes:
    """The raw PCM of a WAV file in LITE's format; CliError for any other format."""
    with wave.open(io.BytesIO(wav_file), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, SAMPLE_RATE):
            raise CliError("the demo WAV must be 16-bit mono at 24 kHz", ExitCode.USAGE)
        return wav.readframes(wav.getnframes())


def audio_parts(
    session_id: str, utterance_id: str, pcm: bytes, part_s: float = PART_S
) -> Iterator[SessionSpeakAudio]:
    """`pcm` as session.speak_audio parts of `part_s` seconds, the last one final."""
    size = int(part_s * SAMPLE_RATE) * 2
    for at in range(0, len(pcm), size):
        yield SessionSpeakAudio(
            session_id=session_id,
            utterance_id=utterance_id,
            audio=base64.b64encode(pcm[at : at + size]).decode(),
            final=at + size >= len(pcm),
        )


async def speak_lite(
    conversation: Conversation, session_id: str, avatar_id: str, out_line: Callable[[str], None]
) -> None:
    create = SessionCreate(
        session_id=session_id,
        avatar_id=avatar_id,
        provider=Provider.LIVEAVATAR,
        mode=LiveAvatarMode.LITE,
    )
    await conversation.step(f"create LiveAvatar LITE session {session_id}", create, out_line)
    pcm = pcm_of(tone_wav())
    utterance = f"{session_id}-tone"
    out_line(f"> stream a {TONE_S:g} s tone in {PART_S:g} s parts as utterance {utterance}")
    for part in audio_parts(session_id, utterance, pcm):
        await conversation.step(f"speak_audio (final: {part.final})", part, out_line)
    await conversation.until(
        "observed speech.finished",
        lambda e: e.type == "speech.finished" and getattr(e, "task_id", None) == utterance,
    )
    stop = SessionStop(session_id=session_id, reason="demo finished")
    await conversation.step("stop", stop, out_line)
