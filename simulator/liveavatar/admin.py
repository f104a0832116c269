"""An async client of /_admin/liveavatar, for tests, benchmarks and demos."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from simulator.admin import SimulatorAdmin
from simulator.liveavatar.settings import LiveAvatarFault

PREFIX = "/_admin/liveavatar"


class LiteStats(BaseModel):
    """A LITE session's avatar: what came over its ws_url."""

    audio_chunks: int
    audio_bytes: int
    duplicate_chunks: int
    utterances: int
    speak_ends: int
    interrupts: int
    keep_alives: int
    dropped_early: int
    protocol_errors: int
    max_ahead_s: float
    first_chunk_at: dict[str, float] = {}  # wall clock, by utterance event_id


class LiveAvatarSessionStats(BaseModel):
    status: str  # created, active, ended
    mode: str
    is_sandbox: bool
    end_reason: str | None
    credits_consumed: float
    keep_alives: int
    commands: int
    room_sockets: int
    api_key_hint: str
    lite: LiteStats | None = None


class LiveAvatarStats(BaseModel):
    calls: dict[str, int]
    live_sessions: int
    sessions: dict[str, LiveAvatarSessionStats]
    balances: dict[str, float]  # by key hint


class LiveAvatarAdmin(SimulatorAdmin):
    """LiveAvatarAdmin(base_url): the HeyGen admin calls plus LiveAvatar's own."""

    async def add_liveavatar_fault(self, endpoint: str = "*", **spec: Any) -> list[dict[str, Any]]:
        """Add a fault (see LiveAvatarFault; endpoint e.g. "sessions.start" or "room")."""
        body = LiveAvatarFault(endpoint=endpoint, **spec).model_dump(
            mode="json", exclude_defaults=True
        )
        faults: list[dict[str, Any]] = (await self._call("POST", f"{PREFIX}/faults", json=body))[
            "faults"
        ]
        return faults

    async def clear_faults(self) -> None:
        """Both APIs' faults."""
        await super().clear_faults()
        await self._call("DELETE", f"{PREFIX}/faults")

    async def end_session(
        self, session_id: str, end_reason: str = "SERVER_ERROR"
    ) -> dict[str, Any]:
        """End a live session as LiveAvatar would; its room says session.stopped."""
        row: dict[str, Any] = await self._call(
            "POST", f"{PREFIX}/sessions/{session_id}/end", json={"end_reason": end_reason}
        )
        return row

    async def inject_utterance(self, session_id: str, text: str, duration_s: float = 0.5) -> None:
        """The end user says `text` (user.speak_started, speak_ended, transcription)."""
        body = {"text": text, "duration_s": duration_s}
        await self._call("POST", f"{PREFIX}/sessions/{session_id}/utterance", json=body)

    async def drop_room(self, session_id: str) -> int:
        """Cut the session's room sockets without a close frame; how many were cut."""
        dropped: int = (await self._call("POST", f"{PREFIX}/sessions/{session_id}/drop-room"))[
            "dropped"
        ]
        return dropped

    async def stall_lite(self, session_id: str, seconds: float) -> None:
        """The LITE avatar reads nothing from its ws_url for `seconds`."""
        await self._call(
            "POST", f"{PREFIX}/sessions/{session_id}/stall-lite", json={"seconds": seconds}
        )

    async def set_credits(self, credits: float, api_key: str | None = None) -> None:
        """One account's balance, or (api_key None) every account's and new ones' start."""
        await self._call("PUT", f"{PREFIX}/credits", json={"credits": credits, "api_key": api_key})

    async def configure_liveavatar(self, **changes: Any) -> dict[str, Any]:
        config: dict[str, Any] = await self._call("PATCH", f"{PREFIX}/config", json=changes)
        return config

    async def reset(self) -> None:
        """Both APIs, as freshly started."""
        await super().reset()
        await self._call("POST", f"{PREFIX}/reset")

    async def liveavatar_stats(self) -> LiveAvatarStats:
        return LiveAvatarStats.model_validate(await self._call("GET", f"{PREFIX}/stats"))
