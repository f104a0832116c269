"""session.speak_audio: what validation refuses, with a reason that says why, and never echoes."""

from __future__ import annotations

import base64
import json

import pytest

from contracts.codec import DecodeError, DecodeErrorReason, decode_command
from contracts.commands import MAX_AUDIO_BYTES, SessionSpeakAudio, decode_audio


def body(**fields: object) -> bytes:
    return json.dumps(
        {"type": "session.speak_audio", "session_id": "s1", "utterance_id": "u1", **fields}
    ).encode()


def refused(**fields: object) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_command(body(**fields))
    assert caught.value.reason is DecodeErrorReason.SCHEMA
    return caught.value


def test_pcm_round_trips() -> None:
    pcm = bytes(range(200)) * 10
    command = decode_command(body(audio=base64.b64encode(pcm).decode()))
    assert isinstance(command, SessionSpeakAudio)
    assert decode_audio(command.audio) == pcm
    assert command.final is False


@pytest.mark.parametrize("audio", ["not base64!", "AAA", "AA=A", "QUJD\nRA=="])
def test_bad_base64_is_refused(audio: str) -> None:
    error = refused(audio=audio)
    assert "not valid base64" in str(error)
    assert audio not in str(error)


def test_an_odd_length_is_refused_as_a_wrong_sample_format() -> None:
    error = refused(audio=base64.b64encode(b"\x00\x01\x02").decode())
    assert "odd number of bytes (3)" in str(error)
    assert "s16le" in str(error)


def test_more_than_one_second_is_refused_with_the_limit() -> None:
    error = refused(audio=base64.b64encode(bytes(MAX_AUDIO_BYTES + 2)).decode())
    assert "48000" in str(error) or "64000" in str(error)


def test_one_second_fits() -> None:
    audio = base64.b64encode(bytes(MAX_AUDIO_BYTES)).decode()
    assert len(decode_command(body(audio=audio)).audio) == 64_000  # type: ignore[union-attr]


def test_only_the_final_part_may_be_empty() -> None:
    assert "only on the final part" in str(refused())
    assert decode_command(body(final=True)).final is True  # type: ignore[union-attr]
