"""Observer: what a provider observes becomes the right bus events, in order per session, and a
remote end stops or replaces the session as its end reason says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from contracts.codec import AmqpEnvelope, decode_event
from contracts.commands import SessionCreate, SessionSpeak
from contracts.common import SessionState, StopReason
from contracts.events import Event, SessionStopped
from worker.events import EventEmitter
from worker.handlers.context import Policy, Services
from worker.observability.metrics import Metrics
from worker.observer import Observer
from worker.providers import base
from worker.sessions.registry import Registry
from worker.sessions.session import Session, SpeechWait


class Published:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish_event(self, envelope: AmqpEnvelope, routing_key: str) -> None:
        self.events.append(decode_event(envelope.body))

    async def publish_reply(self, envelope: AmqpEnvelope, reply_to: str) -> None:
        raise AssertionError("no replies here")


class Observing(base.Provider):
    """Observes what the test puts in; calls nothing but stop (recorded)."""

    name = "liveavatar"
    observes_speech = True

    def __init__(self) -> None:
        self.queue: asyncio.Queue[base.Observed] = asyncio.Queue()
        self.stopped: list[str] = []

    async def observed(self) -> AsyncIterator[base.Observed]:
        while True:
            yield await self.queue.get()

    async def stop(
        self, provider_session_id: str, *, cause: base.StopCause = "requested", **_: object
    ) -> base.Stopped:
        self.stopped.append(provider_session_id)
        return base.Stopped()

    async def create(self, profile: base.SessionProfile, **_: object) -> base.Created:
        raise NotImplementedError

    async def start(self, provider_session_id: str, **_: object) -> None:
        raise NotImplementedError

    async def speak(self, provider_session_id: str, text: str, **_: object) -> base.Spoken:
        raise NotImplementedError

    async def interrupt(self, provider_session_id: str, **_: object) -> None:
        raise NotImplementedError

    async def keep_alive(self, provider_session_id: str, **_: object) -> None:
        raise NotImplementedError

    async def list_live(self, **_: object) -> list[base.RemoteSession]:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


@pytest.fixture
def provider() -> Observing:
    return Observing()


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def services(provider: Observing, published: Published) -> Services:
    services = Services(
        providers={"liveavatar": provider},
        registry=Registry(10),
        emitter=EventEmitter(published, "w"),
        policy=Policy(idle_timeout_s=60, max_duration_s=600, credits_per_minute=0.2),
        metrics=Metrics(CollectorRegistry()),
    )
    profile = SessionCreate(session_id="s1", avatar_id="a", provider="liveavatar")
    session = Session("s1", 0, None, profile, idle_timeout_s=60, max_duration_s=600)
    session.provider, session.heygen_session_id = "liveavatar", "la-1"
    session.resume = SecretStr("room")
    session.transition(SessionState.READY)
    services.registry.add(session)
    return services


async def observe(services: Services, provider: Observing, *items: base.Observed) -> None:
    """Feed the items through a running observer and let their work finish."""
    runner = asyncio.create_task(Observer(services).run())
    for item in items:
        provider.queue.put_nowait(item)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if provider.queue.empty() and not services.background:
            break
    runner.cancel()


async def test_the_end_users_words_are_published_in_order(
    services: Services, provider: Observing, published: Published
) -> None:
    await observe(
        services,
        provider,
        base.UserSpeechStarted("la-1"),
        base.UserSpeechEnded("la-1"),
        base.UserTranscription("la-1", "Where is my parcel?"),
        base.AvatarTranscription("la-1", "Tomorrow."),
        base.UserTranscription("somebody-else", "not ours"),
    )
    assert [e.type for e in published.events] == [
        "user.speech_started",
        "user.speech_ended",
        "user.transcription",
        "avatar.transcription",
    ]
    assert [e.seq for e in published.events] == [1, 2, 3, 4]
    assert all(e.session_id == "s1" and e.causation_id is None for e in published.events)
    assert getattr(published.events[2], "text", None) == "Where is my parcel?"


@pytest.mark.parametrize(
    ("end_reason", "reason"),
    [
        ("NO_CREDITS", StopReason.EXPIRED_REMOTELY),
        ("USER_CLOSED", StopReason.EXPIRED_REMOTELY),
        ("MAX_DURATION_REACHED", StopReason.MAX_DURATION),
        ("AVATAR_DELETED", StopReason.ERROR),
    ],
)
async def test_a_final_remote_end_stops_the_session_without_calling_the_provider(
    services: Services,
    provider: Observing,
    published: Published,
    end_reason: str,
    reason: StopReason,
) -> None:
    await observe(services, provider, base.RemoteStopped("la-1", end_reason))
    (stopped,) = published.events
    assert isinstance(stopped, SessionStopped)
    assert (stopped.reason, stopped.provider_end_reason) == (reason, end_reason)
    assert provider.stopped == []  # already ended on LiveAvatar's side
    assert services.registry.get("s1") is None


async def test_a_speech_start_wakes_the_speak_that_waits_for_it(
    services: Services, provider: Observing
) -> None:
    session = services.registry.get("s1")
    assert session is not None
    speak = SessionSpeak(session_id="s1", text="hi", command_id="c1")
    wait = session.speech_waits["c1"] = SpeechWait(speak)
    await observe(services, provider, base.SpeechStarted("la-1", "c2"))
    assert not wait.started.is_set()  # another speak's start
    await observe(services, provider, base.SpeechStarted("la-1", "c1"))
    assert wait.started.is_set()
