"""The FULL-mode data packets: commands the worker sends, and the avatar's events read back
as the provider interface's observed events.

A command's `event_id` is the worker's command id, so the `source_event_id` of
avatar.speak_started / speak_ended names the speak it answers with no table to keep (and still
does after another replica took the session over).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.providers.base import (
    AvatarTranscription,
    Observed,
    RemoteStopped,
    SpeechEnded,
    SpeechStarted,
    TaskType,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)
from worker.providers.liveavatar.room import Packet

SPEAK_EVENT: Mapping[TaskType, str] = {
    "repeat": "avatar.speak_text",  # say the text as given
    "talk": "avatar.speak_response",  # LiveAvatar's LLM answers the text, then speaks
}


def speak(session_id: str, event_id: str, text: str, task_type: TaskType) -> Packet:
    return {
        "event_id": event_id,
        "event_type": SPEAK_EVENT[task_type],
        "session_id": session_id,
        "text": text,
    }


def interrupt(session_id: str, event_id: str) -> Packet:
    return {"event_id": event_id, "event_type": "avatar.interrupt", "session_id": session_id}


def _text(packet: Mapping[str, Any]) -> str | None:
    text = packet.get("text")
    return text if isinstance(text, str) else None


def observed(packet: Mapping[str, Any], session_id: str) -> Observed | None:
    """The observed event a packet of `session_id`'s room says, or None for one the worker has
    no use for (or a malformed one)."""
    kind = packet.get("event_type")
    source = packet.get("source_event_id")
    command_id = source if isinstance(source, str) and source else None
    text = _text(packet)
    match kind:
        case "avatar.speak_started":
            return SpeechStarted(session_id, command_id)
        case "avatar.speak_ended":
            return SpeechEnded(session_id, command_id)
        case "user.speak_started":
            return UserSpeechStarted(session_id)
        case "user.speak_ended":
            return UserSpeechEnded(session_id)
        case "user.transcription" if text is not None:
            return UserTranscription(session_id, text)
        case "avatar.transcription" if text is not None:
            return AvatarTranscription(session_id, text)
        case "session.stopped":
            reason = packet.get("end_reason")
            return RemoteStopped(session_id, reason if isinstance(reason, str) else "UNKNOWN")
    return None
