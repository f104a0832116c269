"""LiveAvatar (HeyGen's successor API): the REST client, the FULL-mode room links and the
provider that drives sessions through them."""

from worker.providers.liveavatar.client import DEFAULT_BASE_URL, LiveAvatarClient
from worker.providers.liveavatar.errors import InvalidFieldsError, SessionStartError
from worker.providers.liveavatar.links import RoomLinks
from worker.providers.liveavatar.livekit_link import LiveKitRoomLink
from worker.providers.liveavatar.models import (
    AvatarPersona,
    SessionConfig,
    SessionRow,
    SessionToken,
    StartedSession,
    VideoSettings,
)
from worker.providers.liveavatar.provider import LiveAvatarProvider
from worker.providers.liveavatar.room import RoomLink, RoomLinkError, is_room_stand_in
from worker.providers.liveavatar.ws_link import WebSocketRoomLink

__all__ = [
    "DEFAULT_BASE_URL",
    "AvatarPersona",
    "InvalidFieldsError",
    "LiveAvatarClient",
    "LiveAvatarProvider",
    "LiveKitRoomLink",
    "RoomLink",
    "RoomLinkError",
    "RoomLinks",
    "SessionConfig",
    "SessionRow",
    "SessionStartError",
    "SessionToken",
    "StartedSession",
    "VideoSettings",
    "WebSocketRoomLink",
    "is_room_stand_in",
]
