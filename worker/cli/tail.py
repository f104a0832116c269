"""`heygen-worker events`: print events as JSON lines as they are published."""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
from typing import TextIO

from contracts.client import subscribe_events
from contracts.events import EVENT_TYPES
from contracts.topology import event_binding_keys
from worker.cli.broker import connect
from worker.cli.errors import CliError, ExitCode
from worker.cli.output import event_json, note, write_line


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "events",
        parents=[common],
        help="tail events (JSON lines) until Ctrl-C",
        description="Print events from avatar.events, one JSON object per line, until Ctrl-C, "
        "--count events or --timeout seconds.",
    )
    parser.add_argument("--session", help="only events of this session")
    parser.add_argument(
        "--type",
        action="append",
        metavar="PATTERN",
        help="only these event types; shell-style patterns such as 'speech.*' (repeatable)",
    )
    parser.add_argument("--count", type=int, metavar="N", help="stop after N events")
    parser.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    parser.set_defaults(handler=run_events)


def expand_types(patterns: list[str] | None) -> list[str] | None:
    """The event types matching any pattern (None: all types, bound as one `#` binding)."""
    if not patterns:
        return None
    types = [t for t in EVENT_TYPES if any(fnmatch.fnmatchcase(t, p) for p in patterns)]
    if not types:
        raise CliError(
            f"--type {' '.join(patterns)} matches no event type; known: {', '.join(EVENT_TYPES)}",
            ExitCode.USAGE,
        )
    return types


async def run_events(args: argparse.Namespace, out: TextIO) -> int:
    types = expand_types(args.type)
    if args.count is not None and args.count < 1:
        raise CliError("--count must be at least 1", ExitCode.USAGE)
    try:
        event_binding_keys(session_id=args.session, types=types)
    except ValueError as exc:  # an invalid session id, before connecting
        raise CliError(str(exc), ExitCode.USAGE) from None
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        channel = await connection.channel()
        async with subscribe_events(channel, session_id=args.session, types=types) as events:
            note("listening for events (Ctrl-C to stop)")
            seen = 0
            try:
                async with asyncio.timeout(args.timeout):
                    async for event in events:
                        write_line(out, event_json(event))
                        seen += 1
                        if seen == args.count:
                            break
            except TimeoutError:
                pass  # --timeout is how a bounded tail ends, not a failure
    return ExitCode.OK
