"""LiveAvatar as a `Provider`: sessions over REST, speech and the avatar's events over each
session's link: the LiveKit room (FULL: text) or the `ws_url` WebSocket (LITE: your audio).

create = token + start (billed from the start); start = join the room with the agent token, or
open the ws_url, kept in `Created.resume`, and read its messages into `observed()`. A FULL
speak's packet carries the command id as its `event_id`, a LITE chunk its utterance id, so the
observed start and end name what they answer. A LITE ws_url that drops is reopened at once;
only when that fails is the link reported lost (the worker then replaces the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from worker.providers.base import (
    AudioSent,
    BrowserConnection,
    Created,
    InvalidRequestError,
    LinkLost,
    Observed,
    Provider,
    ProviderError,
    ProviderTimeoutError,
    RemoteSession,
    RemoteStopped,
    ServerError,
    SessionClosedError,
    SessionProfile,
    Spoken,
    StopCause,
    Stopped,
    TaskMode,
    TaskType,
    TransportError,
    UnsupportedError,
)
from worker.providers.liveavatar import lite_messages, packets
from worker.providers.liveavatar.attached import Attached, LiteOptions, link_of, resume_of
from worker.providers.liveavatar.audio import Utterance
from worker.providers.liveavatar.client import LiveAvatarClient
from worker.providers.liveavatar.config import session_config
from worker.providers.liveavatar.errors import SessionStartError
from worker.providers.liveavatar.links import RoomLinks
from worker.providers.liveavatar.models import EndReason
from worker.providers.liveavatar.room import PacketTooLargeError, RoomLink, RoomLinkError

log = logging.getLogger(__name__)

# Joining a room takes far less; bounded by the caller's deadline too.
JOIN_TIMEOUT_S = 15.0
# Stopping a session whose start failed gets its own time: the caller's deadline may be spent.
CLEANUP_TIMEOUT_S = 10.0

LITE_CREDITS_PER_MINUTE = 1.0

END_REASONS: Mapping[StopCause, EndReason] = {
    "requested": "USER_CLOSED",
    "idle": "IDLE_TIMEOUT",
    "max_duration": "MAX_DURATION_REACHED",
    "expired_remotely": "ZOMBIE_SESSION_REAP",
    "shutdown": "AGENT_HANG_UP",
    "error": "SERVER_ERROR",
}


@dataclass(frozen=True, slots=True)
class _Closed:
    """Ends observed(): the provider was closed."""


def _remaining(deadline: float | None, cap: float) -> float:
    return cap if deadline is None else min(cap, deadline - time.monotonic())


class LiveAvatarProvider(Provider):
    name = "liveavatar"
    observes_speech = True
    credits_per_minute = 2.0  # FULL mode; LITE burns half (credit_rate)
    idle_close_s = 300.0

    def __init__(
        self,
        client: LiveAvatarClient,
        links: RoomLinks | None = None,
        lite: LiteOptions | None = None,
    ) -> None:
        self.client = client
        self._links = links or RoomLinks(client.base_url)
        self._lite = lite or LiteOptions()
        self._attached: dict[str, Attached] = {}
        self._observed: asyncio.Queue[Observed | _Closed] = asyncio.Queue()

    def credit_rate(self, mode: Literal["FULL", "LITE"] = "FULL") -> float | None:
        return LITE_CREDITS_PER_MINUTE if mode == "LITE" else self.credits_per_minute

    # --- REST --------------------------------------------------------------------------------

    async def create(self, profile: SessionProfile, *, deadline: float | None = None) -> Created:
        config = session_config(profile)
        try:
            started = await self.client.open_session(config, deadline=deadline)
        except SessionStartError as failed:
            if failed.billed:  # a start refused outright never went live
                await self._stop_after_failed_start(failed.session_id)
            raise failed.cause from failed
        try:
            resume = resume_of(started)
        except ServerError:
            await self._stop_after_failed_start(started.session_id)
            raise
        browser = BrowserConnection(
            livekit_url=started.livekit_url,
            livekit_client_token=started.livekit_client_token.get_secret_value(),
            max_session_duration=started.max_session_duration,
        )
        return Created(started.session_id, browser, resume)

    async def _stop_after_failed_start(self, session_id: str) -> None:
        """A start that failed may have gone live and bills until stopped: stop it, and say so
        if that fails too (the orphan hunt finds it in the active list later)."""
        deadline = time.monotonic() + CLEANUP_TIMEOUT_S
        try:
            await self.client.stop(session_id, "SERVER_ERROR", deadline=deadline)
        except SessionClosedError:
            pass  # never went live
        except ProviderError as error:
            log.warning(
                "cannot stop LiveAvatar session %s after a failed start: %s", session_id, error
            )

    async def keep_alive(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        """Over REST in FULL; over the ws_url in LITE (as LiveAvatar's integrations do)."""
        attached = self._attached.get(provider_session_id)
        if attached is not None and attached.lite:
            message = lite_messages.keep_alive()
            await self._send(provider_session_id, message, "lite.keep-alive", deadline)
            return
        await self.client.keep_alive(provider_session_id, deadline=deadline)

    async def stop(
        self,
        provider_session_id: str,
        *,
        cause: StopCause = "requested",
        deadline: float | None = None,
    ) -> Stopped:
        attached = self._attached.pop(provider_session_id, None)
        if attached is not None:
            attached.stopping = True
        try:
            await self.client.stop(provider_session_id, END_REASONS[cause], deadline=deadline)
        finally:
            if attached is not None:
                await self._detach(attached)
        return Stopped(await self._credits_consumed(provider_session_id, deadline))

    async def _end_reason(self, session_id: str, deadline: float | None) -> str | None:
        """LiveAvatar's end reason when it says the session is over; None while it runs, or
        when it cannot say."""
        try:
            row = await self.client.get_session(session_id, deadline=deadline)
        except SessionClosedError:
            return "UNKNOWN"  # not found: gone
        except ProviderError:
            return None
        return row.end_reason or ("UNKNOWN" if row.end_at else None)

    async def _credits_consumed(self, session_id: str, deadline: float | None) -> float | None:
        """What LiveAvatar says the session cost; None when it cannot say in time."""
        try:
            row = await self.client.get_session(session_id, deadline=deadline)
        except ProviderError as error:
            log.info("no credits_consumed for LiveAvatar session %s: %s", session_id, error)
            return None
        return row.credits_consumed

    async def list_live(self, *, deadline: float | None = None) -> list[RemoteSession]:
        rows = await self.client.list_active(deadline=deadline)
        return [RemoteSession(row.id, "active", row.created_at) for row in rows]

    async def credits_left(self, *, deadline: float | None = None) -> float | None:
        return await self.client.credits_left(deadline=deadline)

    # --- the room ----------------------------------------------------------------------------

    async def start(
        self,
        provider_session_id: str,
        *,
        resume: SecretStr | None = None,
        sdp_answer: str | None = None,
        deadline: float | None = None,
    ) -> None:
        """Join the session's room (again, after a drop or a takeover); a no-op while joined."""
        if sdp_answer is not None:
            raise UnsupportedError("liveavatar takes no SDP answer", endpoint="room.join")
        attached = self._attached.get(provider_session_id)
        if attached is None:
            if resume is None:
                raise SessionClosedError(
                    "no room details for this session", endpoint="room.join", closed=False
                )
            attached = self._attached[provider_session_id] = Attached(resume)
        elif resume is not None:
            attached.resume = resume
        await self._linked(provider_session_id, attached, deadline)

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
        """Always async: LiveAvatar answers a speak only with the observed start and end."""
        attached = self._attached.get(provider_session_id)
        if attached is not None and attached.lite:
            raise UnsupportedError(
                "a liveavatar LITE session speaks audio (session.speak_audio), not text",
                endpoint="room.speak",
            )
        packet = packets.speak(provider_session_id, command_id, text, task_type)
        await self._send(provider_session_id, packet, "room.speak", deadline)
        return Spoken(command_id)

    async def speak_audio(
        self,
        provider_session_id: str,
        audio: bytes,
        *,
        utterance_id: str,
        final: bool,
        deadline: float | None = None,
    ) -> AudioSent:
        attached = self._attached.get(provider_session_id)
        if attached is None or not attached.lite:
            raise UnsupportedError(
                "only a liveavatar LITE session takes audio", endpoint="lite.speak"
            )
        ids = self._lite.event_ids
        utterance = attached.utterance
        if utterance is None or utterance.utterance_id != utterance_id:
            if utterance is not None:  # left without its final part: ended before the next
                end = lite_messages.speak_end(ids.end(utterance.utterance_id))
                await self._send(provider_session_id, end, "lite.speak", deadline)
            utterance = attached.utterance = Utterance(utterance_id)
        before = utterance.sent_s
        for chunk in utterance.split(audio):
            if not await utterance.paced(self._lite.lead_s):
                break
            message = lite_messages.speak(ids.chunk(utterance_id, utterance.chunks), chunk)
            await self._send(provider_session_id, message, "lite.speak", deadline)
            utterance.sent(chunk)
        if utterance.cut.is_set():
            return AudioSent(utterance.sent_s - before, cut=True)
        if final:
            end = lite_messages.speak_end(ids.end(utterance_id))
            await self._send(provider_session_id, end, "lite.speak", deadline)
            attached.utterance = None
        return AudioSent(utterance.sent_s - before)

    async def interrupt(self, provider_session_id: str, *, deadline: float | None = None) -> None:
        attached = self._attached.get(provider_session_id)
        if attached is not None and attached.lite:
            # Chunks not sent yet are dropped at once, before the avatar hears of it.
            if attached.utterance is not None:
                attached.utterance.cut.set()
                attached.utterance = None
            message = lite_messages.interrupt()
            await self._send(provider_session_id, message, "lite.interrupt", deadline)
            return
        packet = packets.interrupt(provider_session_id, str(uuid.uuid4()))
        await self._send(provider_session_id, packet, "room.interrupt", deadline)

    async def observed(self) -> AsyncIterator[Observed]:
        while True:
            item = await self._observed.get()
            if isinstance(item, _Closed):
                return
            yield item

    async def aclose(self) -> None:
        attached, self._attached = list(self._attached.values()), {}
        for session in attached:
            session.stopping = True
            await self._detach(session)
        await self._links.aclose()
        await self.client.aclose()
        self._observed.put_nowait(_Closed())

    async def _send(
        self, session_id: str, packet: dict[str, Any], endpoint: str, deadline: float | None
    ) -> None:
        attached = self._attached.get(session_id)
        if attached is None:
            raise SessionClosedError(
                "the session's room was never joined here", endpoint=endpoint, closed=False
            )
        link = await self._linked(session_id, attached, deadline)
        try:
            try:
                await link.send(packet)
            except RoomLinkError:
                if not attached.lite:
                    raise
                # The ws_url refused the frame (it was not written): once more on a new one.
                relinked = await self._relink(session_id, attached, link)
                if relinked is None:
                    raise
                await relinked.send(packet)
        except PacketTooLargeError as error:
            raise InvalidRequestError(str(error), endpoint=endpoint) from None
        except RoomLinkError as error:
            # The packet may have reached the room: a speak is not repeated.
            raise TransportError(str(error), endpoint=endpoint, request_sent=True) from None

    async def _linked(
        self, session_id: str, attached: Attached, deadline: float | None
    ) -> RoomLink:
        """The session's live link, joining the room first when it has none (or it dropped)."""
        async with attached.lock:
            reader = attached.reader
            if attached.link is not None and reader is not None and not reader.done():
                return attached.link
            try:
                link = await self._open(attached, _remaining(deadline, JOIN_TIMEOUT_S))
            except RoomLinkError as error:
                reason = await self._end_reason(session_id, deadline)
                if reason is not None:  # not a link problem: the session is over
                    raise SessionClosedError(
                        f"the session has ended ({reason})", endpoint="room.join", closed=True
                    ) from None
                raise TransportError(str(error), endpoint="room.join", request_sent=True) from None
            attached.link = link
            attached.reader = asyncio.create_task(
                self._read(session_id, attached, link), name=f"liveavatar-room-{session_id}"
            )
            return link

    async def _open(self, attached: Attached, budget: float) -> RoomLink:
        """A new link for the session, connected within `budget` seconds."""
        url, token = link_of(attached.resume)
        link = self._links(url) if token is not None else self._links.lite()
        try:
            async with asyncio.timeout(budget):
                await link.connect(url, token)
        except TimeoutError:
            await link.close()
            raise ProviderTimeoutError(
                f"room not joined within {budget:.3g}s", endpoint="room.join"
            ) from None
        return link

    async def _relink(
        self, session_id: str, attached: Attached, dropped: RoomLink
    ) -> RoomLink | None:
        """A LITE ws_url that dropped, reopened (once for the reader and senders together);
        None when it cannot be."""
        async with attached.lock:
            if attached.link is not dropped:
                return attached.link
            try:
                link = await self._open(attached, JOIN_TIMEOUT_S)
            except (RoomLinkError, ProviderTimeoutError) as error:
                log.warning(
                    "cannot reopen the ws_url of LiveAvatar session %s: %s", session_id, error
                )
                return None
            attached.link = link  # before the old one closes: its reader follows to this one
            await dropped.close()
            log.info("reopened the ws_url of LiveAvatar session %s", session_id)
            return link

    async def _read(self, session_id: str, attached: Attached, link: RoomLink | None) -> None:
        """The link's messages into observed(). A LITE ws_url that drops is reopened first. A
        drop is LinkLost, or RemoteStopped when LiveAvatar says the session ended and its
        session.stopped never reached us; nothing when session.stopped came already or we are
        leaving."""
        while link is not None:
            try:
                await self._relay(session_id, attached, link)
            except RoomLinkError as error:
                if attached.ended or attached.stopping:
                    break
                link = await self._relink(session_id, attached, link) if attached.lite else None
                if link is not None:
                    continue
                reason = await self._end_reason(session_id, time.monotonic() + CLEANUP_TIMEOUT_S)
                attached.ended = reason is not None
                lost = LinkLost(session_id, str(error))
                self._observed.put_nowait(RemoteStopped(session_id, reason) if reason else lost)
            else:
                # Closed here: by our stop, or replaced by a sender that reopened it first.
                if attached.stopping or attached.link is link:
                    return
                link = attached.link
        if attached.ended and self._attached.get(session_id) is attached:
            del self._attached[session_id]
            if attached.link is not None:
                await attached.link.close()

    async def _relay(self, session_id: str, attached: Attached, link: RoomLink) -> None:
        ids = self._lite.event_ids
        async for packet in link.packets():
            if attached.lite:
                event = lite_messages.observed(packet, session_id, ids)
            else:
                event = packets.observed(packet, session_id)
            if event is None or attached.stopping:
                continue
            attached.ended = attached.ended or isinstance(event, RemoteStopped)
            self._observed.put_nowait(event)

    async def _detach(self, attached: Attached) -> None:
        if attached.link is not None:
            await attached.link.close()
        if attached.reader is not None:
            attached.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attached.reader
