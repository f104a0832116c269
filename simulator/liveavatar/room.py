"""The room stand-in: what LiveAvatar's avatar does with the data packets of a FULL session.

The real avatar sits in a LiveKit room; here the worker's room link talks to it over a
WebSocket whose text frames are the data packets themselves (frames the link sends are the
`agent-control` topic, frames it receives `agent-response`). Each room is one task that reads
an inbox and a heap of timers, so speech, the user's voice and the end of the session stay in
order without a task per utterance.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from simulator.liveavatar.settings import LiveAvatarSettings
from simulator.state import speech_duration_ms

log = logging.getLogger("simulator.liveavatar")

Packet = dict[str, Any]
Action = Callable[[], list[Packet]]


@dataclass(slots=True)
class _Speech:
    source_event_id: str | None
    text: str


@dataclass(order=True, slots=True)
class _Timer:
    due: float
    seq: int
    action: Action = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Room:
    """One live FULL session's avatar. Packets it sends go to every socket joined at the time."""

    def __init__(self, session_id: str, settings: Callable[[], LiveAvatarSettings]) -> None:
        self.session_id = session_id
        self._settings = settings
        self._sockets: dict[web.WebSocketResponse, asyncio.Transport | None] = {}
        self._inbox: asyncio.Queue[Action] = asyncio.Queue()
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._queued: deque[_Speech] = deque()
        self._current: _Speech | None = None
        self._speech_timer: _Timer | None = None
        self._ended = False
        self._task = asyncio.create_task(self._run(), name=f"liveavatar-room-{session_id}")

    # Called by the socket handler and the admin API (synchronously: they only queue work).

    def join(self, socket: web.WebSocketResponse, transport: asyncio.Transport | None) -> None:
        self._sockets[socket] = transport

    def leave(self, socket: web.WebSocketResponse) -> None:
        self._sockets.pop(socket, None)

    @property
    def task(self) -> asyncio.Task[None]:
        return self._task

    @property
    def joined(self) -> int:
        return len(self._sockets)

    def receive(self, packet: Packet) -> bool:
        """A packet on agent-control; False when it is not a command the avatar knows."""
        kind = packet.get("event_type")
        event_id = packet.get("event_id")
        source = event_id if isinstance(event_id, str) else None
        text = packet.get("text")
        if kind in ("avatar.speak_text", "avatar.speak_response") and isinstance(text, str):
            said = text if kind == "avatar.speak_text" else _answer(text)
            self._inbox.put_nowait(lambda: self._speak(_Speech(source, said)))
        elif kind == "avatar.interrupt":
            self._inbox.put_nowait(self._interrupt)
        elif kind not in ("avatar.start_listening", "avatar.stop_listening"):
            return False
        return True

    def utterance(self, text: str, duration_s: float) -> None:
        """The end user says `text` for `duration_s` seconds."""
        self._inbox.put_nowait(lambda: self._user_speaks(text, duration_s))

    def end(self, reason: str) -> None:
        self._inbox.put_nowait(lambda: self._end(reason))

    def drop_sockets(self) -> int:
        """Cut every joined socket without a close frame, as a network failure would."""
        return abort(self._sockets, self.leave)

    async def aclose(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for socket in list(self._sockets):
            await socket.close()

    # The room's task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._ended:
            while self._timers and self._timers[0].cancelled:
                heapq.heappop(self._timers)
            action: Action
            if self._timers and self._timers[0].due <= loop.time():
                action = heapq.heappop(self._timers).action
            else:
                timeout = self._timers[0].due - loop.time() if self._timers else None
                try:
                    async with asyncio.timeout(timeout):
                        action = await self._inbox.get()
                except TimeoutError:
                    continue
            await self._broadcast(action())
        for socket in list(self._sockets):
            await socket.close()

    async def _broadcast(self, packets: list[Packet]) -> None:
        for packet in packets:
            frame = json.dumps(packet)
            for socket in list(self._sockets):
                try:
                    await socket.send_str(frame)
                except (ConnectionError, RuntimeError):
                    self.leave(socket)  # gone: like a participant that left the room

    def _after(self, delay: float, action: Action) -> _Timer:
        timer = _Timer(asyncio.get_running_loop().time() + delay, next(self._seq), action)
        heapq.heappush(self._timers, timer)
        return timer

    def _packet(self, event_type: str, **fields: Any) -> Packet:
        return {
            "event_id": str(uuid.uuid4()),
            "event_type": event_type,
            "session_id": self.session_id,
            **fields,
        }

    def _speak(self, speech: _Speech) -> list[Packet]:
        self._queued.append(speech)
        if self._current is None and self._speech_timer is None:
            self._speech_timer = self._after(self._settings().speak_start_delay_s, self._next)
        return []

    def _next(self) -> list[Packet]:
        """Start the next queued speech (nothing when the queue is empty)."""
        self._speech_timer = None
        if not self._queued:
            return []
        speech = self._current = self._queued.popleft()
        duration_s = speech_duration_ms(speech.text, self._settings().words_per_minute) / 1000
        self._speech_timer = self._after(duration_s, self._finish)
        return [
            self._packet("avatar.speak_started", source_event_id=speech.source_event_id),
            self._packet("avatar.transcription", text=speech.text),
        ]

    def _finish(self) -> list[Packet]:
        ended = self._stop_speaking()
        return ended + self._next()

    def _stop_speaking(self) -> list[Packet]:
        if self._speech_timer is not None:
            self._speech_timer.cancelled = True
            self._speech_timer = None
        speech, self._current = self._current, None
        if speech is None:
            return []
        return [self._packet("avatar.speak_ended", source_event_id=speech.source_event_id)]

    def _interrupt(self) -> list[Packet]:
        self._queued.clear()
        return self._stop_speaking()

    def _user_speaks(self, text: str, duration_s: float) -> list[Packet]:
        def done() -> list[Packet]:
            return [
                self._packet("user.speak_ended"),
                self._packet("user.transcription", text=text),
            ]

        self._after(duration_s, done)
        return [self._packet("user.speak_started")]

    def _end(self, reason: str) -> list[Packet]:
        self._ended = True
        self._queued.clear()
        return [*self._stop_speaking(), self._packet("session.stopped", end_reason=reason)]


def abort(
    sockets: dict[web.WebSocketResponse, asyncio.Transport | None],
    leave: Callable[[web.WebSocketResponse], None],
) -> int:
    """Cut `sockets` without a close frame (each then `leave`s); how many were cut."""
    dropped = 0
    for socket, transport in list(sockets.items()):
        if transport is not None:
            transport.abort()
            dropped += 1
        leave(socket)
    return dropped


def _answer(prompt: str) -> str:
    # FULL mode's LLM answers a speak_response; the simulator's answer is predictable.
    return f"You said: {prompt}"


class Rooms:
    """The rooms of live FULL sessions, by LiveAvatar session id."""

    def __init__(self, settings: Callable[[], LiveAvatarSettings]) -> None:
        self._settings = settings
        self._rooms: dict[str, Room] = {}
        # Ended rooms still saying goodbye: held so their tasks are not garbage-collected.
        self._ending: dict[asyncio.Task[None], Room] = {}

    def open(self, session_id: str) -> Room:
        room = self._rooms[session_id] = Room(session_id, self._settings)
        return room

    def get(self, session_id: str) -> Room | None:
        return self._rooms.get(session_id)

    def end(self, session_id: str, reason: str) -> None:
        """The session ended: the room says so, then closes its sockets and its task ends."""
        room = self._rooms.pop(session_id, None)
        if room is not None:
            self._ending[room.task] = room
            room.task.add_done_callback(lambda task: self._ending.pop(task, None))
            room.end(reason)

    async def aclose(self) -> None:
        rooms = [*self._rooms.values(), *self._ending.values()]
        self._rooms.clear()
        for room in rooms:
            await room.aclose()
