"""A LiveAvatar session's link as the provider holds it, and the secret (`Created.resume`) that
opens it again: the FULL room's URL and agent token, or the LITE session's ws_url."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from pydantic import SecretStr

from worker.providers.base import ServerError
from worker.providers.liveavatar.audio import Utterance
from worker.providers.liveavatar.lite_messages import EventIds
from worker.providers.liveavatar.models import StartedSession
from worker.providers.liveavatar.room import RoomLink


@dataclass(frozen=True, slots=True)
class LiteOptions:
    """LITE's unconfirmed or tunable details (settings LIVEAVATAR_LITE_*)."""

    event_ids: EventIds = field(default_factory=EventIds)
    # How far ahead of real time an utterance's audio may be sent, in seconds.
    lead_s: float = 2.0


@dataclass(eq=False)
class Attached:
    """A session whose link (room, or LITE ws_url) this provider has opened (or is opening)."""

    resume: SecretStr
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    link: RoomLink | None = None
    reader: asyncio.Task[None] | None = None
    stopping: bool = False  # our own stop: the room's session.stopped is not news
    utterance: Utterance | None = None  # LITE: the one being sent
    ended: bool = False  # the session's end was told on observed()
    lite: bool = field(init=False)  # a LITE ws_url, not a FULL room

    def __post_init__(self) -> None:
        self.lite = link_of(self.resume)[1] is None


def resume_of(started: StartedSession) -> SecretStr:
    """What re-attaches the worker's link: the room and agent token, or the LITE ws_url."""
    if started.ws_url is not None:
        return SecretStr(json.dumps({"ws_url": started.ws_url.get_secret_value()}))
    if started.livekit_agent_token is None:
        raise ServerError("start answered no livekit_agent_token", endpoint="sessions.start")
    room = {"url": started.livekit_url, "token": started.livekit_agent_token.get_secret_value()}
    return SecretStr(json.dumps(room))


def link_of(resume: SecretStr) -> tuple[str, SecretStr | None]:
    """Where the link goes: a room's URL and agent token, or a LITE ws_url (no token)."""
    try:
        link = json.loads(resume.get_secret_value())
        if "ws_url" in link:
            return str(link["ws_url"]), None
        return str(link["url"]), SecretStr(str(link["token"]))
    except (ValueError, KeyError, TypeError):
        raise ServerError("resume is not this provider's", endpoint="room.join") from None
