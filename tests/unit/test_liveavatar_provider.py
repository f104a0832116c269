"""LiveAvatarProvider against the simulator: create and join, speech observed and matched to
its command, the user's voice, interrupt, keep-alive, stop with credits, remote ends, a dropped
room, failed starts that must not keep billing, a takeover by another provider, no leaked token."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from pydantic import SecretStr

from simulator.liveavatar import LiveAvatarSettings
from simulator.server import RunningSimulator, running_simulator
from worker.providers.base import (
    AvatarTranscription,
    CapacityError,
    Created,
    InvalidRequestError,
    LinkLost,
    Observed,
    ProviderTimeoutError,
    RemoteStopped,
    ServerError,
    SessionClosedError,
    SessionProfile,
    SpeechEnded,
    SpeechStarted,
    UnsupportedError,
    UserSpeechEnded,
    UserSpeechStarted,
    UserTranscription,
)
from worker.providers.liveavatar import LiveAvatarClient, RoomLink, RoomLinkError, RoomLinks
from worker.providers.liveavatar.provider import LiveAvatarProvider
from worker.providers.retry import RetryPolicy

AVATAR = "dd73ea75-1218-4ef3-92ce-606d5f7fbc0a"
PROFILE = SessionProfile(avatar_id=AVATAR, voice_id="voice-1", language="en", quality="very_high")
KEY = "la-provider-key"


class Observer:
    """The provider's one observed() iterator, read with a timeout."""

    def __init__(self, provider: LiveAvatarProvider) -> None:
        self._events = aiter(provider.observed())

    async def next(self, within: float = 3.0) -> Observed:
        async with asyncio.timeout(within):
            return await anext(self._events)

    async def take(self, count: int) -> list[Observed]:
        return [await self.next() for _ in range(count)]

    async def nothing(self, within: float = 0.4) -> None:
        with pytest.raises(TimeoutError):
            await self.next(within)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    settings = LiveAvatarSettings(speak_start_delay_s=0, sweep_interval_s=0.05, api_keys=KEY)
    async with running_simulator(liveavatar=settings) as running:
        yield running


def new_provider(sim: RunningSimulator, **client: Any) -> LiveAvatarProvider:
    client.setdefault("retry", RetryPolicy(base_delay=0.01))
    return LiveAvatarProvider(LiveAvatarClient(SecretStr(KEY), sim.base_url, **client))


@pytest.fixture
async def provider(sim: RunningSimulator) -> AsyncIterator[LiveAvatarProvider]:
    async with new_provider(sim) as running:
        yield running


@pytest.fixture
def observer(provider: LiveAvatarProvider) -> Observer:
    return Observer(provider)


async def live(provider: LiveAvatarProvider) -> Created:
    created = await provider.create(PROFILE)
    await provider.start(created.provider_session_id, resume=created.resume)
    return created


async def test_create_answers_the_browsers_details_and_start_joins_the_room(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    created = await provider.create(PROFILE)
    browser = created.browser
    assert browser.livekit_url is not None
    assert browser.livekit_url.startswith("ws://")
    assert browser.livekit_client_token
    assert browser.max_session_duration == 3600
    assert created.resume is not None
    sid = created.provider_session_id
    stats = await sim.admin.liveavatar_stats()
    assert (stats.sessions[sid].status, stats.sessions[sid].room_sockets) == ("active", 0)
    await provider.start(sid, resume=created.resume)
    await provider.start(sid)  # joined already: nothing more
    stats = await sim.admin.liveavatar_stats()
    assert stats.sessions[sid].room_sockets == 1


async def test_speech_is_observed_and_matched_to_its_command(
    provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    spoken = await provider.speak(sid, "one two three", command_id="cmd-1", task_mode="sync")
    assert (spoken.task_id, spoken.ended) == ("cmd-1", False)
    assert await observer.take(3) == [
        SpeechStarted(sid, "cmd-1"),
        AvatarTranscription(sid, "one two three"),
        SpeechEnded(sid, "cmd-1"),
    ]
    await provider.speak(sid, "hello", command_id="cmd-2", task_type="talk")
    assert await observer.take(2) == [
        SpeechStarted(sid, "cmd-2"),
        AvatarTranscription(sid, "You said: hello"),
    ]


async def test_a_speak_too_long_for_one_packet_is_refused(provider: LiveAvatarProvider) -> None:
    sid = (await live(provider)).provider_session_id
    with pytest.raises(InvalidRequestError, match="bytes"):
        await provider.speak(sid, "word " * 4000, command_id="long")


async def test_interrupt_ends_the_speech_now(
    provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    await provider.speak(sid, "a long speech " * 30, command_id="long")
    await provider.speak(sid, "queued behind it", command_id="queued")
    assert (await observer.next()) == SpeechStarted(sid, "long")
    await observer.next()  # its transcription
    began = time.monotonic()
    await provider.interrupt(sid)
    assert await observer.next() == SpeechEnded(sid, "long")
    assert time.monotonic() - began < 1.0
    await observer.nothing()  # the queued speech was dropped


async def test_the_end_users_voice_is_observed(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    await sim.admin.inject_utterance(sid, "what is the weather", duration_s=0.1)
    assert await observer.take(3) == [
        UserSpeechStarted(sid),
        UserSpeechEnded(sid),
        UserTranscription(sid, "what is the weather"),
    ]


async def test_keep_alive_list_and_credits_over_rest(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    before = await provider.credits_left()
    assert before is not None
    sid = (await live(provider)).provider_session_id
    await provider.keep_alive(sid)
    assert (await sim.admin.liveavatar_stats()).sessions[sid].keep_alives == 1
    listed = await provider.list_live()
    assert [(r.provider_session_id, r.status) for r in listed] == [(sid, "active")]
    assert listed[0].created_at is not None
    assert await provider.credits_left() == before - 2


async def test_stop_reports_the_credits_and_is_not_observed_as_remote(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    stopped = await provider.stop(sid, cause="idle")
    assert stopped.credits_consumed == 2.0
    stats = await sim.admin.liveavatar_stats()
    assert (stats.sessions[sid].end_reason, stats.sessions[sid].room_sockets) == ("IDLE_TIMEOUT", 0)
    await observer.nothing()
    assert await provider.list_live() == []


async def test_a_remote_end_is_observed_with_its_reason(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    await sim.admin.end_session(sid, "NO_CREDITS")
    assert await observer.next() == RemoteStopped(sid, "NO_CREDITS")
    await observer.nothing()  # the room's socket closing after it is no LinkLost


async def test_credits_running_out_end_the_session(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    await sim.admin.configure_liveavatar(billing_period_s=0.2)
    await sim.admin.set_credits(3)
    sid = (await live(provider)).provider_session_id
    assert await observer.next() == RemoteStopped(sid, "NO_CREDITS")
    with pytest.raises(CapacityError):
        await provider.create(PROFILE)  # not even the minute held at start


async def test_a_dropped_room_is_observed_and_joined_again_on_the_next_speak(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    sid = (await live(provider)).provider_session_id
    await sim.admin.drop_room(sid)
    lost = await observer.next()
    assert isinstance(lost, LinkLost)
    assert lost.provider_session_id == sid
    await provider.speak(sid, "still here", command_id="after")
    assert await observer.next() == SpeechStarted(sid, "after")


async def test_another_provider_takes_the_session_over_with_the_resume(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    created = await live(provider)
    sid = created.provider_session_id
    async with new_provider(sim) as successor:
        watcher = Observer(successor)
        await successor.start(sid, resume=created.resume)
        await successor.speak(sid, "new owner", command_id="cmd-x")
        assert await watcher.next() == SpeechStarted(sid, "cmd-x")


async def test_a_start_whose_answer_is_lost_is_stopped(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    await sim.admin.add_liveavatar_fault("sessions.start", status=500, apply_first=True, count=1)
    with pytest.raises(ServerError):
        await provider.create(PROFILE)
    stats = await sim.admin.liveavatar_stats()
    [session] = stats.sessions.values()
    assert (session.status, session.end_reason) == ("ended", "SERVER_ERROR")
    assert stats.calls["sessions.start"] == 1  # never repeated


async def test_a_stalled_start_times_out_and_does_not_bill(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    await sim.admin.add_liveavatar_fault("sessions.start", hang_s=1.0, count=1)
    with pytest.raises(ProviderTimeoutError):
        await provider.create(PROFILE, deadline=time.monotonic() + 0.3)
    await asyncio.sleep(1.0)  # the stalled start now reaches a stopped session
    stats = await sim.admin.liveavatar_stats()
    [session] = stats.sessions.values()
    assert session.status == "ended"
    assert session.credits_consumed == 0


async def test_token_failures_are_not_repeated(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    await sim.admin.add_liveavatar_fault("sessions.token", status=503, count=1)
    with pytest.raises(ServerError):
        await provider.create(PROFILE)
    stats = await sim.admin.liveavatar_stats()
    assert (stats.calls["sessions.token"], stats.sessions) == (1, {})


@pytest.mark.parametrize(
    ("profile", "error"),
    [
        (SessionProfile(avatar_id=AVATAR, mode="LITE", language="en"), InvalidRequestError),
        (SessionProfile(avatar_id=AVATAR, voice_emotion="Friendly"), InvalidRequestError),
        (SessionProfile(avatar_id=AVATAR, version="v1"), InvalidRequestError),
    ],
)
async def test_what_liveavatar_cannot_honour_is_refused(
    provider: LiveAvatarProvider, profile: SessionProfile, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await provider.create(profile)


async def test_an_sdp_answer_is_refused(provider: LiveAvatarProvider) -> None:
    created = await provider.create(PROFILE)
    with pytest.raises(UnsupportedError):
        await provider.start(created.provider_session_id, resume=created.resume, sdp_answer="v=0")


async def test_close_ends_observed(sim: RunningSimulator) -> None:
    provider = new_provider(sim)
    observer = Observer(provider)
    await live(provider)
    await provider.aclose()
    with pytest.raises(StopAsyncIteration):
        await observer.next()


async def test_no_token_in_reprs_or_logs(
    sim: RunningSimulator,
    provider: LiveAvatarProvider,
    observer: Observer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    created = await live(provider)
    sid = created.provider_session_id
    await sim.admin.drop_room(sid)
    assert isinstance(await observer.next(), LinkLost)
    await provider.speak(sid, "hi", command_id="c")
    await provider.stop(sid)
    assert created.resume is not None
    agent_token = created.resume.get_secret_value()
    texts = [repr(created), repr(provider), caplog.text]
    for text in texts:
        assert KEY not in text
        assert agent_token not in text


async def test_more_rooms_than_a_default_connection_pool_holds(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    # Every joined room holds a connection: aiohttp's default pool of 100 would stall here.
    await sim.admin.configure_liveavatar(concurrency_limit=200)
    created = [await live(provider) for _ in range(105)]
    sid = created[-1].provider_session_id
    await provider.speak(sid, "the last one", command_id="last")
    assert await observer.next() == SpeechStarted(sid, "last")


async def test_a_refused_start_needs_no_stop(
    sim: RunningSimulator, provider: LiveAvatarProvider
) -> None:
    await sim.admin.set_credits(1)
    with pytest.raises(CapacityError):
        await provider.create(PROFILE)
    stats = await sim.admin.liveavatar_stats()
    assert "sessions.stop" not in stats.calls
    [session] = stats.sessions.values()
    assert session.status == "created"  # never live, never billed


class FakeLink(RoomLink):
    """A link that joins anything and drops when told."""

    async def connect(self, url: str, token: SecretStr | None) -> None:
        return None

    async def send(self, packet: Mapping[str, Any]) -> None:
        return None

    async def close(self) -> None:
        self._end(None)

    def drop(self) -> None:
        self._end(RoomLinkError("dropped"))


class FakeLinks(RoomLinks):
    def __init__(self) -> None:
        super().__init__("http://unused.invalid")
        self.made: list[FakeLink] = []

    def __call__(self, livekit_url: str) -> RoomLink:
        self.made.append(FakeLink())
        return self.made[-1]


async def test_a_drop_after_a_silent_remote_end_is_observed_as_the_end(
    sim: RunningSimulator,
) -> None:
    links = FakeLinks()
    client = LiveAvatarClient(SecretStr(KEY), sim.base_url)
    async with LiveAvatarProvider(client, links) as provider:
        observer = Observer(provider)
        sid = (await live(provider)).provider_session_id
        await sim.admin.end_session(sid, "AVATAR_DELETED")  # its session.stopped never arrives
        links.made[-1].drop()
        assert await observer.next() == RemoteStopped(sid, "AVATAR_DELETED")


async def test_joining_the_room_of_an_ended_session_says_it_is_closed(
    sim: RunningSimulator, provider: LiveAvatarProvider, observer: Observer
) -> None:
    created = await live(provider)
    sid = created.provider_session_id
    await sim.admin.drop_room(sid)
    assert isinstance(await observer.next(), LinkLost)
    await provider.client.stop(sid)  # ended behind the provider's back while the room was down
    with pytest.raises(SessionClosedError) as raised:
        await provider.speak(sid, "anyone there?", command_id="late")
    assert raised.value.closed


def test_lite_burns_half_the_credits_of_full(provider: LiveAvatarProvider) -> None:
    assert (provider.credit_rate("FULL"), provider.credit_rate("LITE")) == (2.0, 1.0)
