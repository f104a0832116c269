"""The room link: the worker's own participant in a FULL session's room.

Commands go out as JSON data packets on the topic `agent-control`; the avatar's events come back
on `agent-response`. Two implementations carry them: LiveKit's SDK (livekit_link.py) against
LiveAvatar, and a WebSocket (ws_link.py) against the simulator's room stand-in, which carries
the same packets as text frames (no LiveKit server runs here).

Which one a session uses follows one rule, `is_room_stand_in`: a room served from the REST API's
own host and port is the simulator's stand-in (LiveAvatar's rooms are LiveKit servers elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr
from yarl import URL

log = logging.getLogger(__name__)

CONTROL_TOPIC = "agent-control"
RESPONSE_TOPIC = "agent-response"
# LiveKit's limit for one reliable data packet's payload.
MAX_PACKET_BYTES = 15 * 1024

Packet = dict[str, Any]


class RoomLinkError(Exception):
    """The link could not be opened, could not send, or dropped. Never holds a token."""


class PacketTooLargeError(RoomLinkError):
    """The packet exceeds what one reliable data packet carries; nothing was sent."""


@dataclass(frozen=True, slots=True)
class _Ended:
    error: RoomLinkError | None


def encode(packet: Mapping[str, Any], limit: int = MAX_PACKET_BYTES) -> bytes:
    """The packet as UTF-8 JSON (not \\u-escaped: 2,000 characters of text must fit)."""
    data = json.dumps(packet, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > limit:
        raise PacketTooLargeError(f"the packet is {len(data)} bytes; the link carries {limit}")
    return data


class RoomLink(ABC):
    """One session's link: connect once, send commands, read packets, close.

    `packets()` has one reader. It ends after `close()`; when the room drops the link or the
    session ends remotely, it raises RoomLinkError after the packets received before.
    """

    def __init__(self) -> None:
        self._inbox: asyncio.Queue[Packet | _Ended] = asyncio.Queue()
        self._ended = False

    @abstractmethod
    async def connect(self, url: str, token: SecretStr | None) -> None:
        """Join the room at `url` with the agent token (None: the URL carries its own
        authorisation, as LITE's ws_url); RoomLinkError when refused."""

    @abstractmethod
    async def send(self, packet: Mapping[str, Any]) -> None:
        """Publish a command reliably on agent-control; RoomLinkError when the link is down."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the room; `packets()` then ends. Safe to call more than once."""

    async def packets(self) -> AsyncIterator[Packet]:
        while True:
            item = await self._inbox.get()
            if isinstance(item, _Ended):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _received(self, data: bytes | str) -> None:
        """A packet on agent-response; what is not a JSON object is logged and skipped."""
        try:
            packet = json.loads(data)
        except ValueError:
            packet = None
        if not isinstance(packet, dict):
            log.warning("room packet is not a JSON object; skipped (%d bytes)", len(data))
            return
        self._inbox.put_nowait(packet)

    def _end(self, error: RoomLinkError | None) -> None:
        """The link is over: by `close()` (None) or by the room (the error). Only the first
        end counts."""
        if not self._ended:
            self._ended = True
            self._inbox.put_nowait(_Ended(error))


def is_room_stand_in(livekit_url: str, api_base_url: str) -> bool:
    """The room is the simulator's stand-in: a ws:// or wss:// URL on the REST API's own host
    and port. LiveAvatar's rooms are LiveKit servers on hosts of their own, so this never picks
    the stand-in for the real service, and needs no setting of its own."""
    room, api = URL(livekit_url), URL(api_base_url)
    return room.scheme in ("ws", "wss") and (room.host, room.port) == (api.host, api.port)
