"""`heygen-worker demo`: a scripted conversation against a running worker, printed as it happens."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TextIO

from aio_pika.abc import AbstractChannel
from pydantic import ValidationError

from contracts.client import subscribe_events
from contracts.commands import (
    CommandBase,
    SessionCreate,
    SessionInterrupt,
    SessionSpeak,
    SessionStop,
)
from contracts.common import Provider, TaskMode, new_id
from contracts.events import Event, SessionStopped
from worker.cli.answers import is_failure, send_and_wait
from worker.cli.broker import connect
from worker.cli.demo_liveavatar import DEFAULT_AVATAR as LIVEAVATAR_AVATAR
from worker.cli.demo_liveavatar import converse_liveavatar
from worker.cli.errors import CliError, ExitCode
from worker.cli.output import event_line, note, write_line
from worker.cli.publish import DEFAULT_AVATAR, DEFAULT_WAIT_S

# The worker's bundled simulator (SIMULATOR_PORT's default), which plays the LiveAvatar end user.
DEFAULT_SIMULATOR_URL = "http://127.0.0.1:8090"
GREETING = "Hello! I am a streaming avatar, driven through RabbitMQ."
SYNC_LINE = "This sentence is spoken in sync mode."
LONG_LINE = (
    "Now a long story that will not reach its end, because the demo interrupts it "
    "a moment after it starts, to show that an interrupt does not wait behind speech."
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run a scripted conversation against a running worker",
        description="Create a session, speak three times (once in sync mode), interrupt the "
        "last speech, stop, and print each event as it arrives. With --provider liveavatar: "
        "speak with observed start and end, let the simulator play the end user, answer with "
        "a speak built from the transcription, interrupt, stop with the credits used. Exit "
        "status: 0 when every step succeeded, 1 if one was rejected or failed, 4 if one got "
        "no answer in time.",
    )
    parser.add_argument("--session", help="session id (default: demo-<random>)")
    parser.add_argument(
        "--provider",
        choices=[p.value for p in Provider],
        default=Provider.HEYGEN.value,
        help="heygen (the legacy Streaming API) or liveavatar (FULL mode: observed speech, "
        "the end user's words answered)",
    )
    parser.add_argument(
        "--mode",
        choices=["full", "lite"],
        default="full",
        help="liveavatar: full (LiveAvatar's voice) or lite (your own audio: the demo streams a "
        "generated tone into session.speak_audio)",
    )
    parser.add_argument(
        "--avatar", help=f"avatar id (heygen: {DEFAULT_AVATAR}; liveavatar: the simulator's)"
    )
    parser.add_argument(
        "--simulator",
        default=DEFAULT_SIMULATOR_URL,
        metavar="URL",
        help="liveavatar: the simulator that plays the end user (default %(default)s, the "
        "worker's bundled one)",
    )
    parser.add_argument(
        "--wait", type=float, default=DEFAULT_WAIT_S, metavar="S", help="wait S s per step (15)"
    )
    parser.set_defaults(handler=run_demo)


Step = tuple[str, Callable[[], CommandBase]]


def script(session_id: str, avatar_id: str) -> list[Step]:
    """The conversation; commands are built when sent, so sent_at is accurate."""

    def speak(text: str, mode: TaskMode) -> Callable[[], CommandBase]:
        return lambda: SessionSpeak(session_id=session_id, text=text, task_mode=mode)

    return [
        (
            f"create session {session_id} (avatar {avatar_id})",
            lambda: SessionCreate(session_id=session_id, avatar_id=avatar_id),
        ),
        (f"speak async: {GREETING!r}", speak(GREETING, TaskMode.ASYNC)),
        (f"speak sync: {SYNC_LINE!r}", speak(SYNC_LINE, TaskMode.SYNC)),
        (f"speak async: {LONG_LINE[:40]!r}...", speak(LONG_LINE, TaskMode.ASYNC)),
        ("interrupt the speech", lambda: SessionInterrupt(session_id=session_id)),
        ("stop", lambda: SessionStop(session_id=session_id, reason="demo finished")),
    ]


class Transcript:
    """Prints every event of the session as it arrives and keeps what the summary needs."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.types: Counter[str] = Counter()
        self.stopped: SessionStopped | None = None

    def show(self, event: Event) -> None:
        self.types[event.type] += 1
        if isinstance(event, SessionStopped):
            self.stopped = event
        write_line(self.out, event_line(event))

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        counts = ", ".join(f"{n} {t}" for t, n in self.types.items())
        line = f"summary: {self.types.total()} events in {elapsed:.1f} s ({counts})"
        if self.stopped is not None:
            u = self.stopped.usage
            credits = u.credits_estimate if u.credits is None else u.credits
            line += (
                f"; usage: {u.billed_seconds:g} billed seconds, {credits:g} credits "
                f"({u.credits_source}), {u.tasks} speech tasks, {u.characters} characters"
            )
        return line


async def run_demo(args: argparse.Namespace, out: TextIO) -> int:
    session_id = args.session or f"demo-{new_id()[:8]}"
    liveavatar = args.provider == Provider.LIVEAVATAR.value
    avatar = args.avatar or (LIVEAVATAR_AVATAR if liveavatar else DEFAULT_AVATAR)
    steps = script(session_id, avatar)
    try:
        steps[0][1]()  # bad ids are usage errors, reported before connecting
    except ValidationError as exc:
        raise CliError(f"invalid demo session: {exc.errors()[0]['msg']}", ExitCode.USAGE) from None
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        channel = await connection.channel()
        async with subscribe_events(channel, session_id=session_id) as events:
            transcript = Transcript(out)
            if liveavatar:
                code = await converse_liveavatar(
                    channel,
                    events,
                    transcript.show,
                    session_id=session_id,
                    avatar_id=avatar,
                    simulator_url=args.simulator,
                    wait=args.wait,
                    out_line=partial(write_line, out),
                    lite=args.mode == "lite",
                )
            else:
                code = await _converse(channel, events, steps, transcript, args.wait)
                if code is not ExitCode.OK and transcript.types["session.created"]:
                    await _clean_up(channel, events, session_id, transcript, args.wait)
    write_line(out, transcript.summary())
    return code


async def _converse(
    channel: AbstractChannel,
    events: AsyncIterator[Event],
    steps: list[Step],
    transcript: Transcript,
    wait: float,
) -> ExitCode:
    for label, build in steps:
        write_line(transcript.out, f"> {label}")
        try:
            answer = await send_and_wait(
                channel, events, build(), wait=wait, on_event=transcript.show
            )
        except CliError as exc:
            if exc.code is not ExitCode.TIMEOUT:
                raise
            note(f"demo step failed: {exc}")
            return ExitCode.TIMEOUT
        if is_failure(answer):
            note(f"demo step failed: {answer.type}")
            return ExitCode.FAILED
    return ExitCode.OK


async def _clean_up(
    channel: AbstractChannel,
    events: AsyncIterator[Event],
    session_id: str,
    transcript: Transcript,
    wait: float,
) -> None:
    """A failed demo should not leave a billed session behind."""
    if transcript.stopped is not None:
        return
    write_line(transcript.out, "> stop (clean-up after the failure)")
    stop = SessionStop(session_id=session_id, reason="demo failed")
    try:
        await send_and_wait(channel, events, stop, wait=wait, on_event=transcript.show)
    except CliError as exc:
        note(f"clean-up stop failed: {exc}")
