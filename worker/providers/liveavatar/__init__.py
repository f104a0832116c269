"""LiveAvatar (HeyGen's successor API): the REST client, the FULL-mode room links and the
provider that drives sessions through them."""

from worker.providers.liveavatar.client import DEFAULT_BASE_URL, LiveAvatarClient
from worker.providers.liveavatar.errors import InvalidFieldsError, SessionStartError
from worker.providers.liveavatar.models import (
    AvatarPersona,
    SessionConfig,
    SessionRow,
    SessionToken,
    StartedSession,
    VideoSettings,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "AvatarPersona",
    "InvalidFieldsError",
    "LiveAvatarClient",
    "SessionConfig",
    "SessionRow",
    "SessionStartError",
    "SessionToken",
    "StartedSession",
    "VideoSettings",
]
