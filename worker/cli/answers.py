"""Which event answers a command, and waiting for it on an event subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aio_pika.abc import AbstractChannel

from contracts.client import publish_command
from contracts.commands import CommandBase, SessionCreate, SessionSpeak
from contracts.events import Event
from worker.cli.errors import CliError, ExitCode

PUBLISH_TIMEOUT_S = 10.0

FAILURES = frozenset({"command.rejected", "command.failed"})

# The event after which a command has nothing more to say (besides the failures).
_DONE: dict[str, str] = {
    "session.start": "session.ready",
    "session.ice": "command.completed",
    "session.interrupt": "speech.interrupted",
    "session.stop": "session.stopped",
    "session.keepalive": "command.completed",
    "session.speak_audio": "command.completed",
    "sessions.list": "sessions.listed",
}


def terminal_types(command: CommandBase) -> frozenset[str]:
    """Event types that end the wait for `command`'s answer."""
    if isinstance(command, SessionCreate):
        # v1 stops at the SDP offer: the client answers it with session.start.
        done = "session.created" if command.version == "v1" else "session.ready"
    elif isinstance(command, SessionSpeak):
        # Async speech is answered once HeyGen accepted it; sync speech once it ended.
        done = "speech.finished" if command.task_mode == "sync" else "speech.started"
    else:
        done = _DONE[command.type]
    return FAILURES | {done}


async def _first_answer(
    events: AsyncIterator[Event],
    command: CommandBase,
    on_event: Callable[[Event], None],
) -> Event:
    """Feed every event to `on_event` until the command's terminal event, and return it.

    The caller bounds the wait (asyncio.timeout); events of other commands pass through
    `on_event` too, so a caller following a whole session sees them as they arrive.
    """
    terminal = terminal_types(command)
    async for event in events:
        on_event(event)
        if event.causation_id == command.command_id and event.type in terminal:
            return event
    raise CliError("the event subscription ended before the answer arrived")


def session_of(command: CommandBase) -> str | None:
    """The command's session (sessions.list has none)."""
    session_id: str | None = getattr(command, "session_id", None)
    return session_id


def is_failure(event: Event) -> bool:
    return event.type in FAILURES


async def send_and_wait(
    channel: AbstractChannel,
    events: AsyncIterator[Event],
    command: CommandBase,
    *,
    wait: float,
    on_event: Callable[[Event], None],
) -> Event:
    """Publish `command` (subscribe first!) and return its terminal event within `wait` s."""
    await send(channel, command)
    return await await_answer(events, command, wait=wait, on_event=on_event)


async def await_answer(
    events: AsyncIterator[Event],
    command: CommandBase,
    *,
    wait: float,
    on_event: Callable[[Event], None],
) -> Event:
    """The command's terminal event; CliError with ExitCode.TIMEOUT after `wait` s."""
    try:
        async with asyncio.timeout(wait):
            return await _first_answer(events, command, on_event)
    except TimeoutError:
        raise CliError(
            f"no answer to {command.type} {command.command_id} within {wait:g} s "
            "(is a worker running? `heygen-worker run`)",
            ExitCode.TIMEOUT,
        ) from None


async def send(channel: AbstractChannel, command: CommandBase) -> None:
    """Publish with a bounded wait for the broker's confirm."""
    try:
        await publish_command(channel, command, timeout=PUBLISH_TIMEOUT_S)
    except TimeoutError:
        raise CliError(
            f"the broker did not confirm {command.type} {command.command_id} within "
            f"{PUBLISH_TIMEOUT_S:g} s; it may still arrive: resend it with --command-id "
            f"{command.command_id} so the worker runs it at most once",
            ExitCode.UNAVAILABLE,
        ) from None
