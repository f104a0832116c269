"""One plain async function per command type: command in, provider calls, events out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from worker.handlers.audio import speak_audio
from worker.handlers.lifecycle import create_session, ice, keepalive, start_session, stop_session
from worker.handlers.listing import list_sessions
from worker.handlers.speech import interrupt, speak

Handler = Callable[[Any, Any], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "session.create": create_session,
    "session.start": start_session,
    "session.ice": ice,
    "session.speak": speak,
    "session.speak_audio": speak_audio,
    "session.interrupt": interrupt,
    "session.stop": stop_session,
    "session.keepalive": keepalive,
    "sessions.list": list_sessions,
}

SPEAKS = frozenset({"session.speak", "session.speak_audio"})
STOP = "session.stop"
# Control commands do not wait behind a running speak, and drop queued work they make moot.
# type: (queued kinds it preempts, running kinds it overtakes)
CONTROL_LANES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "session.interrupt": (SPEAKS, SPEAKS),
    STOP: (SPEAKS | {"session.keepalive", "session.ice", "session.interrupt"}, SPEAKS),
}
