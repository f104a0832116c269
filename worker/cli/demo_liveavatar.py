"""`heygen-worker demo --provider liveavatar`: a two-way conversation with a LiveAvatar FULL
session. The avatar's speech is observed (speech.started when it starts, speech.finished when
it ends), the end user's words come back as user.transcription, and the reply is built from
them. The end user is played by the simulator (its admin call injects an utterance)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
from aio_pika.abc import AbstractChannel

from contracts.commands import (
    CommandBase,
    SessionCreate,
    SessionInterrupt,
    SessionSpeak,
    SessionStop,
)
from contracts.common import Provider
from contracts.events import Event, SessionCreated, UserTranscription
from simulator.liveavatar import LiveAvatarAdmin
from worker.cli.answers import is_failure, send, send_and_wait
from worker.cli.demo_lite import speak_lite
from worker.cli.errors import CliError, ExitCode
from worker.cli.output import note

# The simulator's sandbox-free demo avatar: LiveAvatar's avatar ids are uuids.
DEFAULT_AVATAR = "2f5b3c6e-9a41-4f4f-8a55-6f2d1c0b7e11"
GREETING = "Hello! I am a LiveAvatar avatar, and I tell you when I really start and stop."
USER_SAYS = "Where is my parcel?"
LONG_LINE = (
    "Let me tell you a long story about parcels, which I will not finish, because the demo "
    "interrupts me a moment after I start, to show that an interrupt does not wait."
)


def reply_to(heard: str) -> str:
    return f"You asked: {heard} It left the depot this morning and arrives tomorrow."


class Conversation:
    """One LiveAvatar conversation; `show` prints and counts each event (the Transcript)."""

    def __init__(
        self,
        channel: AbstractChannel,
        events: AsyncIterator[Event],
        show: Callable[[Event], None],
        admin: LiveAvatarAdmin,
        wait: float,
    ) -> None:
        self._channel = channel
        self._events = events
        self._show = show
        self._admin = admin
        self._wait = wait
        self.created: SessionCreated | None = None

    def _seen(self, event: Event) -> None:
        if isinstance(event, SessionCreated):
            self.created = event
        self._show(event)

    async def step(
        self, label: str, command: CommandBase, out_line: Callable[[str], None]
    ) -> Event:
        out_line(f"> {label}")
        answer = await send_and_wait(
            self._channel, self._events, command, wait=self._wait, on_event=self._seen
        )
        if is_failure(answer):
            raise CliError(f"demo step failed: {answer.type}", ExitCode.FAILED)
        return answer

    async def until(self, what: str, match: Callable[[Event], bool]) -> Event:
        """The next event that matches, within the wait."""
        try:
            async with asyncio.timeout(self._wait):
                async for event in self._events:
                    self._seen(event)
                    if match(event):
                        return event
        except TimeoutError:
            pass
        raise CliError(f"no {what} within {self._wait:g} s", ExitCode.TIMEOUT)

    async def run(self, session_id: str, avatar_id: str, out_line: Callable[[str], None]) -> None:
        create = SessionCreate(
            session_id=session_id, avatar_id=avatar_id, provider=Provider.LIVEAVATAR
        )
        await self.step(f"create LiveAvatar session {session_id}", create, out_line)
        created = self.created
        assert created is not None  # it comes before session.ready

        greeting = SessionSpeak(session_id=session_id, text=GREETING)
        label = f"speak: {GREETING[:40]!r}... (answered when the avatar starts)"
        await self.step(label, greeting, out_line)
        await self.until("observed speech.finished", _finished(greeting))

        out_line(f"> the end user says {USER_SAYS!r} (simulator admin call)")
        try:
            await self._admin.inject_utterance(created.heygen_session_id, USER_SAYS)
        except httpx.HTTPError as exc:
            raise CliError(
                f"the simulator did not play the end user ({exc!r}): the worker must "
                "run with the bundled simulator standing in for LiveAvatar; name it with "
                "--simulator if it is not on port 8090"
            ) from None
        heard = await self.until("user.transcription", lambda e: isinstance(e, UserTranscription))
        assert isinstance(heard, UserTranscription)

        answer = SessionSpeak(session_id=session_id, text=reply_to(heard.text))
        await self.step("speak the reply built from the transcription", answer, out_line)
        await self.until("observed speech.finished", _finished(answer))

        story = SessionSpeak(session_id=session_id, text=LONG_LINE)
        await self.step(f"speak: {LONG_LINE[:40]!r}...", story, out_line)
        await self.step("interrupt the speech", SessionInterrupt(session_id=session_id), out_line)
        stop = SessionStop(session_id=session_id, reason="demo finished")
        await self.step("stop", stop, out_line)

    async def clean_up(self, session_id: str, out_line: Callable[[str], None]) -> None:
        out_line("> stop (clean-up after the failure)")
        try:
            await send(self._channel, SessionStop(session_id=session_id, reason="demo failed"))
        except CliError as exc:
            note(f"clean-up stop failed: {exc}")


def _finished(speak: SessionSpeak) -> Callable[[Event], bool]:
    return lambda e: e.type == "speech.finished" and e.causation_id == speak.command_id


async def converse_liveavatar(
    channel: AbstractChannel,
    events: AsyncIterator[Event],
    show: Callable[[Event], None],
    *,
    session_id: str,
    avatar_id: str,
    simulator_url: str,
    wait: float,
    out_line: Callable[[str], None],
    lite: bool = False,
) -> ExitCode:
    async with LiveAvatarAdmin(simulator_url) as admin:
        conversation = Conversation(channel, events, show, admin, wait)
        try:
            if lite:
                await speak_lite(conversation, session_id, avatar_id, out_line)
            else:
                await conversation.run(session_id, avatar_id, out_line)
        except CliError as exc:
            note(str(exc))
            await conversation.clean_up(session_id, out_line)
            return exc.code if exc.code in (ExitCode.TIMEOUT, ExitCode.FAILED) else ExitCode.FAILED
    return ExitCode.OK
