"""The room link over a WebSocket, to the simulator's room stand-in: the same JSON packets as
LiveKit data packets, one per text frame (sent frames are agent-control, received ones
agent-response), the agent token as a bearer token on the handshake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import aiohttp
from pydantic import SecretStr

from worker.providers.liveavatar.room import MAX_PACKET_BYTES, RoomLink, RoomLinkError, encode

HEARTBEAT_S = 15.0


class WebSocketRoomLink(RoomLink):
    """`http` is shared by every link of a provider and closed by it, not by the link."""

    # The largest frame sent: a LiveKit data packet's payload (the stand-in's is the same).
    max_frame_bytes = MAX_PACKET_BYTES

    def __init__(self, http: aiohttp.ClientSession) -> None:
        super().__init__()
        self._http = http
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def connect(self, url: str, token: SecretStr | None) -> None:
        if token is None:
            raise RoomLinkError("the room stand-in takes an agent token")
        headers = {"Authorization": f"Bearer {token.get_secret_value()}"}
        self._listen(await self._handshake(url, headers))

    async def _handshake(
        self, url: str, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """The open socket; RoomLinkError without the URL (it may carry a secret)."""
        try:
            socket = await self._http.ws_connect(url, headers=headers, heartbeat=HEARTBEAT_S)
        except aiohttp.WSServerHandshakeError as exc:
            raise RoomLinkError(f"the room refused the link: HTTP {exc.status}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RoomLinkError(f"cannot reach the room: {type(exc).__name__}") from None
        self._socket = socket
        return socket

    def _listen(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        """Read the socket's text frames into `packets()` from now on."""
        self._reader = asyncio.create_task(self._read(socket), name="liveavatar-room-link")

    async def send(self, packet: Mapping[str, Any]) -> None:
        socket = self._socket
        if socket is None or socket.closed or self._ended:
            raise RoomLinkError("the room link is not connected")
        frame = encode(packet, self.max_frame_bytes).decode()
        try:
            await socket.send_str(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise RoomLinkError(f"cannot send to the room: {type(exc).__name__}") from None

    async def close(self) -> None:
        self._closing = True
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self._end(None)

    async def _read(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        async for message in socket:
            if message.type is aiohttp.WSMsgType.TEXT:
                self._received(message.data)
        if not self._closing:
            self._end(RoomLinkError(f"the room closed the link (close code {socket.close_code})"))
