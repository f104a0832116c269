"""`heygen-worker dead-letters`: list, requeue and purge the commands in avatar.commands.dead."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from yarl import URL

from contracts.codec import PERSISTENT
from contracts.topology import COMMANDS_EXCHANGE, DEAD_LETTER_QUEUE
from worker.cli.broker import connect
from worker.cli.errors import CliError, ExitCode
from worker.cli.output import note, write_line

GET_TIMEOUT_S = 5.0
PUBLISH_TIMEOUT_S = 10.0
BODY_PREVIEW_CHARS = 200

# Written by the worker when it dead-letters a command (worker/bus/consumer.py).
WORKER_HEADERS = (
    "x-dead-letter-reason",
    "x-dead-letter-detail",
    "x-original-queue",
    "x-original-routing-key",
    "x-dead-lettered-by",
)
# Written by the broker (delivery limit reached); a requeued command starts afresh without them.
BROKER_HEADERS = (
    "x-death",
    "x-first-death-reason",
    "x-first-death-queue",
    "x-first-death-exchange",
    "x-last-death-reason",
    "x-last-death-queue",
    "x-last-death-exchange",
    "x-delivery-count",
)


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    parser = subparsers.add_parser(
        "dead-letters",
        help="list, requeue or purge dead-lettered commands",
        description=f"Inspect and repair {DEAD_LETTER_QUEUE}: poison commands the worker set "
        "aside, and commands past the delivery limit.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="print dead-lettered commands with their reasons (JSON lines); they stay queued",
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.set_defaults(handler=run_list)
    requeue = actions.add_parser(
        "requeue",
        parents=[common],
        help="publish dead-lettered commands to avatar.commands again (after a fix)",
        description="Republish to avatar.commands with publisher confirms; each message leaves "
        "the dead-letter queue only once the broker confirmed its copy.",
    )
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every dead-lettered command")
    which.add_argument("--message-id", action="append", help="this command only (repeatable)")
    requeue.set_defaults(handler=run_requeue)
    purge = actions.add_parser("purge", parents=[common], help="delete every dead-lettered command")
    purge.add_argument("--yes", action="store_true", help="confirm the deletion")
    purge.set_defaults(handler=run_purge)


class Held:
    """Messages taken with basic.get and not settled yet; the rest go back at the end."""

    def __init__(self) -> None:
        self.messages: list[AbstractIncomingMessage] = []
        self.settled: set[int] = set()
        self.queued = 0


@asynccontextmanager
async def held_dead_letters(channel: AbstractChannel, limit: int | None) -> AsyncIterator[Held]:
    """Take up to `limit` of the messages queued now; requeue the unsettled ones on exit.

    The count is read first so that commands dead-lettered again meanwhile are not seen twice.
    """
    queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
    held = Held()
    held.queued = queue.declaration_result.message_count or 0
    try:
        wanted = held.queued if limit is None else min(limit, held.queued)
        while len(held.messages) < wanted:
            message = await queue.get(no_ack=False, fail=False, timeout=GET_TIMEOUT_S)
            if message is None:
                break
            held.messages.append(message)
        yield held
    finally:
        for index, message in enumerate(held.messages):
            if index not in held.settled and not channel.is_closed:
                await message.nack(requeue=True)


async def run_list(args: argparse.Namespace, out: TextIO) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1", ExitCode.USAGE)
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        # A fresh channel: aio-pika caches declarations (and their counts) per channel.
        channel = await connection.channel(publisher_confirms=False)
        async with held_dead_letters(channel, args.limit) as held:
            for message in held.messages:
                write_line(out, json.dumps(describe(message), default=str))
    note(f"{len(held.messages)} of {held.queued} dead-lettered commands shown")
    return ExitCode.OK


async def run_requeue(args: argparse.Namespace, out: TextIO) -> int:
    wanted = set(args.message_id or ())
    login = URL(args.amqp_url).user
    requeued = skipped = 0
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        getter = await connection.channel(publisher_confirms=False)
        publisher = await connection.channel(publisher_confirms=True)
        exchange = await publisher.get_exchange(COMMANDS_EXCHANGE, ensure=True)
        async with held_dead_letters(getter, None) as held:
            for index, message in enumerate(held.messages):
                if not args.all and message.message_id not in wanted:
                    continue
                key = routing_key(message)
                if key is None:
                    note(f"kept {message.message_id}: no routing key and no session_id in it")
                    skipped += 1
                    continue
                if not await _republish(exchange, message, key, login):
                    skipped += 1
                    continue
                await message.ack()  # only now: the copy is confirmed
                held.settled.add(index)
                requeued += 1
                summary = describe(message)
                line = {"requeued": message.message_id, "type": summary["type"], "routing_key": key}
                write_line(out, json.dumps(line))
    missing = wanted - {m.message_id for m in held.messages}
    for message_id in sorted(missing):
        note(f"no dead-lettered command with message id {message_id}")
    note(f"requeued {requeued}, kept {skipped} that could not be requeued")
    return ExitCode.FAILED if skipped or missing else ExitCode.OK


async def run_purge(args: argparse.Namespace, out: TextIO) -> int:
    async with connect(args.amqp_url, args.connect_timeout) as connection:
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        count = queue.declaration_result.message_count or 0
        if not args.yes:
            raise CliError(
                f"this deletes {count} dead-lettered commands; add --yes to confirm",
                ExitCode.USAGE,
            )
        purged = await queue.purge()
    write_line(out, json.dumps({"purged": purged.message_count}))
    return ExitCode.OK


async def _republish(
    exchange: AbstractExchange, message: AbstractIncomingMessage, key: str, login: str | None
) -> bool:
    headers = {
        k: v
        for k, v in (message.headers or {}).items()
        if k not in WORKER_HEADERS and k not in BROKER_HEADERS
    }
    # The broker refuses a user_id other than the connection's own: keep it only if it is ours.
    user_id = message.user_id if message.user_id == login else None
    if message.user_id and user_id is None:
        note(f"{message.message_id}: user_id {message.user_id} dropped (not the connection's)")
    copy = aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        type=message.type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        timestamp=message.timestamp,
        app_id=message.app_id,
        user_id=user_id,
        delivery_mode=PERSISTENT,
    )
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            result = await exchange.publish(copy, routing_key=key, mandatory=True)
    except TimeoutError:
        note(f"kept {message.message_id}: the broker did not confirm its copy in time")
        return False
    if not isinstance(result, aiormq.spec.Basic.Ack):
        note(f"kept {message.message_id}: {COMMANDS_EXCHANGE} did not route it (no partitions?)")
        return False
    return True


def describe(message: AbstractIncomingMessage) -> dict[str, Any]:
    """What an operator needs to decide: why, where from, and the command itself."""
    headers = message.headers or {}
    death = _first_death(headers)
    body = _body(message.body)
    command = body.get("command")
    return {
        "message_id": message.message_id,
        "type": message.type or (_text(command.get("type")) if isinstance(command, dict) else None),
        "reason": _text(headers.get("x-dead-letter-reason"))
        or _text(headers.get("x-first-death-reason"))
        or _text(death.get("reason")),
        "detail": _text(headers.get("x-dead-letter-detail")),
        "routing_key": routing_key(message),
        "original_queue": _text(headers.get("x-original-queue")) or _text(death.get("queue")),
        "dead_lettered_by": _text(headers.get("x-dead-lettered-by")),
        "timestamp": message.timestamp.isoformat() if message.timestamp else None,
        **body,
    }


def routing_key(message: AbstractIncomingMessage) -> str | None:
    """Where the command was first published: the header, else the broker's record, else
    the body's session_id (the routing key producers use)."""
    headers = message.headers or {}
    keys = _first_death(headers).get("routing-keys")
    candidates = [
        _text(headers.get("x-original-routing-key")),
        _text(keys[0]) if isinstance(keys, list) and keys else None,
        _body_session(message.body),
    ]
    return next((key for key in candidates if key), None)


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _body(body: bytes) -> dict[str, Any]:
    try:
        return {"command": json.loads(body)}
    except (ValueError, RecursionError):
        return {"body": body[:BODY_PREVIEW_CHARS].decode("utf-8", "replace"), "bytes": len(body)}


def _body_session(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return _text(data.get("session_id")) if isinstance(data, dict) else None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else None
