"""Makes each session's link: LiveKit's SDK for LiveAvatar's rooms, the WebSocket for the
simulator's stand-in (see `is_room_stand_in`), and LITE's ws_url socket."""

from __future__ import annotations

import logging
from collections.abc import Callable

import aiohttp

from worker.providers.liveavatar.lite_link import LiteLink
from worker.providers.liveavatar.livekit_link import LiveKitRoomLink
from worker.providers.liveavatar.room import RoomLink, is_room_stand_in
from worker.providers.liveavatar.ws_link import WebSocketRoomLink

log = logging.getLogger(__name__)


class RoomLinks:
    """`links(livekit_url)` is a new, unconnected link for that room. One aiohttp session serves
    every stand-in link and is closed by `aclose()`."""

    def __init__(
        self, api_base_url: str, livekit: Callable[[], RoomLink] = LiveKitRoomLink
    ) -> None:
        self._api_base_url = api_base_url
        self._livekit = livekit
        self._http: aiohttp.ClientSession | None = None

    def __call__(self, livekit_url: str) -> RoomLink:
        if not is_room_stand_in(livekit_url, self._api_base_url):
            return self._livekit()
        if self._http is None:
            log.warning(
                "LiveAvatar rooms are the simulator's stand-in at %s: packets go over a "
                "WebSocket, not LiveKit",
                self._api_base_url,
            )
        return WebSocketRoomLink(self._sockets())

    def lite(self) -> RoomLink:
        """A new, unconnected link for a LITE session's ws_url."""
        return LiteLink(self._sockets())

    def _sockets(self) -> aiohttp.ClientSession:
        if self._http is None:
            # Each link holds its connection for the session's life: no pool limit (aiohttp's
            # default of 100 would stall the 101st join).
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
