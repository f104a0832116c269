"""The LITE avatar behind a session's `ws_url`: the backend's audio in, lip-sync events out.

JSON text frames keyed by `type`, as the reference describes them. A socket first hears
`session.state_updated` `connecting`, then `connected` after `lite_connect_delay_s`; what it
sends before that is dropped silently (and counted). The avatar plays the audio of each
`agent.speak` in arrival order at 24 kHz: `agent.speak_started` when the first chunk of an
utterance starts playing, `agent.speak_ended` once `agent.speak_end` came and the audio played
out. Whether an utterance's chunks share one `event_id` is unconfirmed: `lite_event_id_per`
says which the avatar expects, and chunks that break it are counted as protocol errors.

The avatar belongs to the session, not to a socket: a socket that drops and is reopened finds
the utterance where it was. Every chunk's digest is kept, so a chunk sent twice is counted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from simulator.liveavatar.room import abort
from simulator.liveavatar.settings import LiveAvatarSettings

BYTES_PER_SECOND = 24_000 * 2  # PCM s16le mono at 24 kHz
MAX_MESSAGE_BYTES = 1024 * 1024

Message = dict[str, Any]


@dataclass(slots=True)
class _Utterance:
    event_id: str
    task_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: bool = False
    end_id: str | None = None
    chunk_ids: set[str] = field(default_factory=set)


@dataclass(slots=True)
class LiteStats:
    audio_chunks: int = 0
    audio_bytes: int = 0
    duplicate_chunks: int = 0
    utterances: int = 0
    speak_ends: int = 0
    interrupts: int = 0
    keep_alives: int = 0
    dropped_early: int = 0
    protocol_errors: int = 0
    # The most audio the avatar held unplayed when a chunk arrived, in seconds.
    max_ahead_s: float = 0.0
    # When (wall clock) each utterance's first chunk arrived, by its event_id (for benchmarks).
    first_chunk_at: dict[str, float] = field(default_factory=dict)


class LiteAvatar:
    """One live LITE session's avatar. `touch()` is the session's activity (resets idle)."""

    def __init__(
        self,
        session_id: str,
        settings: Callable[[], LiveAvatarSettings],
        touch: Callable[[], None],
    ) -> None:
        self.session_id = session_id
        self._settings = settings
        self._touch = touch
        self.stats = LiteStats()
        self._sockets: dict[web.WebSocketResponse, asyncio.Transport | None] = {}
        self._connected: set[web.WebSocketResponse] = set()
        self._digests: set[bytes] = set()
        self._utterance: _Utterance | None = None
        self._play_until = 0.0
        self._timers: set[asyncio.TimerHandle] = set()
        self._stalled_until = 0.0
        self._ended = False

    @property
    def joined(self) -> int:
        return len(self._sockets)

    async def serve(
        self, socket: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> None:
        """One socket's life: state updates, then its messages until it closes."""
        self._sockets[socket] = transport
        try:
            await self._send_to(socket, {"type": "session.state_updated", "state": "connecting"})
            connect = asyncio.get_running_loop().call_later(
                self._settings().lite_connect_delay_s, self._connect, socket
            )
            async for frame in socket:
                if frame.type is WSMsgType.TEXT:
                    await self._stall()
                    self._receive(socket, frame.data)
            connect.cancel()
        finally:
            self._leave(socket)

    def stall(self, seconds: float) -> None:
        """Read nothing for `seconds`: messages wait, keep-alives do not count meanwhile."""
        self._stalled_until = asyncio.get_running_loop().time() + seconds

    def drop_sockets(self) -> int:
        """Cut every socket without a close frame, as a network failure would."""
        return abort(self._sockets, self._leave)

    def _leave(self, socket: web.WebSocketResponse) -> None:
        self._sockets.pop(socket, None)
        self._connected.discard(socket)

    async def end(self) -> None:
        """The session ended: the sockets hear closing, closed, and are closed."""
        self._ended = True
        self._cancel_timers()
        for state in ("closing", "closed"):
            for socket in list(self._connected):
                await self._send_to(socket, {"type": "session.state_updated", "state": state})
        for socket in list(self._sockets):
            await socket.close()

    # --- inbound -----------------------------------------------------------------------------

    async def _stall(self) -> None:
        delay = self._stalled_until - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _connect(self, socket: web.WebSocketResponse) -> None:
        if socket in self._sockets and not self._ended:
            self._connected.add(socket)
            self._send_soon(socket, {"type": "session.state_updated", "state": "connected"})

    def _receive(self, socket: web.WebSocketResponse, data: str) -> None:
        if socket not in self._connected:
            self.stats.dropped_early += 1  # LiveAvatar drops these silently
            return
        try:
            message = json.loads(data)
        except ValueError:
            message = None
        if not isinstance(message, dict) or len(data) > MAX_MESSAGE_BYTES:
            self.stats.protocol_errors += 1
            return
        kind, event_id = message.get("type"), message.get("event_id")
        event_id = event_id if isinstance(event_id, str) else ""
        if kind == "agent.speak":
            self._speak(event_id, message.get("audio"))
        elif kind == "agent.speak_end":
            self._speak_end(event_id)
        elif kind == "agent.interrupt":
            self._interrupt(event_id)
        elif kind == "session.keep_alive":
            self.stats.keep_alives += 1
        elif kind not in ("agent.start_listening", "agent.stop_listening"):
            self.stats.protocol_errors += 1
            return
        with contextlib.suppress(Exception):
            self._touch()

    def _speak(self, event_id: str, audio: object) -> None:
        pcm = _pcm(audio)
        if pcm is None:
            self.stats.protocol_errors += 1
            return
        stats = self.stats
        digest = hashlib.blake2b(pcm, digest_size=16).digest()
        stats.duplicate_chunks += digest in self._digests
        self._digests.add(digest)
        stats.audio_chunks += 1
        stats.audio_bytes += len(pcm)
        now = asyncio.get_running_loop().time()
        utterance = self._utterance
        if utterance is None:
            utterance = self._utterance = _Utterance(event_id)
            stats.utterances += 1
            stats.first_chunk_at.setdefault(event_id, time.time())
            start = max(now + self._settings().speak_start_delay_s, self._play_until)
            self._play_until = start
            self._at(start, lambda: self._started(utterance))
        elif self._breaks_ids(utterance, event_id):
            stats.protocol_errors += 1
        utterance.chunk_ids.add(event_id)
        self._play_until = max(self._play_until, now) + len(pcm) / BYTES_PER_SECOND
        stats.max_ahead_s = max(stats.max_ahead_s, self._play_until - now)

    def _breaks_ids(self, utterance: _Utterance, event_id: str) -> bool:
        if self._settings().lite_event_id_per == "utterance":
            return event_id != utterance.event_id
        return event_id in utterance.chunk_ids

    def _speak_end(self, event_id: str) -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            self.stats.protocol_errors += 1
            return
        self.stats.speak_ends += 1
        utterance.end_id = event_id
        self._at(self._play_until, lambda: self._finished(utterance))

    def _interrupt(self, event_id: str) -> None:
        self.stats.interrupts += 1
        self._cancel_timers()
        self._utterance = None
        self._play_until = 0.0
        self._broadcast({"type": "agent.speak_interrupted", "event_id": event_id})

    # --- outbound ----------------------------------------------------------------------------

    def _started(self, utterance: _Utterance) -> None:
        utterance.started = True
        self._broadcast(_speech("agent.speak_started", utterance.event_id, utterance))

    def _finished(self, utterance: _Utterance) -> None:
        if not utterance.started:  # speak_end before the first chunk played
            self._started(utterance)
        self._broadcast(_speech("agent.speak_ended", utterance.end_id or "", utterance))

    def _at(self, when: float, action: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            action()

        handle = loop.call_at(when, fire)
        self._timers.add(handle)

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _broadcast(self, message: Message) -> None:
        for socket in list(self._connected):
            self._send_soon(socket, message)

    def _send_soon(self, socket: web.WebSocketResponse, message: Message) -> None:
        task = asyncio.ensure_future(self._send_to(socket, message))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send_to(self, socket: web.WebSocketResponse, message: Message) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await socket.send_str(json.dumps(message))


def _speech(kind: str, event_id: str, utterance: _Utterance) -> Message:
    return {"type": kind, "event_id": event_id, "task": {"id": utterance.task_id}}


def _pcm(audio: object) -> bytes | None:
    """The chunk's PCM, or None when it is not base64 of whole 16-bit samples."""
    if not isinstance(audio, str):
        return None
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        return None
    return pcm if pcm and len(pcm) % 2 == 0 else None


class LiteAvatars:
    """The avatars of live LITE sessions, by LiveAvatar session id."""

    def __init__(self, settings: Callable[[], LiveAvatarSettings]) -> None:
        self._settings = settings
        self._avatars: dict[str, LiteAvatar] = {}
        self._ending: set[asyncio.Task[None]] = set()
        # Kept after the session ended, for the stats.
        self.finished: dict[str, LiteStats] = {}

    def open(self, session_id: str, touch: Callable[[], None]) -> LiteAvatar:
        avatar = self._avatars[session_id] = LiteAvatar(session_id, self._settings, touch)
        return avatar

    def get(self, session_id: str) -> LiteAvatar | None:
        return self._avatars.get(session_id)

    def stats(self, session_id: str) -> LiteStats | None:
        avatar = self._avatars.get(session_id)
        return avatar.stats if avatar is not None else self.finished.get(session_id)

    def end(self, session_id: str) -> None:
        avatar = self._avatars.pop(session_id, None)
        if avatar is not None:
            self.finished[session_id] = avatar.stats
            task = asyncio.ensure_future(avatar.end())
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def aclose(self) -> None:
        for session_id in list(self._avatars):
            self.end(session_id)
        if self._ending:
            await asyncio.gather(*self._ending, return_exceptions=True)
