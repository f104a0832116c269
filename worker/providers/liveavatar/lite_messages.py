"""LITE's `ws_url` messages: what the worker sends, and the avatar's events read back as the
provider interface's observed events.

Whether the chunks of one utterance share one `event_id` is unconfirmed (pipecat: shared;
LiveKit's plugin: one per chunk), so `EventIds` does either. Per chunk, an id is the utterance
id plus `:<n>` (`:end` for agent.speak_end), and the avatar's events name the utterance again
once that suffix is taken off: no table to keep, also after another replica took over.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from worker.providers.base import Observed, SpeechEnded, SpeechStarted
from worker.providers.liveavatar.room import Packet

EventIdPer = Literal["utterance", "chunk"]


@dataclass(frozen=True, slots=True)
class EventIds:
    per: EventIdPer = "utterance"

    def chunk(self, utterance_id: str, index: int) -> str:
        return utterance_id if self.per == "utterance" else f"{utterance_id}:{index}"

    def end(self, utterance_id: str) -> str:
        return utterance_id if self.per == "utterance" else f"{utterance_id}:end"

    def utterance(self, event_id: str) -> str:
        return event_id if self.per == "utterance" else event_id.rpartition(":")[0] or event_id


def speak(event_id: str, pcm: bytes) -> Packet:
    return {"type": "agent.speak", "event_id": event_id, "audio": base64.b64encode(pcm).decode()}


def speak_end(event_id: str) -> Packet:
    return {"type": "agent.speak_end", "event_id": event_id}


def interrupt() -> Packet:
    return {"type": "agent.interrupt", "event_id": str(uuid.uuid4())}


def keep_alive() -> Packet:
    return {"type": "session.keep_alive", "event_id": str(uuid.uuid4())}


def observed(message: Mapping[str, Any], session_id: str, ids: EventIds) -> Observed | None:
    """The observed event a ws_url message says, or None for one the worker has no use for
    (state updates, agent.speak_interrupted: the interrupt's own answer is the worker's)."""
    event_id = message.get("event_id")
    utterance = ids.utterance(event_id) if isinstance(event_id, str) and event_id else None
    match message.get("type"):
        case "agent.speak_started":
            return SpeechStarted(session_id, utterance)
        case "agent.speak_ended":
            return SpeechEnded(session_id, utterance)
    return None
