"""`heygen-worker publish ...`: build one command, publish it, print the events that answer it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

from aio_pika.abc import AbstractChannel, AbstractQueueIterator
from pydantic import ValidationError

from contracts.client import subscribe_events
from contracts.codec import DecodeError, decode_event
from contracts.commands import COMMAND_TYPES, CommandBase, SessionsList
from contracts.common import (
    Emotion,
    InteractivityType,
    LiveAvatarMode,
    Provider,
    Quality,
    SessionState,
    TaskMode,
    TaskType,
    VideoEncoding,
    new_id,
    utc_now,
)
from contracts.events import Event
from worker.cli.answers import await_answer, is_failure, send, session_of
from worker.cli.broker import connect
from worker.cli.errors import CliError, ExitCode
from worker.cli.output import event_json, note, write_line

DEFAULT_WAIT_S = 15.0
DEFAULT_AVATAR = "Wayne_20240711"

FieldBuilder = Callable[[argparse.Namespace], dict[str, Any]]


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    publish = subparsers.add_parser(
        "publish",
        help="publish one command and print the events that answer it",
        description="Publish a command to avatar.commands and print the events it causes, one "
        "JSON object per line, until its final event or --wait seconds. Exit status: 0 done, "
        "1 rejected or failed, 3 broker unavailable, 4 no answer in time.",
    )
    actions = publish.add_subparsers(dest="action", required=True, metavar="COMMAND")
    options = argparse.ArgumentParser(add_help=False, parents=[common])
    options.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_S,
        metavar="S",
        help="wait S s for the answer (15)",
    )
    options.add_argument("--command-id", help="reuse an id to resend a command idempotently")
    options.add_argument("--correlation-id", help="copied into every event the command causes")
    options.add_argument(
        "--deadline-in", type=float, metavar="S", help="the worker skips it if not run within S s"
    )
    session = argparse.ArgumentParser(add_help=False, parents=[options])
    session.add_argument("--session", required=True, help="the session's id")

    def action(
        name: str, parent: argparse.ArgumentParser, help_: str, fields: FieldBuilder
    ) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, parents=[parent], help=help_, description=help_)
        parser.set_defaults(fields=fields)
        return parser

    create = action("create", options, "create a session (session.create)", _create_fields)
    create.add_argument("--session", help="the session's id (generated when omitted)")
    create.add_argument("--avatar", default=DEFAULT_AVATAR, help="HeyGen avatar id")
    create.add_argument("--voice", help="HeyGen voice id")
    create.add_argument("--rate", type=float, help="speaking rate, 0.5 to 1.5")
    create.add_argument("--emotion", choices=[e.value for e in Emotion])
    create.add_argument("--quality", choices=[q.value for q in Quality])
    create.add_argument("--video-encoding", choices=[v.value for v in VideoEncoding])
    create.add_argument("--language", help="e.g. en")
    create.add_argument("--knowledge-base-id")
    create.add_argument("--activity-idle-timeout", type=int, metavar="S", help="HeyGen's own")
    create.add_argument("--idle-timeout", type=int, metavar="S", help="worker policy")
    create.add_argument("--max-duration", type=int, metavar="S", help="worker policy")
    create.add_argument("--v1", action="store_true", help="raw WebRTC (SDP) instead of LiveKit")
    create.add_argument(
        "--provider",
        choices=[p.value for p in Provider],
        help="heygen or liveavatar (default: the worker's WORKER_DEFAULT_PROVIDER)",
    )
    create.add_argument("--mode", choices=[m.value for m in LiveAvatarMode], help="liveavatar")
    create.add_argument("--sandbox", action="store_true", help="liveavatar: a sandbox session")
    create.add_argument(
        "--interactivity-type", choices=[i.value for i in InteractivityType], help="liveavatar"
    )
    create.add_argument("--context-id", help="liveavatar: the context the avatar answers from")

    start = action("start", session, "v1: send the SDP answer (session.start)", _start_fields)
    start.add_argument("--sdp-file", required=True, help="file with the SDP answer, - for stdin")

    ice = action("ice", session, "v1: trickle an ICE candidate (session.ice)", _ice_fields)
    ice.add_argument("--candidate", required=True, help="the candidate line")
    ice.add_argument("--sdp-mid")
    ice.add_argument("--sdp-mline-index", type=int)

    speak = action("speak", session, "make the avatar speak (session.speak)", _speak_fields)
    speak.add_argument("--text", required=True)
    speak.add_argument("--task-type", choices=[t.value for t in TaskType], default="repeat")
    speak.add_argument("--mode", choices=[m.value for m in TaskMode], default="async")

    action("interrupt", session, "cut the current speech (session.interrupt)", _session_fields)
    stop = action("stop", session, "stop the session (session.stop)", _stop_fields)
    stop.add_argument("--reason", help="free text recorded in session.stopped")
    action("keepalive", session, "send a keep-alive (session.keepalive)", _session_fields)

    listing = action("list", options, "list the worker's sessions (sessions.list)", _list_fields)
    listing.add_argument("--session", action="append", help="only this session (repeatable)")
    listing.add_argument(
        "--state", action="append", choices=[s.value for s in SessionState], help="repeatable"
    )
    publish.set_defaults(handler=run_publish)


async def run_publish(args: argparse.Namespace, out: TextIO) -> int:
    command = build_command(args)  # bad input is reported before connecting
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        channel = await connection.channel()  # publisher confirms on
        async with _answers(channel, command) as (command, events):
            await send(channel, command)
            note(
                f"published {command.type} {command.command_id}{_session_note(command)}; "
                f"waiting up to {args.wait:g} s for its answer"
            )

            def show(event: Event) -> None:
                if event.causation_id == command.command_id:
                    write_line(out, event_json(event))

            answer = await await_answer(events, command, wait=args.wait, on_event=show)
    return ExitCode.FAILED if is_failure(answer) else ExitCode.OK


@asynccontextmanager
async def _answers(
    channel: AbstractChannel, command: CommandBase
) -> AsyncIterator[tuple[CommandBase, AsyncIterator[Event]]]:
    """The command and where its answer arrives, subscribed before it is published."""
    if isinstance(command, SessionsList):
        # sessions.list answers only to reply_to: a private queue the broker names.
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        async with queue.iterator() as messages:
            yield command.model_copy(update={"reply_to": queue.name}), _replies(messages)
        return
    async with subscribe_events(channel, session_id=session_of(command)) as events:
        yield command, events


async def _replies(messages: AbstractQueueIterator) -> AsyncIterator[Event]:
    async for message in messages:
        await message.ack()
        try:
            yield decode_event(
                message.body, content_type=message.content_type, message_type=message.type
            )
        except DecodeError as exc:
            note(f"skipping an invalid reply: {exc}")


def build_command(args: argparse.Namespace) -> CommandBase:
    """The contracts model for `publish <action>`; invalid input is a usage error."""
    kind = "sessions.list" if args.action == "list" else f"session.{args.action}"
    fields: dict[str, Any] = {
        "command_id": args.command_id,
        "correlation_id": args.correlation_id,
        **args.fields(args),
    }
    if args.deadline_in is not None:
        fields["deadline"] = utc_now() + timedelta(seconds=args.deadline_in)
    try:
        return COMMAND_TYPES[kind].model_validate(
            {k: v for k, v in fields.items() if v is not None}
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'command'}: {e['msg']}" for e in exc.errors()
        )
        raise CliError(f"invalid {kind}: {problems}", ExitCode.USAGE) from None


def _session_note(command: CommandBase) -> str:
    session_id = session_of(command)
    return f" for session {session_id}" if session_id else ""


def _create_fields(args: argparse.Namespace) -> dict[str, Any]:
    voice = {"voice_id": args.voice, "rate": args.rate, "emotion": args.emotion}
    return {
        "session_id": args.session or new_id(),
        "avatar_id": args.avatar,
        "voice": {k: v for k, v in voice.items() if v is not None} or None,
        "quality": args.quality,
        "video_encoding": args.video_encoding,
        "version": "v1" if args.v1 else "v2",
        "language": args.language,
        "knowledge_base_id": args.knowledge_base_id,
        "activity_idle_timeout": args.activity_idle_timeout,
        "idle_timeout_s": args.idle_timeout,
        "max_duration_s": args.max_duration,
        "provider": args.provider,
        "mode": args.mode,
        "is_sandbox": True if args.sandbox else None,
        "interactivity_type": args.interactivity_type,
        "context_id": args.context_id,
    }


def _start_fields(args: argparse.Namespace) -> dict[str, Any]:
    try:
        sdp = sys.stdin.read() if args.sdp_file == "-" else Path(args.sdp_file).read_text()
    except OSError as exc:
        raise CliError(f"cannot read --sdp-file: {exc}", ExitCode.USAGE) from None
    return {"session_id": args.session, "sdp": {"type": "answer", "sdp": sdp}}


def _ice_fields(args: argparse.Namespace) -> dict[str, Any]:
    candidate = {
        "candidate": args.candidate,
        "sdpMid": args.sdp_mid,
        "sdpMLineIndex": args.sdp_mline_index,
    }
    return {
        "session_id": args.session,
        "candidate": {k: v for k, v in candidate.items() if v is not None},
    }


def _speak_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "session_id": args.session,
        "text": args.text,
        "task_type": args.task_type,
        "task_mode": args.mode,
    }


def _stop_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"session_id": args.session, "reason": args.reason}


def _session_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"session_id": args.session}


def _list_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {"filter": {"session_ids": args.session, "states": args.state}}
