"""The room link over LiveKit's Python SDK: the worker joins the session's room as a data-only
participant with `livekit_agent_token` (nothing subscribed, nothing published but data).

Not run against LiveAvatar's servers from here (no LiveKit server runs on this machine): it is
tested against a fake room with the SDK's own method names and event shapes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from livekit import rtc
from pydantic import SecretStr

from worker.providers.liveavatar.room import (
    CONTROL_TOPIC,
    RESPONSE_TOPIC,
    RoomLink,
    RoomLinkError,
    encode,
)


class Participant(Protocol):
    def publish_data(
        self, payload: bytes | str, *, reliable: bool = ..., topic: str = ...
    ) -> Awaitable[None]: ...


class Room(Protocol):
    """What the link uses of `livekit.rtc.Room`."""

    @property
    def local_participant(self) -> Participant: ...

    def on(
        self, event: Literal["data_received", "disconnected"], callback: Callable[..., Any]
    ) -> Callable[..., Any]: ...

    async def connect(self, url: str, token: str, options: rtc.RoomOptions = ...) -> None: ...

    async def disconnect(self) -> None: ...


def _reason(reason: int) -> str:
    try:
        return rtc.DisconnectReason.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return str(reason)


class LiveKitRoomLink(RoomLink):
    def __init__(self, room_factory: Callable[[], Room] = rtc.Room) -> None:
        super().__init__()
        self._room_factory = room_factory
        self._room: Room | None = None
        self._closing = False

    async def connect(self, url: str, token: SecretStr | None) -> None:
        if token is None:
            raise RoomLinkError("a LiveKit room takes an agent token")
        room = self._room_factory()
        room.on("data_received", self._on_data)
        room.on("disconnected", self._on_disconnected)
        secret = token.get_secret_value()
        try:
            await room.connect(url, secret, rtc.RoomOptions(auto_subscribe=False))
        except Exception as exc:  # the SDK raises ConnectError and plain exceptions alike
            message = str(exc).replace(secret, "**********") if secret else str(exc)
            raise RoomLinkError(f"cannot join the room: {message}") from None
        self._room = room

    async def send(self, packet: Mapping[str, Any]) -> None:
        if self._room is None or self._ended:
            raise RoomLinkError("the room link is not connected")
        data = encode(packet)
        try:
            await self._room.local_participant.publish_data(
                data, reliable=True, topic=CONTROL_TOPIC
            )
        except Exception as exc:  # PublishDataError, or the SDK's RuntimeError when torn down
            raise RoomLinkError(f"cannot publish to the room: {exc}") from None

    async def close(self) -> None:
        self._closing = True
        room, self._room = self._room, None
        if room is not None:
            await room.disconnect()
        self._end(None)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic == RESPONSE_TOPIC:
            self._received(packet.data)

    def _on_disconnected(self, reason: int) -> None:
        # Also emitted by our own disconnect(): only a drop we did not ask for is an error.
        if not self._closing:
            self._end(RoomLinkError(f"disconnected from the room: {_reason(reason)}"))
