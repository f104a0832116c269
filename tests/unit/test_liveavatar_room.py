"""The room links: LiveKit's against a fake rtc.Room (topics, reliability, packet shapes,
disconnects), the WebSocket stand-in against the simulator, the rule that picks one, and the
packets both carry."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import httpx
import pytest
from livekit import rtc
from pydantic import SecretStr

from simulator.liveavatar import LiveAvatarSettings
from simulator.server import RunningSimulator, running_simulator
from worker.providers.base import (
    AvatarTranscription,
    RemoteStopped,
    SpeechEnded,
    SpeechStarted,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)
from worker.providers.liveavatar import packets
from worker.providers.liveavatar.livekit_link import LiveKitRoomLink
from worker.providers.liveavatar.room import (
    CONTROL_TOPIC,
    MAX_PACKET_BYTES,
    RESPONSE_TOPIC,
    Packet,
    PacketTooLargeError,
    RoomLink,
    RoomLinkError,
    is_room_stand_in,
)
from worker.providers.liveavatar.ws_link import WebSocketRoomLink

TOKEN = SecretStr("agent-token-9f3e")
URL = "wss://avatar.livekit.test"
SID = "0c5d7a3e-88f1-4b11-a1b0-2f9e4f6c9d10"


class FakeParticipant:
    def __init__(self) -> None:
        self.published: list[tuple[bytes | str, bool, str]] = []
        self.fail: Exception | None = None

    async def publish_data(
        self, payload: bytes | str, *, reliable: bool = True, topic: str = ""
    ) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append((payload, reliable, topic))


class FakeRoom:
    """rtc.Room's surface the link uses, with the SDK's event names and DataPacket shape."""

    def __init__(self, refuse: str | None = None) -> None:
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.participant = FakeParticipant()
        self.connected_with: tuple[str, str, rtc.RoomOptions] | None = None
        self.disconnects = 0
        self.refuse = refuse

    @property
    def local_participant(self) -> FakeParticipant:
        return self.participant

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for handler in self.handlers.get(event, []):
            handler(*args)

    async def connect(self, url: str, token: str, options: rtc.RoomOptions | None = None) -> None:
        if self.refuse is not None:
            raise rtc.ConnectError(self.refuse)
        assert options is not None
        self.connected_with = (url, token, options)

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.emit("disconnected", rtc.DisconnectReason.CLIENT_INITIATED)

    def receive(self, packet: Any, topic: str = RESPONSE_TOPIC) -> None:
        data = packet if isinstance(packet, bytes) else json.dumps(packet).encode()
        kind = rtc.DataPacketKind.KIND_RELIABLE
        self.emit(
            "data_received", rtc.DataPacket(data=data, kind=kind, participant=None, topic=topic)
        )


async def livekit_link(room: FakeRoom) -> LiveKitRoomLink:
    link = LiveKitRoomLink(lambda: room)
    await link.connect(URL, TOKEN)
    return link


async def take(link: RoomLink, count: int) -> list[Packet]:
    received: list[Packet] = []
    async with asyncio.timeout(3):
        async for packet in link.packets():
            received.append(packet)
            if len(received) == count:
                break
    return received


async def drain(link: RoomLink) -> tuple[list[Packet], BaseException | None]:
    """Every packet until the link ends, and the error it ended with (None: closed by us)."""
    received: list[Packet] = []
    try:
        async with asyncio.timeout(3):
            async for packet in link.packets():
                received.append(packet)
    except RoomLinkError as error:
        return received, error
    return received, None


async def test_joins_as_a_data_only_participant_with_the_agent_token() -> None:
    room = FakeRoom()
    await livekit_link(room)
    assert room.connected_with is not None
    url, token, options = room.connected_with
    assert (url, token) == (URL, TOKEN.get_secret_value())
    assert options.auto_subscribe is False


async def test_commands_are_reliable_json_packets_on_agent_control() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    await link.send(packets.speak(SID, "cmd-1", "hello there", "repeat"))
    await link.send(packets.speak(SID, "cmd-2", "what is new?", "talk"))
    await link.send(packets.interrupt(SID, "cmd-3"))
    sent = [
        (json.loads(payload), reliable, topic)
        for payload, reliable, topic in room.participant.published
    ]
    assert sent == [
        (
            {
                "event_id": "cmd-1",
                "event_type": "avatar.speak_text",
                "session_id": SID,
                "text": "hello there",
            },
            True,
            CONTROL_TOPIC,
        ),
        (
            {
                "event_id": "cmd-2",
                "event_type": "avatar.speak_response",
                "session_id": SID,
                "text": "what is new?",
            },
            True,
            CONTROL_TOPIC,
        ),
        (
            {"event_id": "cmd-3", "event_type": "avatar.interrupt", "session_id": SID},
            True,
            CONTROL_TOPIC,
        ),
    ]


async def test_packets_are_utf8_and_bounded_by_livekits_limit() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    text = "\N{WAVING HAND SIGN}" * 2000  # the longest speak, four bytes a character
    await link.send(packets.speak(SID, "cmd-1", text, "repeat"))
    [(payload, _, _)] = room.participant.published
    assert isinstance(payload, bytes)
    assert len(payload) <= MAX_PACKET_BYTES
    assert json.loads(payload)["text"] == text
    with pytest.raises(PacketTooLargeError):
        await link.send(packets.speak(SID, "cmd-2", "x" * MAX_PACKET_BYTES, "repeat"))
    assert len(room.participant.published) == 1


async def test_only_agent_response_packets_that_are_json_objects_come_out() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    room.receive({"event_type": "avatar.speak_started", "source_event_id": "cmd-1"})
    room.receive({"event_type": "avatar.speak_text", "text": "echo"}, topic=CONTROL_TOPIC)
    room.receive(b"not json")
    room.receive([1, 2, 3])
    room.receive({"event_type": "avatar.speak_ended", "source_event_id": "cmd-1"})
    received = await take(link, 2)
    assert [p["event_type"] for p in received] == ["avatar.speak_started", "avatar.speak_ended"]


async def test_a_remote_disconnect_ends_the_packets_with_an_error_after_those_received() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    room.receive({"event_type": "user.speak_started"})
    room.emit("disconnected", rtc.DisconnectReason.ROOM_DELETED)
    received, error = await drain(link)
    assert "ROOM_DELETED" in str(error)
    assert [p["event_type"] for p in received] == ["user.speak_started"]
    with pytest.raises(RoomLinkError):
        await link.send(packets.interrupt(SID, "late"))


async def test_close_leaves_the_room_and_ends_the_packets_quietly() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    await link.close()
    await link.close()
    assert room.disconnects == 1
    assert await drain(link) == ([], None)


async def test_a_refused_join_is_a_room_link_error_without_the_token() -> None:
    room = FakeRoom(refuse=f"invalid token {TOKEN.get_secret_value()}")
    link = LiveKitRoomLink(lambda: room)
    with pytest.raises(RoomLinkError) as raised:
        await link.connect(URL, TOKEN)
    assert TOKEN.get_secret_value() not in str(raised.value)
    with pytest.raises(RoomLinkError):
        await link.send(packets.interrupt(SID, "x"))


async def test_a_failed_publish_is_a_room_link_error() -> None:
    room = FakeRoom()
    link = await livekit_link(room)
    room.participant.fail = RuntimeError("engine is closed")
    with pytest.raises(RoomLinkError, match="engine is closed"):
        await link.send(packets.interrupt(SID, "x"))


async def test_the_sdks_own_refusal_is_a_room_link_error_without_the_token() -> None:
    # The real rtc.Room, against a port nothing listens on: no LiveKit server runs here.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = LiveKitRoomLink()
    with pytest.raises(RoomLinkError) as raised:
        await link.connect(f"ws://127.0.0.1:{port}", TOKEN)
    assert TOKEN.get_secret_value() not in str(raised.value)
    await link.close()


@pytest.mark.parametrize(
    ("livekit_url", "api", "stand_in"),
    [
        ("ws://127.0.0.1:8090/liveavatar-room", "http://127.0.0.1:8090", True),
        ("wss://sim.internal/liveavatar-room", "https://sim.internal", True),
        ("wss://heygen-abc.livekit.cloud", "https://api.liveavatar.com", False),
        ("ws://127.0.0.1:9000/liveavatar-room", "http://127.0.0.1:8090", False),
        ("https://127.0.0.1:8090", "http://127.0.0.1:8090", False),
    ],
)
def test_the_stand_in_is_a_room_on_the_apis_own_host_and_port(
    livekit_url: str, api: str, stand_in: bool
) -> None:
    assert is_room_stand_in(livekit_url, api) is stand_in


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        ({"event_type": "avatar.speak_started", "source_event_id": "c1"}, SpeechStarted(SID, "c1")),
        ({"event_type": "avatar.speak_ended", "source_event_id": "c1"}, SpeechEnded(SID, "c1")),
        ({"event_type": "avatar.speak_ended"}, SpeechEnded(SID, None)),
        ({"event_type": "user.speak_started"}, UserSpeechStarted(SID)),
        ({"event_type": "user.speak_ended"}, UserSpeechEnded(SID)),
        ({"event_type": "user.transcription", "text": "hi"}, UserTranscription(SID, "hi")),
        (
            {"event_type": "avatar.transcription", "text": "hello"},
            AvatarTranscription(SID, "hello"),
        ),
        (
            {"event_type": "session.stopped", "end_reason": "NO_CREDITS"},
            RemoteStopped(SID, "NO_CREDITS"),
        ),
        ({"event_type": "session.stopped"}, RemoteStopped(SID, "UNKNOWN")),
        ({"event_type": "user.transcription"}, None),
        ({"event_type": "avatar.thinking"}, None),
    ],
)
def test_packets_become_observed_events(packet: Packet, expected: object) -> None:
    assert packets.observed(packet, SID) == expected


# --- the WebSocket stand-in against the simulator ---------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    settings = LiveAvatarSettings(speak_start_delay_s=0, sweep_interval_s=0.05)
    async with running_simulator(liveavatar=settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def start_session(sim: RunningSimulator) -> dict[str, Any]:
    body = {"avatar_id": "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a", "avatar_persona": {}}
    async with httpx.AsyncClient(base_url=sim.base_url, headers={"X-API-KEY": "k"}) as api:
        token = (await api.post("/v1/sessions/token", json=body)).json()["data"]
        bearer = {"Authorization": f"Bearer {token['session_token']}"}
        started: dict[str, Any] = (await api.post("/v1/sessions/start", headers=bearer)).json()[
            "data"
        ]
    assert is_room_stand_in(started["livekit_url"], sim.base_url)
    return started


async def ws_link(http: aiohttp.ClientSession, started: dict[str, Any]) -> WebSocketRoomLink:
    link = WebSocketRoomLink(http)
    await link.connect(started["livekit_url"], SecretStr(started["livekit_agent_token"]))
    return link


async def test_the_stand_in_carries_the_same_packets(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    started = await start_session(sim)
    link = await ws_link(http, started)
    await link.send(packets.speak(started["session_id"], "cmd-9", "two words", "repeat"))
    first, second, third = await take(link, 3)
    assert (first["event_type"], first["source_event_id"]) == ("avatar.speak_started", "cmd-9")
    assert first["session_id"] == started["session_id"]
    assert second == {**second, "event_type": "avatar.transcription", "text": "two words"}
    assert (third["event_type"], third["source_event_id"]) == ("avatar.speak_ended", "cmd-9")
    await link.close()
    assert await drain(link) == ([], None)


async def test_a_dropped_stand_in_socket_is_a_room_link_error(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    started = await start_session(sim)
    link = await ws_link(http, started)
    await sim.admin.drop_room(started["session_id"])
    with pytest.raises(RoomLinkError):
        await take(link, 1)
    with pytest.raises(RoomLinkError):
        await link.send(packets.interrupt(started["session_id"], "x"))


async def test_a_session_ended_remotely_says_so_then_ends_the_link(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    started = await start_session(sim)
    link = await ws_link(http, started)
    await sim.admin.end_session(started["session_id"], "AVATAR_DELETED")
    received, error = await drain(link)
    assert isinstance(error, RoomLinkError)
    assert received == [
        {**received[0], "event_type": "session.stopped", "end_reason": "AVATAR_DELETED"}
    ]


async def test_a_refused_stand_in_join_is_a_room_link_error(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    started = await start_session(sim)
    link = WebSocketRoomLink(http)
    with pytest.raises(RoomLinkError, match="401"):
        await link.connect(started["livekit_url"], SecretStr("forged"))
