"""A LITE session's `ws_url`: the worker's own WebSocket to the avatar (aiohttp).

Messages are JSON objects keyed by `type`, one per text frame, at most 1 MB. The URL carries
its own authorisation (it is a secret: never logged). LiveAvatar drops what is sent before it
says `session.state_updated` `connected`, so `connect` returns only once it has said so.
"""

from __future__ import annotations

import json

import aiohttp
from pydantic import SecretStr

from worker.providers.liveavatar.room import RoomLinkError
from worker.providers.liveavatar.ws_link import WebSocketRoomLink

MAX_MESSAGE_BYTES = 1024 * 1024


class LiteLink(WebSocketRoomLink):
    """`connect(ws_url, None)`; the caller bounds it with a timeout."""

    max_frame_bytes = MAX_MESSAGE_BYTES

    async def connect(self, url: str, token: SecretStr | None) -> None:
        socket = await self._handshake(url)
        try:
            await _connected(socket)
        except RoomLinkError:
            await socket.close()
            raise
        self._listen(socket)


async def _connected(socket: aiohttp.ClientWebSocketResponse) -> None:
    """Until the avatar says `connected`; RoomLinkError if the socket ends or it closes first."""
    async for message in socket:
        if message.type is not aiohttp.WSMsgType.TEXT:
            continue
        try:
            update = json.loads(message.data)
        except ValueError:
            continue
        if not isinstance(update, dict) or update.get("type") != "session.state_updated":
            continue
        state = update.get("state")
        if state == "connected":
            return
        if state in ("closing", "closed"):
            raise RoomLinkError(f"the session is {state}")
    raise RoomLinkError(f"the ws_url closed before connected (close code {socket.close_code})")
