"""The legacy HeyGen Streaming API as a `Provider`: profile to `streaming.new` body, answers to
the neutral types. It observes nothing on its own: async speech ends are estimated by the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import SecretStr

from worker.providers.base import (
    BrowserConnection,
    Created,
    Observed,
    Provider,
    RemoteSession,
    SessionProfile,
    Spoken,
    StopCause,
    Stopped,
    TaskMode,
    TaskType,
)
from worker.providers.heygen.client import HeyGenClient
from worker.providers.heygen.models import (
    IceCandidate,
    NewSession,
    NewSessionRequest,
    SdpAnswer,
    SttSettings,
    Voice,
)

SYNC_TIMEOUT_BASE_S = 30.0
# About 150 words a minute is 12 characters a second; 4 leaves room for slow voices.
SLOWEST_CHARS_PER_S = 4.0


def new_session_request(profile: SessionProfile) -> NewSessionRequest:
    """The `streaming.new` body for a profile (validation refused what HeyGen cannot take)."""
    voice = None
    if profile.voice_id or profile.voice_rate is not None or profile.voice_emotion:
        voice = Voice.model_validate(
            {
                "voice_id": profile.voice_id,
                "rate": profile.voice_rate,
                "emotion": profile.voice_emotion,
            }
        )
    stt = None
    if profile.stt_provider is not None:
        stt = SttSettings(provider=profile.stt_provider, confidence=profile.stt_confidence)
    return NewSessionRequest.model_validate(
        {
            "avatar_id": profile.avatar_id,
            "voice": voice,
            "quality": profile.quality,
            "video_encoding": profile.video_encoding,
            "version": profile.version,
            "activity_idle_timeout": profile.activity_idle_timeout,
            "knowledge_base": profile.knowledge_base,
            "knowledge_base_id": profile.context_id,
            "language": profile.language,
            "stt_settings": stt,
        }
    )


def browser_connection(new: NewSession) -> BrowserConnection:
    servers = new.ice_servers2 or [s for s in new.ice_servers or [] if not isinstance(s, str)]
    return BrowserConnection(
        url=new.url,
        access_token=new.access_token,
        realtime_endpoint=new.realtime_endpoint,
        session_duration_limit=new.session_duration_limit,
        is_paid=new.is_paid,
        sdp=new.sdp.model_dump() if new.sdp else None,
        ice_servers=[s.model_dump(by_alias=True, exclude_none=True) for s in servers] or None,
    )


def sync_timeout(text: str) -> float:
    """A sync task answers when the speech ends: allow far more than its spoken length."""
    return SYNC_TIMEOUT_BASE_S + len(text) / SLOWEST_CHARS_PER_S


class HeyGenProvider(Provider):
    name = "heygen"
    observes_speech = False

    def __init__(self, client: HeyGenClient) -> None:
        self.client = client
        self._closed = asyncio.Event()

    async def create(self, profile: SessionProfile, *, deadline: float | None = None) -> Created:
        new = await self.client.new_session(new_session_request(profile), deadline=deadline)
        return Created(new.session_id, browser_connection(new))

    async def start(
        self,
        provider_session_id: str,
        *,
        resume: SecretStr | None = None,
        sdp_answer: str | None = None,
        deadline: float | None = None,
    ) -> None:
        sdp = SdpAnswer(sdp=sdp_answer) if sdp_answer is not None else None
        await self.client.start_session(provider_session_id, sdp, deadline=deadline)

    async def speak(
        self,
        provider_session_id: str,
        text: str,
        *,
        command_id: str,
        task_type: TaskType = "repeat",
        task_mode: TaskMode = "async",
        deadline: float | None = None,
    ) -> Spoken:
        sync = task_mode == "sync"
        result = await self.client.task(
            provider_session_id,
            text,
            task_type=task_type,
            task_mode=task_mode,
            deadline=deadline,
            request_timeout=sync_timeout(text) if sync else None,
        )
        return Spoken(result.task_id or command_id, result.duration_ms, ended=sync)

    async def interrupt(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        await self.client.interrupt(provider_session_id, deadline=deadline)

    async def keep_alive(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        await self.client.keep_alive(provider_session_id, deadline=deadline)

    async def stop(
        self,
        provider_session_id: str,
        *,
        cause: StopCause = "requested",
        deadline: float | None = None,
    ) -> Stopped:
        await self.client.stop(provider_session_id, deadline=deadline)
        return Stopped()

    async def list_live(self, *, deadline: float | None = None) -> list[RemoteSession]:
        return [
            RemoteSession(r.session_id, r.status, r.created_at)
            for r in await self.client.list_sessions(deadline=deadline)
        ]

    async def observed(self) -> AsyncIterator[Observed]:
        await self._closed.wait()  # HeyGen tells a backend nothing on its own
        return
        yield  # an async generator that yields nothing

    async def ice(
        self,
        provider_session_id: str,
        candidate: dict[str, object],
        *,
        deadline: float | None = None,
    ) -> None:
        await self.client.ice(
            provider_session_id, IceCandidate.model_validate(candidate), deadline=deadline
        )

    async def aclose(self) -> None:
        self._closed.set()
        await self.client.aclose()
